/**
 * A pool of inference workers (Web Workers running onnxruntime-node), so scoring never blocks the
 * main event loop. Each worker holds one session per model digest; a batch goes to the worker
 * with the fewest batches in flight. A worker that dies is replaced and its models are re-loaded
 * on next use; the batches it was running fail with {@link InferenceError}.
 *
 * @example
 * ```ts
 * const pool = new InferencePool({ workers: 1, threadsPerWorker: 1 });
 * const meta = await pool.load(sha256, modelBytes);
 * const scores = await pool.score(sha256, encodeBatch(texts, meta.seqLen));
 * await pool.close();
 * ```
 */
import type { ByteBatch } from "../lib/bytes.ts";
import type { RaterMetadata } from "../training/export-onnx.ts";
import type { InferenceRuntime, WorkerReply, WorkerRequest } from "./inference-worker.ts";

export type { InferenceRuntime };

/** Inference failed (the worker crashed, or onnxruntime rejected the batch). */
export class InferenceError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InferenceError";
  }
}

/** The model is not a DataRater export (raised by {@link InferencePool.load}). */
export class NotADataRaterModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotADataRaterModelError";
  }
}

/** Options for {@link InferencePool}. */
export interface InferencePoolOptions {
  /** Web Workers, each running batches one at a time (default 1). */
  workers?: number;
  /** onnxruntime intra-op threads per worker (default 1: one core per worker). */
  threadsPerWorker?: number;
  /** onnxruntime-node (`node`), onnxruntime-web WASM (`web`), or node falling back to web (`auto`, default). */
  runtime?: InferenceRuntime;
  /** Called with each batch's onnxruntime run time, in seconds (for metrics). */
  onBatch?: (seconds: number) => void;
}

interface Pending {
  resolve: (reply: WorkerReply & { ok: true }) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  loaded: Map<string, Promise<RaterMetadata>>;
  inFlight: number;
}

const WORKER_URL = new URL("./inference-worker.ts", import.meta.url);

/** See the module documentation. */
export class InferencePool {
  readonly workers: number;
  readonly threadsPerWorker: number;
  readonly runtime: InferenceRuntime;
  /** The runtime the workers actually use (known after the first load). */
  activeRuntime: "node" | "web" | null = null;
  #slots: Slot[] = [];
  #models = new Map<string, Uint8Array>();
  #nextId = 1;
  #closed = false;
  #onBatch?: (seconds: number) => void;

  constructor(options: InferencePoolOptions = {}) {
    this.#onBatch = options.onBatch;
    this.workers = Math.max(1, options.workers ?? 1);
    this.threadsPerWorker = Math.max(1, options.threadsPerWorker ?? 1);
    this.runtime = options.runtime ?? "auto";
    for (let i = 0; i < this.workers; i++) this.#slots.push(this.#spawn());
  }

  #spawn(): Slot {
    const worker = new Worker(WORKER_URL.href, { type: "module" });
    const slot: Slot = { worker, pending: new Map(), loaded: new Map(), inFlight: 0 };
    worker.onmessage = (e: MessageEvent<WorkerReply>) => {
      const reply = e.data;
      const p = slot.pending.get(reply.id);
      if (!p) return;
      slot.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply);
      else if (reply.error.name === "NotADataRaterModelError") {
        p.reject(new NotADataRaterModelError(reply.error.message));
      } else {
        p.reject(new InferenceError(`${reply.error.name}: ${reply.error.message}`));
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#replace(slot, new InferenceError(`inference worker crashed: ${e.message}`));
    };
    return slot;
  }

  #replace(slot: Slot, error: Error): void {
    slot.worker.terminate();
    for (const p of slot.pending.values()) p.reject(error);
    slot.pending.clear();
    const i = this.#slots.indexOf(slot);
    if (i >= 0 && !this.#closed) this.#slots[i] = this.#spawn();
  }

  #call(
    slot: Slot,
    msg: WorkerRequest,
    transfer: Transferable[] = [],
  ): Promise<WorkerReply & { ok: true }> {
    if (this.#closed) return Promise.reject(new InferenceError("the inference pool is closed"));
    return new Promise((resolve, reject) => {
      slot.pending.set(msg.id, { resolve, reject });
      slot.worker.postMessage(msg, transfer);
    });
  }

  #ensureLoaded(slot: Slot, digest: string): Promise<RaterMetadata> {
    let loaded = slot.loaded.get(digest);
    if (!loaded) {
      const bytes = this.#models.get(digest);
      if (!bytes) throw new InferenceError(`model ${digest} was never loaded`);
      loaded = this.#call(slot, {
        id: this.#nextId++,
        type: "load",
        digest,
        bytes,
        threads: this.threadsPerWorker,
        runtime: this.runtime,
      }).then((r) => {
        this.activeRuntime = r.runtime ?? null;
        return r.metadata!;
      });
      loaded.catch(() => slot.loaded.delete(digest));
      slot.loaded.set(digest, loaded);
    }
    return loaded;
  }

  /**
   * Validates a model (DataRater metadata and I/O contract) and opens its session on every
   * worker. Throws {@link NotADataRaterModelError} for any other model.
   */
  async load(digest: string, bytes: Uint8Array): Promise<RaterMetadata> {
    this.#models.set(digest, bytes);
    try {
      const metas = await Promise.all(this.#slots.map((s) => this.#ensureLoaded(s, digest)));
      return metas[0];
    } catch (e) {
      this.#models.delete(digest);
      throw e;
    }
  }

  /** Whether a model is loaded on every worker. */
  isLoaded(digest: string): boolean {
    return this.#models.has(digest) && this.#slots.every((s) => s.loaded.has(digest));
  }

  /** Scores one encoded batch; the batch's buffers are transferred to the worker (not reusable). */
  async score(digest: string, batch: ByteBatch): Promise<Float32Array> {
    let slot = this.#slots[0];
    for (const s of this.#slots) if (s.inFlight < slot.inFlight) slot = s;
    slot.inFlight++;
    try {
      await this.#ensureLoaded(slot, digest);
      const reply = await this.#call(slot, {
        id: this.#nextId++,
        type: "score",
        digest,
        tokens: batch.tokens,
        mask: batch.mask,
        batch: batch.batch,
        seqLen: batch.seqLen,
      }, [batch.tokens.buffer as ArrayBuffer, batch.mask.buffer as ArrayBuffer]);
      const scores = reply.scores!;
      if (reply.seconds !== undefined) this.#onBatch?.(reply.seconds);
      if (scores.length !== batch.batch) {
        throw new InferenceError(
          `model returned ${scores.length} scores for a batch of ${batch.batch}`,
        );
      }
      return scores;
    } finally {
      slot.inFlight--;
    }
  }

  /** Closes a model's sessions and forgets its bytes. */
  async unload(digest: string): Promise<void> {
    this.#models.delete(digest);
    await Promise.all(this.#slots.map(async (s) => {
      if (!s.loaded.delete(digest)) return;
      await this.#call(s, { id: this.#nextId++, type: "unload", digest }).catch(() => {});
    }));
  }

  /** Stops the workers; batches in flight fail. */
  close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#slots) {
      s.worker.terminate();
      for (const p of s.pending.values()) p.reject(new InferenceError("the inference pool closed"));
      s.pending.clear();
    }
    return Promise.resolve();
  }
}
