/**
 * Replacing one of tfjs-wasm's registered kernels with a wrapper around it: the wrapper gets the
 * stock kernel to fall back on, and the stock set-up and disposal are kept. Used for the
 * kernels this project speeds up (Identity, BatchMatMul); each caller keeps its own idempotence.
 *
 * @example
 * ```ts
 * wrapWasmKernel(tf.Identity, (stock) => (args) => stock.kernelFunc(args));
 * ```
 */
import * as tf from "@tensorflow/tfjs";

/** Wraps the wasm kernel `name`; false (nothing changed) when no such kernel is registered. */
export function wrapWasmKernel(
  name: string,
  wrap: (stock: tf.KernelConfig) => tf.KernelFunc,
): boolean {
  const stock = tf.getKernel(name, "wasm");
  if (!stock) return false;
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({
    kernelName: name,
    backendName: "wasm",
    setupFunc: stock.setupFunc,
    disposeFunc: stock.disposeFunc,
    kernelFunc: wrap(stock),
  });
  return true;
}
