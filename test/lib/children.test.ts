import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { forEachLine, liveChildren, stopChildren, track } from "../../lib/children.ts";

const running = async (pid: number) => {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie has exited
  } catch {
    return false;
  }
};

/** A tracked bash child running `script`, its stdout piped to the test. */
const trackedBash = (script: string) =>
  track(new Deno.Command("bash", { args: ["-c", script], stdout: "piped" }).spawn());

describe("child processes", () => {
  it("stops tracked children with SIGTERM and forgets them once they exit", async () => {
    const child = track(new Deno.Command("sleep", { args: ["30"] }).spawn());
    expect(liveChildren()).toBe(1);
    await stopChildren();
    expect((await child.status).signal).toBe("SIGTERM");
    expect(liveChildren()).toBe(0);
  });

  it("kills a child that ignores SIGTERM once the grace period is over", async () => {
    const child = trackedBash('trap "" TERM; echo ready; while true; do sleep 0.05; done');
    const reader = child.stdout.getReader();
    await reader.read(); // the trap is installed
    reader.releaseLock();
    await stopChildren(300);
    expect((await child.status).signal).toBe("SIGKILL");
    await child.stdout.cancel();
    expect(liveChildren()).toBe(0);
  });

  it("a command killed with SIGTERM stops its children and exits 143", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const script = join(dir, "parent.ts");
      const lib = new URL("../../lib/children.ts", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { stopChildrenOnSignal, track } from "${lib}";
stopChildrenOnSignal();
const c = track(new Deno.Command("sleep", { args: ["60"] }).spawn());
console.log(c.pid);
setInterval(() => {}, 1000);
`,
      );
      const parent = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-config", script],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const { value } = await reader.read();
      const pid = Number(value!.trim());
      expect(await running(pid)).toBe(true);
      parent.kill("SIGTERM");
      const status = await parent.status;
      expect(status.code).toBe(143);
      reader.releaseLock();
      await parent.stdout.cancel().catch(() => {});
      const stderr = new TextDecoder().decode(
        (await new Response(parent.stderr).arrayBuffer()) as ArrayBuffer,
      );
      expect(stderr).toContain("SIGTERM: stopping 1 child process(es)");
      for (let i = 0; i < 50 && await running(pid); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await running(pid)).toBe(false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

/** A stream that hands out `chunks` one per read, yielding to the event loop before each. */
function chunked(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let i = 0;
  return new ReadableStream({
    async pull(c) {
      await new Promise((r) => setTimeout(r, 0));
      if (i === chunks.length) return c.close();
      const ch = chunks[i++];
      c.enqueue(typeof ch === "string" ? enc.encode(ch) : ch);
    },
  });
}

const linesOf = async (stream: ReadableStream<Uint8Array>) => {
  const out: string[] = [];
  await forEachLine(stream, (l) => out.push(l));
  return out;
};

describe("forEachLine", () => {
  it("joins a line split over chunks and splits a chunk holding several lines", async () => {
    expect(
      await linesOf(chunked(["alpha\nbr", "avo\n", "", "charlie", " delta\necho\nfox", "trot\n"])),
    )
      .toEqual(["alpha", "bravo", "charlie delta", "echo", "foxtrot"]);
  });

  it("passes a last line that has no newline, and nothing for a trailing newline", async () => {
    expect(await linesOf(chunked(["one\ntwo"]))).toEqual(["one", "two"]);
    expect(await linesOf(chunked(["one\n"]))).toEqual(["one"]);
    expect(await linesOf(chunked([]))).toEqual([]);
  });

  it("keeps empty lines and carriage returns (callers decide what to show)", async () => {
    expect(await linesOf(chunked(["a\n\nb\r\n", "\r50%\r100%\n"])))
      .toEqual(["a", "", "b\r", "\r50%\r100%"]);
  });

  it("decodes a UTF-8 character split between chunks", async () => {
    const bytes = new TextEncoder().encode("héllo ☃\nñ");
    // Every byte its own chunk: é, ☃ and ñ each arrive in pieces.
    const oneByOne = Array.from(bytes, (b) => Uint8Array.of(b));
    expect(await linesOf(chunked(oneByOne))).toEqual(["héllo ☃", "ñ"]);
  });

  it("two streams read at once do not mix their partial lines or characters", async () => {
    const enc = new TextEncoder();
    const a = enc.encode("ä-one\nä-two\n");
    const b = enc.encode("☃-one\n☃-two\n");
    const split = (bytes: Uint8Array) => Array.from(bytes, (x) => Uint8Array.of(x));
    const seen: string[] = [];
    await Promise.all([
      forEachLine(chunked(split(a)), (l) => seen.push(`a:${l}`)),
      forEachLine(chunked(split(b)), (l) => seen.push(`b:${l}`)),
    ]);
    expect(seen.filter((l) => l.startsWith("a:"))).toEqual(["a:ä-one", "a:ä-two"]);
    expect(seen.filter((l) => l.startsWith("b:"))).toEqual(["b:☃-one", "b:☃-two"]);
  });

  it("reads a child's output line by line however the child flushes it", async () => {
    const child = trackedBash(
      "printf 'one\\ntw'; sleep 0.1; printf 'o\\nthr'; sleep 0.1; printf 'ee'",
    );
    const [lines, status] = await Promise.all([linesOf(child.stdout), child.status]);
    expect(status.success).toBe(true);
    expect(lines).toEqual(["one", "two", "three"]);
  });
});
