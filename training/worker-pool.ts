/**
 * The population spread over Web Workers: learner i lives in worker i mod W. Each worker runs the
 * same code as {@link LocalPopulation} on its own tfjs backend, so results are identical to a
 * single-thread run; only the wall time changes.
 *
 * @example
 * ```ts
 * const pop = await WorkerPopulation.start(2, "wasm", settings);
 * await pop.load(learners);
 * ```
 */
import type { BackendName } from "./backend.ts";
import type { MetaBatches, MetaStepSettings } from "./meta-step.ts";
import type { ParamArrays } from "./params.ts";
import type { LearnerArrays, MemberStepResult, PopulationExecutor } from "./population.ts";

class WorkerClient {
  private next = 0;
  private pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  readonly worker: Worker;

  constructor() {
    this.worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.worker.onmessage = (e: MessageEvent<{ id: number; result?: unknown; error?: string }>) => {
      const p = this.pending.get(e.data.id);
      if (!p) return;
      this.pending.delete(e.data.id);
      if (e.data.error !== undefined) p.reject(new Error(`population worker: ${e.data.error}`));
      else p.resolve(e.data.result);
    };
    this.worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const err = new Error(`population worker crashed: ${e.message}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  call<T>(method: string, ...args: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, method, args });
    });
  }
}

/** Learners spread round-robin over `workers` Web Workers. */
export class WorkerPopulation implements PopulationExecutor {
  private total = 0;

  private constructor(private readonly clients: WorkerClient[]) {}

  /** Starts the workers and initialises their backends. */
  static async start(
    workers: number,
    backend: BackendName,
    settings: MetaStepSettings,
  ): Promise<WorkerPopulation> {
    const clients = Array.from({ length: workers }, () => new WorkerClient());
    const pop = new WorkerPopulation(clients);
    try {
      await Promise.all(clients.map((c) => c.call("init", backend, settings)));
    } catch (e) {
      await pop.close();
      throw e;
    }
    return pop;
  }

  get size(): number {
    return this.total;
  }

  /** Indices (global) of the learners worker w holds, in its local order. */
  private share<T>(items: T[], w: number): T[] {
    return items.filter((_, i) => i % this.clients.length === w);
  }

  /** Reassembles per-worker lists into global order. */
  private merge<T>(parts: T[][]): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.total; i++) {
      const w = i % this.clients.length;
      out.push(parts[w][Math.floor(i / this.clients.length)]);
    }
    return out;
  }

  async load(learners: LearnerArrays[]): Promise<void> {
    this.total = learners.length;
    await Promise.all(this.clients.map((c, w) => c.call("load", this.share(learners, w))));
  }

  async replace(i: number, learner: LearnerArrays): Promise<void> {
    const w = i % this.clients.length;
    await this.clients[w].call("replace", Math.floor(i / this.clients.length), learner);
  }

  async metaGradients(eta: ParamArrays, batches: MetaBatches[]): Promise<MemberStepResult[]> {
    const parts = await Promise.all(
      this.clients.map((c, w) =>
        c.call<MemberStepResult[]>("metaGradients", eta, this.share(batches, w))
      ),
    );
    return this.merge(parts);
  }

  async heldOutLosses(eta: ParamArrays, batches: MetaBatches[]): Promise<number[]> {
    const parts = await Promise.all(
      this.clients.map((c, w) => c.call<number[]>("heldOutLosses", eta, this.share(batches, w))),
    );
    return this.merge(parts);
  }

  async save(): Promise<LearnerArrays[]> {
    const parts = await Promise.all(this.clients.map((c) => c.call<LearnerArrays[]>("save")));
    return this.merge(parts);
  }

  async close(): Promise<void> {
    // A worker that died never answers: give each a moment to free its tensors, then stop it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise((resolve) => (timer = setTimeout(resolve, 5000)));
    await Promise.race([Promise.allSettled(this.clients.map((c) => c.call("close"))), timeout]);
    clearTimeout(timer);
    for (const c of this.clients) c.worker.terminate();
  }
}
