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
import { installGradients } from "./autodiff.ts";
import { installWasmKernels } from "./kernels.ts";

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
  if (tf.getBackend() === name) {
    if (name === "wasm") installWasmKernels();
    return;
  }
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
  // The one place the wasm kernels are replaced (see training/kernels.ts); idempotent.
  if (name === "wasm") installWasmKernels();
  // Cached constants (masks) belong to the previous backend.
  resetLmCaches();
  installGradients();
}
