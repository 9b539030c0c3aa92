/**
 * Liveness probes on a fixed schedule while some work runs, as a kubelet sends them: each is timed
 * from when it was due, not from when it went out, because a blocked event loop delays the
 * probe's own timer as much as the answer, and a kubelet does not wait for either. Used by
 * `scripts/bench/score-endpoint.ts` and `test/functions/healthz-large-lines.test.ts`.
 *
 * @example
 * ```ts
 * const { result, latencies } = await probeWhile(scoreShard(), 50, async () => {
 *   await (await fetch(`${base}/healthz`)).body?.cancel();
 * });
 * ```
 */

/** Runs `probe` every `everyMs` until `work` settles; its result and each probe's latency in ms. */
export async function probeWhile<T>(
  work: Promise<T>,
  everyMs: number,
  probe: () => Promise<void>,
): Promise<{ result: T; latencies: number[]; start: number }> {
  let working = true;
  const settled = work.finally(() => working = false);
  // A rejection is the caller's to see, from `settled` below, not an unhandled one meanwhile.
  settled.catch(() => {});
  const latencies: number[] = [];
  const probes: Promise<void>[] = [];
  const start = performance.now();
  for (let k = 1; working; k++) {
    const due = start + everyMs * k;
    await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
    probes.push(
      probe().then(() => {
        latencies.push(performance.now() - due);
      }),
    );
  }
  await Promise.all(probes);
  const result = await settled;
  return { result, latencies, start };
}
