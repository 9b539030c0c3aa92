import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../training/backend.ts";
import { installWasmKernels } from "../../training/kernels.ts";
import {
  DEFAULT_DOWNSTREAM,
  type DownstreamConfig,
  DownstreamDataError,
  evalWindows,
  trainDownstream,
  trainFlopsPerStep,
  WindowSampler,
} from "../../evaluation/trainer.ts";
import { lmFlopsPerByte } from "../../training/lm.ts";
import { Rng } from "../../training/rng.ts";

const config: DownstreamConfig = {
  ...DEFAULT_DOWNSTREAM,
  lm: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
  seqLen: 32,
  batch: 8,
  steps: 30,
  evalEvery: 10,
  evalWindows: 16,
  evalBatch: 16,
  warmupSteps: 3,
};
const prose = Array.from(
  { length: 40 },
  (_, i) => `Record ${i}: the cat sat on the mat and looked at the dog.`,
);

beforeAll(async () => {
  await useBackend("wasm");
});

describe("transposed matmul on tfjs-wasm", () => {
  it("gives the same products as the built-in kernel for every transpose combination", async () => {
    const a = tf.randomNormal([2, 5, 7], 0, 1, "float32", 1);
    const b = tf.randomNormal([2, 7, 3], 0, 1, "float32", 2);
    const at = tf.transpose(a, [0, 2, 1]);
    const bt = tf.transpose(b, [0, 2, 1]);
    const reference = await tf.matMul(a, b).array();
    installWasmKernels();
    const cases = [
      tf.matMul(a, b),
      tf.matMul(at, b, true, false),
      tf.matMul(a, bt, false, true),
      tf.matMul(at, bt, true, true),
    ];
    for (const c of cases) {
      const got = (await c.array()) as number[][][];
      got.flat(2).forEach((v, i) =>
        expect(v).toBeCloseTo((reference as number[][][]).flat(2)[i], 4)
      );
    }
  });
});

describe("trainDownstream", () => {
  it("lowers test NLL, evaluates at step 0, every evalEvery steps and the end, with FLOPs linear in steps", async () => {
    const r = await trainDownstream(prose, { a: prose.slice(0, 8) }, config);
    expect(r.curve.map((p) => p.step)).toEqual([0, 10, 20, 30]);
    const perStep = lmFlopsPerByte(config.lm, config.seqLen).train * config.batch * config.seqLen;
    expect(r.flopsPerStep).toBe(perStep);
    expect(trainFlopsPerStep(config)).toBe(perStep);
    expect(r.curve.map((p) => p.flops)).toEqual([0, 10 * perStep, 20 * perStep, 30 * perStep]);
    expect(r.curve[0].losses.a).toBeGreaterThan(5); // ≈ ln 256 untrained
    expect(r.finalLosses.a).toBeLessThan(r.curve[0].losses.a - 1);
  });

  it("is deterministic for a seed and differs between seeds", async () => {
    const a = await trainDownstream(prose, { a: prose }, { ...config, steps: 5, evalEvery: 5 });
    const b = await trainDownstream(prose, { a: prose }, { ...config, steps: 5, evalEvery: 5 });
    const c = await trainDownstream(prose, { a: prose }, {
      ...config,
      steps: 5,
      evalEvery: 5,
      seed: 9,
    });
    expect(b.finalLosses.a).toBe(a.finalLosses.a);
    expect(c.finalLosses.a).not.toBe(a.finalLosses.a);
  });

  it("refuses to train on an empty record set", async () => {
    await expect(trainDownstream([], { a: prose }, config)).rejects.toThrow(DownstreamDataError);
  });
});

describe("WindowSampler", () => {
  it("visits every record once per epoch and cuts windows of seqLen bytes inside long records", () => {
    const enc = new TextEncoder();
    const records = [enc.encode("a".repeat(100)), enc.encode("bb"), enc.encode("c".repeat(10))];
    const s = new WindowSampler(records, 8, new Rng(0));
    const epoch = s.take(3);
    expect(epoch.map((w) => String.fromCharCode(w[0])).sort()).toEqual(["a", "b", "c"]);
    for (const w of epoch) {
      expect(w.length).toBe(Math.min(8, records.find((r) => r[0] === w[0])!.length));
    }
  });
});

describe("evalWindows", () => {
  const enc = new TextEncoder();
  const docs = ["a".repeat(100), "b".repeat(33), "c"];

  it("cuts every document into non-overlapping windows, dropping a window too short to predict", () => {
    const w = evalWindows(docs, 32, 1000);
    // 100 bytes → 32, 32, 32, 4; 33 → 32 (the 1-byte tail is dropped); "c" alone is dropped.
    expect(w.map((x) => x.length)).toEqual([32, 32, 32, 4, 32]);
    expect(new TextDecoder().decode(w[3])).toBe("aaaa");
    expect(w[4]).toEqual(enc.encode("b".repeat(32)));
  });

  it("samples the same windows for every call (a fixed seed), in document order", () => {
    // Document i is one distinct character repeated, so a window names its document.
    const many = Array.from({ length: 50 }, (_, i) => String.fromCharCode(48 + i).repeat(120));
    const a = evalWindows(many, 16, 20);
    const b = evalWindows(many, 16, 20);
    expect(a.length).toBe(20);
    expect(a).toEqual(b);
    // Spread over the documents, not the first ones' heads only.
    const docOf = a.map((w) => w[0] - 48);
    expect(new Set(docOf).size).toBeGreaterThan(10);
    expect(docOf).toEqual([...docOf].sort((x, y) => x - y));
    expect(evalWindows(many, 16, 20, 1)).not.toEqual(a);
  });
});
