/**
 * Selects the TensorFlow.js backend the trainer runs on: `wasm` (default, CPU), `webgpu` (GPU
 * nodes; Deno's WebGPU also runs on a software adapter, so the path is testable without a GPU) or
 * `cpu` (pure JS, for debugging).
 *
 * @example
 * ```ts
 * await useBackend("wasm");
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { resetLmCaches } from "./lm.ts";
import { installFastWasmBatchMatMul, installGradients } from "./nn.ts";
import { wrapWasmKernel } from "./wasm-kernels.ts";

export type BackendName = "wasm" | "webgpu" | "cpu";

/** The backend could not be initialised (missing WebGPU adapter, unreadable wasm binaries). */
export class BackendError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BackendError";
  }
}

let wasmRegistered = false;
let webgpuRegistered = false;

/** Registers (once) and activates a backend; idempotent. Throws {@link BackendError} on failure. */
export async function useBackend(name: BackendName): Promise<void> {
  installGradients();
  if (tf.getBackend() === name) return;
  if (name === "wasm" && !wasmRegistered) {
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    // In Deno the wasm binaries are loaded from node_modules, not fetched from a CDN.
    const require = createRequire(import.meta.url);
    const dir = dirname(
      require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"),
    );
    wasm.setWasmPaths(dir + "/");
    wasmRegistered = true;
  }
  if (name === "webgpu" && !webgpuRegistered) {
    const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
    if (!nav?.gpu) {
      throw new BackendError(
        "backend webgpu: this runtime has no navigator.gpu (run Deno with WebGPU enabled, or use backend: wasm)",
      );
    }
    await import("@tensorflow/tfjs-backend-webgpu");
    webgpuRegistered = true;
  }
  let ok = false;
  try {
    ok = await tf.setBackend(name);
    await tf.ready();
  } catch (e) {
    throw new BackendError(
      `backend ${name} failed to initialise: ${(e as Error).message}`,
    );
  }
  if (!ok || tf.getBackend() !== name) {
    throw new BackendError(
      `backend ${name} failed to initialise (tf.setBackend returned false); try backend: wasm`,
    );
  }
  if (name === "wasm") {
    shareIdentityOnWasm();
    installFastWasmBatchMatMul();
  }
  // Cached constants (masks) belong to the previous backend.
  resetLmCaches();
  installGradients();
}

let identityShared = false;

/**
 * tfjs-wasm's Identity kernel copies its input, and the engine runs it for every tensor it saves
 * for a gradient (about a thousand per meta-step, half of them activation-sized). Tensors are
 * immutable, so sharing the buffer with a reference count — what the Reshape kernel and the CPU
 * backend's Identity already do — is equivalent, and saves the copies' time and memory.
 */
function shareIdentityOnWasm(): void {
  if (identityShared) return;
  identityShared = wrapWasmKernel(tf.Identity, (original) => (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === "string") return original.kernelFunc(args);
    (args.backend as unknown as { incRef(id: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
}
