/**
 * Child processes that must not outlive the command that started them. The demo runs the trainer,
 * the scoring function, downstream runs and an S3 server as processes of their own; a terminal's
 * Ctrl-C reaches all of them, but a `kill` of the parent alone (a job runner, a CI timeout) would
 * leave them running and writing. Register each child with {@link track}; a command that calls
 * {@link stopChildrenOnSignal} stops every live child on SIGINT or SIGTERM (SIGTERM first, SIGKILL
 * after a grace period) and then exits with 130 or 143. Each stage writes whole objects only, so
 * a rerun reuses what finished.
 *
 * @example
 * ```ts
 * stopChildrenOnSignal();
 * const child = track(new Deno.Command("deno", { args: ["run", "x.ts"] }).spawn());
 * ```
 */

const live = new Set<Deno.ChildProcess>();

/** Registers a child until it exits; returns it. */
export function track(child: Deno.ChildProcess): Deno.ChildProcess {
  live.add(child);
  child.status.then(() => live.delete(child), () => live.delete(child));
  return child;
}

/** Children started through {@link track} that have not exited yet. */
export function liveChildren(): number {
  return live.size;
}

/** Stops every live child: SIGTERM, then SIGKILL for those still running after `graceMs`. */
export async function stopChildren(graceMs = 5_000): Promise<void> {
  const children = [...live];
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* already gone */ }
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), graceMs)));
  const done = await Promise.race([Promise.all(children.map((c) => c.status)), grace]);
  clearTimeout(timer);
  if (done === "timeout") {
    for (const c of live) {
      try {
        c.kill("SIGKILL");
      } catch { /* already gone */ }
    }
    await Promise.all([...live].map((c) => c.status));
  }
}

let installed = false;

/** On SIGINT or SIGTERM: stop every tracked child, then exit (130 or 143). Installs once. */
export function stopChildrenOnSignal(
  onStop: (signal: "SIGINT" | "SIGTERM") => void = (s) => Deno.exit(s === "SIGINT" ? 130 : 143),
): void {
  if (installed) return;
  installed = true;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      console.error(`${signal}: stopping ${live.size} child process(es); a rerun resumes`);
      stopChildren().finally(() => onStop(signal));
    });
  }
}

/**
 * Calls `onLine` with each line of a child's output stream as it arrives, without the `\n` (a last
 * line with no `\n` is passed too). Output arrives in chunks that can end anywhere, in the middle
 * of a line or of a UTF-8 character, so text is buffered up to the next `\n` and decoded with a
 * decoder of this stream's own (one shared with another stream would mix their partial bytes).
 * Resolves when the stream ends.
 *
 * @example
 * ```ts
 * const child = track(new Deno.Command("deno", { args: ["run", "x.ts"], stdout: "piped" }).spawn());
 * await forEachLine(child.stdout, (line) => console.log(`  ${line}`));
 * ```
 */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let start = 0;
    let end;
    while ((end = buf.indexOf("\n", start)) >= 0) {
      onLine(buf.slice(start, end));
      start = end + 1;
    }
    buf = buf.slice(start);
  }
  buf += decoder.decode();
  if (buf) onLine(buf);
}
