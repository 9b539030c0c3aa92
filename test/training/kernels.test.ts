/**
 * training/kernels.ts replaces tfjs-wasm's BatchMatMul and Identity once, whoever installs it and
 * however often: outputs never depend on install order or count, and the fast paths (explicit
 * transposes, one 2-D product per batch entry) are the ones taken.
 */
import * as tf from "@tensorflow/tfjs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { useBackend } from "../../training/backend.ts";
import { installWasmKernels, wasmKernelsInstalled } from "../../training/kernels.ts";
import { Rng } from "../../training/rng.ts";
import { expectClose } from "../support/expect-close.ts";

interface Case {
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
}

const cases: Record<string, Case> = {
  "batched": { a: [8, 32, 16], b: [8, 16, 32] },
  "batched, b transposed, fewer output rows than columns": {
    a: [8, 16, 32],
    b: [8, 64, 32],
    transposeB: true,
  },
  "batched, a transposed": { a: [8, 16, 32], b: [8, 16, 24], transposeA: true },
  "2-D, a transposed and larger": { a: [64, 48], b: [64, 8], transposeA: true },
  "2-D, b transposed and smaller": { a: [40, 24], b: [16, 24], transposeB: true },
  "2-D, both transposed": { a: [24, 40], b: [16, 24], transposeA: true, transposeB: true },
};

function values(shape: number[], seed: number): Float32Array {
  return new Rng(seed).normals(shape.reduce((x, y) => x * y, 1), 1);
}

/** Every case's product and its gradient with respect to both operands. */
function outputs(): Record<string, Float32Array[]> {
  const out: Record<string, Float32Array[]> = {};
  for (const [name, c] of Object.entries(cases)) {
    out[name] = tf.tidy(() => {
      const a = tf.tensor(values(c.a, 1), c.a);
      const b = tf.tensor(values(c.b, 2), c.b);
      const f = (x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.square(tf.matMul(x, y, c.transposeA, c.transposeB)));
      const [da, db] = tf.grads(f)([a, b]);
      const y = tf.matMul(a, b, c.transposeA, c.transposeB);
      return [y, da, db].map((t) => t.dataSync() as Float32Array);
    });
  }
  return out;
}

interface Call {
  batchA: number;
  transposed: boolean;
}

/** Records the wasm module's 2-D/batched product calls made while running `f`. */
function productCalls(f: () => void): Call[] {
  const wasm = (tf.backend() as unknown as {
    wasm: { _BatchMatMul: (...args: number[]) => void; HEAP32: Int32Array };
  }).wasm;
  let original = wasm._BatchMatMul;
  const calls: Call[] = [];
  const spy = (...args: number[]) => {
    calls.push({ batchA: wasm.HEAP32[args[1] >>> 2], transposed: Boolean(args[6] || args[7]) });
    original(...args);
    // Emscripten's first call through a lazy export replaces the export with the bound function.
    if (wasm._BatchMatMul !== spy) {
      original = wasm._BatchMatMul;
      wasm._BatchMatMul = spy;
    }
  };
  wasm._BatchMatMul = spy;
  try {
    f();
  } finally {
    wasm._BatchMatMul = original;
  }
  return calls;
}

describe("tfjs-wasm kernel replacements", () => {
  let stock: Record<string, Float32Array[]> = {};
  let stockCalls: Call[] = [];

  beforeAll(async () => {
    // The wasm backend with its stock kernels, registered the way training/backend.ts does.
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    const require = createRequire(import.meta.url);
    wasm.setWasmPaths(
      dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm")) + "/",
    );
    expect(await tf.setBackend("wasm")).toBe(true);
    expect(wasmKernelsInstalled()).toBe(false);
    stockCalls = productCalls(() => (stock = outputs()));
  });

  it("match the stock kernels, and installing again, by any entry point, changes nothing", async () => {
    installWasmKernels();
    expect(wasmKernelsInstalled()).toBe(true);
    const kernel = tf.getKernel(tf.BatchMatMul, "wasm")!.kernelFunc;
    const identity = tf.getKernel(tf.Identity, "wasm")!.kernelFunc;
    const once = outputs();
    for (const name of Object.keys(cases)) {
      once[name].forEach((v, i) => expectClose(v, stock[name][i], 1e-5));
    }

    installWasmKernels();
    await useBackend("wasm");
    // A second copy of the module (as a fresh import in another test file would load) as well.
    vi.resetModules();
    const fresh = await import("../../training/kernels.ts?copy");
    fresh.installWasmKernels();
    expect(tf.getKernel(tf.BatchMatMul, "wasm")!.kernelFunc).toBe(kernel);
    expect(tf.getKernel(tf.Identity, "wasm")!.kernelFunc).toBe(identity);
    expect(outputs()).toEqual(once);
  });

  it("never asks XNNPACK for a transposed product and slices batched ones per entry", () => {
    installWasmKernels();
    // The stock kernels did ask for transposed products: the check below is not vacuous.
    expect(stockCalls.some((c) => c.transposed)).toBe(true);
    for (const [name, c] of Object.entries(cases)) {
      const calls = productCalls(() => {
        tf.tidy(() => {
          tf.matMul(
            tf.tensor(values(c.a, 1), c.a),
            tf.tensor(values(c.b, 2), c.b),
            c.transposeA,
            c.transposeB,
          )
            .dataSync();
        });
      });
      expect(calls.every((call) => !call.transposed), name).toBe(true);
      // One 2-D product per batch entry (batch 1 each) for batched cases; one for 2-D ones.
      const batch = c.a.length === 3 ? c.a[0] : 1;
      expect(calls, name).toEqual(
        Array.from({ length: batch }, () => ({ batchA: 1, transposed: false })),
      );
    }
  });

  it("shares Identity's buffer instead of copying it", () => {
    installWasmKernels();
    const x = tf.tensor([1, 2, 3]);
    const y = tf.clone(x);
    expect((y as unknown as { dataId: object }).dataId).toBe(
      (x as unknown as { dataId: object }).dataId,
    );
    expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
    y.dispose();
  });
});
