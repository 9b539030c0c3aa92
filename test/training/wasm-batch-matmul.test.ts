/**
 * tfjs-wasm's batched products run as one XNNPACK product per batch entry
 * (`installWasmKernels` in training/kernels.ts): same results as the reference (pure-JS CPU backend) up to float32
 * summation order, for every shape the fast path takes and those it hands to the stock kernel, and
 * second-order gradients through attention unchanged.
 */
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BackendName, useBackend } from "../../training/backend.ts";
import { blockShapes, initArrays, MASK_BIAS, selfAttention } from "../../training/nn.ts";
import { toTensors } from "../../training/params.ts";
import { Rng } from "../../training/rng.ts";
import { expectClose } from "../support/expect-close.ts";

interface Case {
  name: string;
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
}

const cases: Case[] = [
  { name: "attention scores q·kᵀ over [batch·heads, len, dh]", a: [24, 32, 8], b: [24, 8, 32] },
  { name: "attention output attn·v", a: [24, 32, 32], b: [24, 32, 8] },
  { name: "two outer dims", a: [2, 3, 20, 30], b: [2, 3, 30, 25] },
  { name: "a right operand of rank 2 shared by every entry", a: [4, 20, 30], b: [30, 25] },
  { name: "a right operand with batch 1", a: [4, 20, 30], b: [1, 30, 25] },
  {
    name: "a transposed operand (explicit transposes)",
    a: [4, 20, 30],
    b: [4, 25, 30],
    transposeB: true,
  },
  {
    name: "a transposed left operand (explicit transposes)",
    a: [4, 30, 20],
    b: [4, 30, 25],
    transposeA: true,
  },
  { name: "a broadcast left operand (stock kernel)", a: [1, 20, 30], b: [4, 30, 25] },
  { name: "tiny matrices (stock kernel)", a: [16, 3, 4], b: [16, 4, 5] },
  { name: "a plain 2-D product", a: [20, 30], b: [30, 25] },
];

function values(shape: number[], seed: number): Float32Array {
  const rng = new Rng(seed);
  return rng.normals(shape.reduce((x, y) => x * y, 1), 1);
}

function product(c: Case): { shape: number[]; values: Float32Array } {
  return tf.tidy(() => {
    const out = tf.matMul(
      tf.tensor(values(c.a, 1), c.a),
      tf.tensor(values(c.b, 2), c.b),
      c.transposeA,
      c.transposeB,
    );
    return { shape: out.shape, values: out.dataSync() as Float32Array };
  });
}

/** Second derivative through causal self-attention: ∇(f + |∇f|²) for f = Σ attention(x)². */
function attentionSecondOrder(): Float32Array[] {
  // dh = 16 and len = 32: products large enough for the per-entry XNNPACK path, and dh < len so
  // the gradient of kᵀ is computed transposed (see matMul).
  const batch = 2, len = 32, heads = 2, d = 32;
  return tf.tidy(() => {
    const arrays = initArrays(blockShapes(0, d, 8), new Rng(5));
    for (const v of Object.values(arrays)) v.values.forEach((x, i) => (v.values[i] = 20 * x));
    const p = toTensors(arrays);
    const x = tf.tensor(values([batch * len, d], 6), [batch * len, d]);
    const mask = new Float32Array(len * len);
    for (let i = 0; i < len; i++) for (let j = i + 1; j < len; j++) mask[i * len + j] = MASK_BIAS;
    const bias = tf.tensor(mask, [len, len]);
    const names = Object.keys(p).filter((n) => n.includes(".attn."));
    const f = (...w: tf.Tensor[]) => {
      const q = { ...p };
      names.forEach((n, i) => (q[n] = w[i]));
      return tf.sum(tf.square(selfAttention(x, q, "l0.attn", batch, len, heads, bias)));
    };
    const g = tf.grads((...w: tf.Tensor[]) =>
      tf.add(f(...w), tf.addN(tf.grads(f)(w).map((t) => tf.sum(tf.mul(t, t)))))
    )(names.map((n) => p[n]));
    return g.map((t) => t.dataSync() as Float32Array);
  });
}

describe("batched matmul on tfjs-wasm", () => {
  const reference = new Map<string, { shape: number[]; values: Float32Array }>();
  let referenceSecondOrder: Float32Array[] = [];
  let backend: BackendName = "cpu";

  beforeAll(async () => {
    backend = tf.getBackend() as BackendName;
    await useBackend("cpu");
    for (const c of cases) reference.set(c.name, product(c));
    referenceSecondOrder = attentionSecondOrder();
    await useBackend("wasm");
  });
  afterAll(async () => {
    if (backend === "cpu" || backend === "wasm") await useBackend(backend);
  });

  for (const c of cases) {
    it(`matches the CPU backend for ${c.name}`, () => {
      const before = tf.memory().numTensors;
      const got = product(c);
      const want = reference.get(c.name)!;
      expect(got.shape).toEqual(want.shape);
      expectClose(got.values, want.values, 1e-6);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it("gives second-order gradients through attention equal to the CPU backend's", () => {
    const got = attentionSecondOrder();
    expect(got.length).toBe(referenceSecondOrder.length);
    got.forEach((g, i) => expectClose(g, referenceSecondOrder[i], 1e-4));
  });
});
