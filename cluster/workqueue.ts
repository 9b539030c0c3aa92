/**
 * A rate-limited work queue keyed by `namespace/name`, with client-go's semantics: a key is queued at
 * most once however many events arrive; a key being processed is never handed to a second worker,
 * and if it changes meanwhile it is queued again when the first worker is done; failures back off
 * per key exponentially, and all retries together are held to a token bucket.
 *
 * @example
 * ```ts
 * const queue = new WorkQueue();
 * queue.add("default/run-a");
 * const key = await queue.get();
 * try { await work(key); queue.forget(key); } catch { queue.addRateLimited(key); } finally { queue.done(key); }
 * ```
 */

export interface WorkQueueOptions {
  /** First retry delay of a failing key; doubles per failure. Default 5 ms. */
  baseDelayMs?: number;
  /** Cap of the per-key delay. Default 300 s. */
  maxDelayMs?: number;
  /** Retries admitted per second across all keys (token bucket). Default 10. */
  qps?: number;
  /** Token bucket size. Default 100. */
  burst?: number;
}

/** See the module documentation. */
export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<
    string,
    { at: number; timer: ReturnType<typeof setTimeout> }
  >();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private tokens: number;
  private lastRefill = performance.now();
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly qps: number;
  private readonly burst: number;

  constructor(options: WorkQueueOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 5;
    this.maxDelayMs = options.maxDelayMs ?? 300_000;
    this.qps = options.qps ?? 10;
    this.burst = options.burst ?? 100;
    this.tokens = this.burst;
  }

  /** Keys waiting to be processed. */
  get length(): number {
    return this.queue.length;
  }

  /** Queues a key now (a no-op if it is already queued). */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // re-queued by done()
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
    } else {
      this.queue.push(key);
    }
  }

  /** Queues a key after a delay; an earlier pending delay for the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) return this.add(key);
    const at = performance.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { at, timer });
  }

  /** Queues a failed key after its backoff (per-key exponential, and the overall token bucket). */
  addRateLimited(key: string): void {
    this.addAfter(key, this.when(key));
  }

  /** The delay {@link addRateLimited} would use now; counts one failure of the key. */
  when(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    const perKey = Math.min(this.baseDelayMs * 2 ** failures, this.maxDelayMs);
    return Math.max(perKey, this.bucketDelay());
  }

  /** Failures counted for a key since it last succeeded. */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** The key succeeded: reset its backoff. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Waits for the next key; undefined once the queue shuts down. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** A worker finished with a key; if it changed meanwhile it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  /** Stops handing out keys; waiting getters receive undefined. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }

  private bucketDelay(): number {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.lastRefill) / 1000) * this.qps);
    this.lastRefill = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.qps) * 1000;
  }
}
