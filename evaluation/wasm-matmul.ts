/**
 * A faster `BatchMatMul` for tfjs-wasm when an operand is transposed.
 *
 * Measured here (tfjs-backend-wasm 4.22, SIMD, one thread, [4096,64]·[64,256]): the plain kernel
 * runs at ≈ 10–20 GFLOP/s, but with `transposeA` or `transposeB` set it falls to 0.6–2 GFLOP/s.
 * Backpropagation through `matMul` always asks for a transposed operand (dA = dY·Bᵀ, dB = Aᵀ·dY),
 * so an LM's backward pass spent ~80% of a training step in those slow calls. Transposing the
 * operand explicitly (a cheap copy) and calling the plain kernel gives the same result 5–10× faster.
 * The wrapper is installed over the registered kernel, so every matMul (forward, gradients, second
 * order) benefits without changing model code.
 *
 * @example
 * ```ts
 * await tf.setBackend("wasm");
 * installFastTransposedMatMul();
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import { wrapWasmKernel } from "../training/wasm-kernels.ts";

let installed = false;

/** Wraps the wasm backend's BatchMatMul (idempotent). Call after the wasm backend is ready. */
export function installFastTransposedMatMul(): void {
  if (installed) return;
  const transpose = tf.getKernel("Transpose", "wasm");
  if (!transpose || !tf.getKernel("BatchMatMul", "wasm")) {
    throw new Error(
      "tfjs-wasm kernels are not registered: import @tensorflow/tfjs-backend-wasm first",
    );
  }
  const lastTwoSwapped = (rank: number) => [...Array(rank - 2).keys(), rank - 1, rank - 2];
  wrapWasmKernel("BatchMatMul", (original) => ({ inputs, backend, attrs }) => {
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return original.kernelFunc({ inputs, backend, attrs });
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const temps: tf.TensorInfo[] = [];
    const flip = (x: tf.TensorInfo) => {
      const t = transpose.kernelFunc({
        inputs: { x },
        backend,
        attrs: { perm: lastTwoSwapped(x.shape.length) },
      }) as tf.TensorInfo;
      temps.push(t);
      return t;
    };
    const out = original.kernelFunc({
      inputs: { a: transposeA ? flip(a) : a, b: transposeB ? flip(b) : b },
      backend,
      attrs: { ...attrs, transposeA: false, transposeB: false },
    });
    for (const t of temps) (backend as tf.KernelBackend).disposeData(t.dataId);
    return out;
  });
  installed = true;
}
