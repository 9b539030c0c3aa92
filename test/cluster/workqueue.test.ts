/**
 * The operator's work queue (`cluster/workqueue.ts`): client-go's semantics, pinned one promise at
 * a time. Time is faked (timers and `performance.now`), so delays are exact, not raced.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WorkQueue } from "../../cluster/workqueue.ts";

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
});

afterEach(() => {
  vi.useRealTimers();
});

/** Resolves with what a getter received, or "pending" if it has not received anything yet. */
async function settled<T>(p: Promise<T>): Promise<T | "pending"> {
  return await Promise.race([p, Promise.resolve().then(() => "pending" as const)]);
}

describe("WorkQueue: deduplication", () => {
  it("queues a key at most once however many times it is added while queued", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    q.add("ns/b");
    q.add("ns/a");
    q.add("ns/a");
    expect(q.length).toBe(2);
    expect(await q.get()).toBe("ns/a");
    expect(await q.get()).toBe("ns/b");
    expect(q.length).toBe(0);
    expect(await settled(q.get())).toBe("pending");
  });

  it("hands waiting getters keys in arrival order, each key to one getter", async () => {
    const q = new WorkQueue();
    const first = q.get();
    const second = q.get();
    q.add("ns/a");
    q.add("ns/a"); // being processed by the first getter: not handed to the second
    q.add("ns/b");
    expect(await first).toBe("ns/a");
    expect(await second).toBe("ns/b");
    expect(q.length).toBe(0);
  });
});

describe("WorkQueue: a key that changes while it is processed", () => {
  it("is not handed to a second worker, and is processed once more after done", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    expect(await q.get()).toBe("ns/a");
    q.add("ns/a");
    q.add("ns/a");
    expect(q.length).toBe(0);
    const other = q.get();
    expect(await settled(other)).toBe("pending");
    q.done("ns/a");
    expect(await other).toBe("ns/a"); // once, though it was added twice meanwhile
    q.done("ns/a");
    expect(q.length).toBe(0);
    expect(await settled(q.get())).toBe("pending");
  });

  it("re-added while processed, it goes behind the keys already waiting", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    q.add("ns/b");
    expect(await q.get()).toBe("ns/a");
    q.add("ns/a");
    q.done("ns/a");
    expect(q.length).toBe(2);
    expect(await q.get()).toBe("ns/b");
    expect(await q.get()).toBe("ns/a");
    q.done("ns/b");
    q.done("ns/a");
    expect(q.length).toBe(0);
  });
});

describe("WorkQueue: rate-limited requeues", () => {
  it("backs off per key exponentially from baseDelayMs, capped at maxDelayMs, until forget", () => {
    const q = new WorkQueue({ baseDelayMs: 5, maxDelayMs: 40, burst: 1000 });
    expect([1, 2, 3, 4, 5, 6].map(() => q.when("ns/a"))).toEqual([5, 10, 20, 40, 40, 40]);
    expect(q.numRequeues("ns/a")).toBe(6);
    expect(q.when("ns/b")).toBe(5); // keys back off independently
    q.forget("ns/a");
    expect(q.numRequeues("ns/a")).toBe(0);
    expect(q.when("ns/a")).toBe(5);
  });

  it("holds all retries together to the token bucket: burst at once, then qps per second", () => {
    const q = new WorkQueue({ baseDelayMs: 1, qps: 10, burst: 2 });
    // Two tokens: no extra delay. Then each retry waits 1/qps longer than the one before.
    expect(["a", "b", "c", "d"].map((k) => q.when(`ns/${k}`))).toEqual([1, 1, 100, 200]);
    // 300 ms refill 3 tokens: the bucket is back to +1, so the next retry is not held.
    vi.advanceTimersByTime(300);
    expect(q.when("ns/e")).toBe(1);
    expect(q.when("ns/f")).toBe(100);
  });

  it("never refills the bucket beyond burst", () => {
    const q = new WorkQueue({ baseDelayMs: 1, qps: 10, burst: 2 });
    vi.advanceTimersByTime(60_000);
    expect(["a", "b", "c"].map((k) => q.when(`ns/${k}`))).toEqual([1, 1, 100]);
  });

  it("addRateLimited queues the key after its backoff, not before", async () => {
    const q = new WorkQueue({ baseDelayMs: 10 });
    q.addRateLimited("ns/a");
    vi.advanceTimersByTime(9);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe("ns/a");
    q.done("ns/a");
    q.addRateLimited("ns/a"); // second failure: 20 ms
    vi.advanceTimersByTime(19);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
  });
});

describe("WorkQueue: delayed adds", () => {
  it("addAfter queues the key once the delay has passed; a delay of 0 queues it now", () => {
    const q = new WorkQueue();
    q.addAfter("ns/a", 50);
    q.addAfter("ns/b", 0);
    expect(q.length).toBe(1);
    vi.advanceTimersByTime(49);
    expect(q.length).toBe(1);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(2);
  });

  it("an earlier pending delay for the same key wins over a later one", () => {
    const q = new WorkQueue();
    q.addAfter("ns/a", 100);
    q.addAfter("ns/a", 200); // later: ignored
    q.addAfter("ns/b", 100);
    q.addAfter("ns/b", 30); // earlier: replaces the 100 ms one
    vi.advanceTimersByTime(30);
    expect(q.length).toBe(1);
    vi.advanceTimersByTime(70);
    expect(q.length).toBe(2);
    vi.advanceTimersByTime(1_000);
    expect(q.length).toBe(2); // each key was queued once
  });
});

describe("WorkQueue: shutdown", () => {
  it("waiting getters receive undefined, queued keys drain, then every get receives undefined", async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.shutDown();
    expect(await waiting).toBeUndefined();

    const q2 = new WorkQueue();
    q2.add("ns/a");
    q2.shutDown();
    expect(await q2.get()).toBe("ns/a");
    expect(await q2.get()).toBeUndefined();
    expect(await q2.get()).toBeUndefined();
  });

  it("ignores adds, cancels delayed adds, and does not requeue a key changed while processed", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    expect(await q.get()).toBe("ns/a");
    q.add("ns/a"); // changed while processed
    q.addAfter("ns/b", 10);
    q.shutDown();
    q.add("ns/c");
    q.addRateLimited("ns/d");
    q.done("ns/a");
    vi.advanceTimersByTime(1_000);
    expect(q.length).toBe(0);
    expect(await q.get()).toBeUndefined();
  });
});
