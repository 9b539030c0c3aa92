/**
 * A sleep that `stop()` can cut short: the informer's backoff and the leader elector's renew
 * interval both wait this way, so stopping the operator never waits out a timer.
 *
 * @example
 * ```ts
 * const sleeper = new WakeableSleep();
 * await sleeper.sleep(5_000); // returns early if sleeper.wake() is called
 * ```
 */
export class WakeableSleep {
  #wake: (() => void) | undefined;

  /** Resolves after `ms`, or as soon as {@link wake} is called. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  /** Ends the current sleep now (no-op when not sleeping). */
  wake(): void {
    this.#wake?.();
  }
}
