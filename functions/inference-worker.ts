/**
 * The inference worker: owns the onnxruntime-node sessions and runs them off the main event loop
 * (`session.run()` blocks its thread for hundreds of milliseconds on a large batch, which would
 * stall `/healthz` and every other request if it ran on the main thread).
 *
 * Protocol (see {@link WorkerRequest} / {@link WorkerReply}): `load` validates a model's DataRater
 * metadata and opens a session keyed by the model's sha256; `score` runs one encoded batch;
 * `unload` closes a session. Replies carry the request's `id`.
 */
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type * as OrtNode from "onnxruntime-node";
import {
  MASK_INPUT,
  type RaterMetadata,
  readRaterMetadata,
  SCORES_OUTPUT,
  TOKENS_INPUT,
} from "../training/export-onnx.ts";

/**
 * Which onnxruntime runs the model: `node` (native addon, fastest), `web` (WASM: where native
 * addons can't load, e.g. edge runtimes; about 5× slower), `auto` (node, else web).
 */
export type InferenceRuntime = "node" | "web" | "auto";

/** A message to the worker. */
export type WorkerRequest =
  | {
    id: number;
    type: "load";
    digest: string;
    bytes: Uint8Array;
    threads: number;
    runtime: InferenceRuntime;
  }
  | {
    id: number;
    type: "score";
    digest: string;
    tokens: Int32Array;
    mask: Float32Array;
    batch: number;
    seqLen: number;
  }
  | { id: number; type: "unload"; digest: string };

/** The worker's answer to one request. */
export type WorkerReply =
  | {
    id: number;
    ok: true;
    metadata?: RaterMetadata;
    /** The onnxruntime that loaded the model. */
    runtime?: "node" | "web";
    scores?: Float32Array;
    seconds?: number;
  }
  | { id: number; ok: false; error: { name: string; message: string } };

// Both runtimes share onnxruntime-common's API: the node typings describe either.
type Ort = typeof OrtNode;
let ortPromise: Promise<{ ort: Ort; name: "node" | "web" }> | null = null;

async function loadWeb(threads: number): Promise<Ort> {
  const web = await import("onnxruntime-web");
  // The wasm binaries come from node_modules, never from a CDN.
  const require = createRequire(import.meta.url);
  web.env.wasm.wasmPaths = dirname(require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm")) +
    "/";
  web.env.wasm.numThreads = threads;
  return web as unknown as Ort;
}

/** The runtime, chosen once per worker by the first load. */
function runtime(choice: InferenceRuntime, threads: number) {
  return ortPromise ??= (async () => {
    if (choice === "web") return { ort: await loadWeb(threads), name: "web" as const };
    try {
      return { ort: await import("onnxruntime-node") as unknown as Ort, name: "node" as const };
    } catch (e) {
      if (choice === "node") throw e;
      return { ort: await loadWeb(threads), name: "web" as const };
    }
  })();
}

const sessions = new Map<string, OrtNode.InferenceSession>();

async function handle(msg: WorkerRequest): Promise<WorkerReply> {
  switch (msg.type) {
    case "load": {
      // Validate before opening a session: a non-DataRater model gets a precise reason.
      const metadata = readRaterMetadata(msg.bytes);
      const { ort, name } = await runtime(msg.runtime, msg.threads);
      if (!sessions.has(msg.digest)) {
        let session: OrtNode.InferenceSession;
        try {
          session = await ort.InferenceSession.create(
            msg.bytes,
            name === "node"
              ? {
                intraOpNumThreads: msg.threads,
                interOpNumThreads: 1,
                executionMode: "sequential",
                graphOptimizationLevel: "all",
              }
              : { executionProviders: ["wasm"], graphOptimizationLevel: "all" },
          );
        } catch (e) {
          // The runtime is up (loaded above), so a graph it refuses is the model's fault: the
          // caller's 422, not a 500 worth retrying (functions/models.ts maps the name).
          const err = new Error(`its graph cannot be loaded: ${(e as Error).message}`);
          err.name = "NotADataRaterModelError";
          throw err;
        }
        sessions.set(msg.digest, session);
      }
      return { id: msg.id, ok: true, metadata, runtime: name };
    }
    case "score": {
      const session = sessions.get(msg.digest);
      if (!session) {
        return {
          id: msg.id,
          ok: false,
          error: { name: "ModelNotLoadedError", message: `model ${msg.digest} is not loaded` },
        };
      }
      const { ort } = await ortPromise!;
      const start = performance.now();
      const out = await session.run({
        [TOKENS_INPUT]: new ort.Tensor("int32", msg.tokens, [msg.batch, msg.seqLen]),
        [MASK_INPUT]: new ort.Tensor("float32", msg.mask, [msg.batch, msg.seqLen]),
      });
      const scores = new Float32Array(out[SCORES_OUTPUT].data as Float32Array);
      out[SCORES_OUTPUT].dispose();
      return { id: msg.id, ok: true, scores, seconds: (performance.now() - start) / 1000 };
    }
    case "unload": {
      await sessions.get(msg.digest)?.release();
      sessions.delete(msg.digest);
      return { id: msg.id, ok: true };
    }
  }
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: WorkerReply, transfer?: Transferable[]): void;
};

scope.onmessage = async (e) => {
  let reply: WorkerReply;
  try {
    reply = await handle(e.data);
  } catch (err) {
    const error = err as Error;
    reply = {
      id: e.data.id,
      ok: false,
      error: { name: error?.name ?? "Error", message: error?.message ?? String(err) },
    };
  }
  scope.postMessage(reply, reply.ok && reply.scores ? [reply.scores.buffer as ArrayBuffer] : []);
};
