/**
 * The exported ONNX graph computes the same scores as the TensorFlow.js forward pass the rater was
 * trained with on the trainer's default backend (tfjs-wasm). (tfjs's pure-JS cpu backend agrees too,
 * but takes ~20 s per transformer here, so it is not part of the suite.)
 */
import * as tf from "@tensorflow/tfjs";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import type { RaterConfig } from "../../lib/config.ts";
import { aggregateScores, windowSpans } from "../../lib/windows.ts";
import { readRaterMetadata, scoreWithOnnx } from "../../training/export-onnx.ts";
import { Rng } from "../../training/rng.ts";
import { useBackend } from "../../training/backend.ts";
import { disposeParams, toTensors } from "../../training/params.ts";
import { raterScores } from "../../training/rater.ts";
import { randomRaterModel, randomRaterParams, raterConfig, variedRecords } from "./fixtures.ts";

const SEQ_LEN = 64;
const RECORDS = variedRecords(SEQ_LEN, 300, 11);
const TOLERANCE = 1e-4;

const cases: { name: string; rater: RaterConfig; seqLen: number }[] = [
  { name: "transformer (default config)", rater: raterConfig({}), seqLen: SEQ_LEN },
  { name: "mlp (default config)", rater: raterConfig({ kind: "mlp" }), seqLen: SEQ_LEN },
  {
    name: "transformer, 3 layers, 8 heads, seqLen 64",
    rater: raterConfig({ dModel: 32, layers: 3, heads: 8, ffn: 48 }),
    seqLen: SEQ_LEN,
  },
  {
    name: "transformer, no blocks (embedding + final LayerNorm only)",
    rater: raterConfig({ layers: 0, dModel: 16, heads: 1 }),
    seqLen: SEQ_LEN,
  },
  {
    name: "transformer, one byte per position (patch 1)",
    rater: raterConfig({ patch: 1 }),
    seqLen: SEQ_LEN,
  },
  {
    name: "transformer, patch 3 (the last patch is short: 64 = 21·3 + 1)",
    rater: raterConfig({ patch: 3, dModel: 32, heads: 4, ffn: 64, layers: 1 }),
    seqLen: SEQ_LEN,
  },
  {
    name: "transformer, the default demo rater's shape (dModel 32, 1 layer, ffn 64, patch 4)",
    rater: raterConfig({ dModel: 32, layers: 1, heads: 4, ffn: 64 }),
    seqLen: SEQ_LEN,
  },
];

/** Scores all records with onnxruntime-node in uneven batches (the batch dim is dynamic). */
async function ortScores(session: ort.InferenceSession, seqLen: number) {
  const out = new Float32Array(RECORDS.length);
  const sizes = [1, 7, 64, RECORDS.length];
  let start = 0;
  for (let i = 0; start < RECORDS.length; i++) {
    const part = RECORDS.slice(start, start + sizes[Math.min(i, sizes.length - 1)]);
    const batch = encodeBatch(part, seqLen);
    const result = await session.run({
      tokens: new ort.Tensor("int32", batch.tokens, [batch.batch, seqLen]),
      mask: new ort.Tensor("float32", batch.mask, [batch.batch, seqLen]),
    });
    const scores = result.scores;
    expect(scores.dims).toEqual([part.length]);
    out.set(scores.data as Float32Array, start);
    start += part.length;
  }
  return out;
}

function tfjsScores(
  params: ReturnType<typeof randomRaterParams>,
  rater: RaterConfig,
  seqLen: number,
  records: readonly (string | Uint8Array)[] = RECORDS,
) {
  return tf.tidy(() => {
    const p = toTensors(params);
    const s = raterScores(p, rater, encodeBatch(records, seqLen)).dataSync() as Float32Array;
    disposeParams(p);
    return Float32Array.from(s);
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function std(a: Float32Array) {
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  return Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length);
}

describe.each(["wasm"] as const)("ONNX parity with tfjs-%s", (backend) => {
  let previous: string;
  beforeAll(async () => {
    previous = tf.getBackend();
    await useBackend(backend);
  });
  afterAll(async () => {
    if (previous) await tf.setBackend(previous);
  });

  it.each(cases)(
    "onnxruntime-node scores equal raterScores within 1e-4 on 300 varied records: $name",
    async ({ rater, seqLen }) => {
      expect(RECORDS.length).toBeGreaterThanOrEqual(256);
      const { params, model } = randomRaterModel(rater, seqLen, 3, "parity");
      const session = await ort.InferenceSession.create(model);
      try {
        const expected = tfjsScores(params, rater, seqLen);
        const actual = await ortScores(session, seqLen);
        expect(actual.every(Number.isFinite)).toBe(true);
        // The weights must make the scores differ across records, or parity would be vacuous.
        expect(std(expected)).toBeGreaterThan(0.05);
        expect(maxAbsDiff(actual, expected)).toBeLessThanOrEqual(TOLERANCE);
      } finally {
        await session.release();
      }
    },
  );

  it.each([
    { stride: SEQ_LEN, aggregation: "mean" as const },
    { stride: 40, aggregation: "min" as const },
  ])(
    "whole records of several KB scored window by window (stride $stride, $aggregation) equal the " +
      "trainer's forward pass on the same windows, aggregated, within 1e-4",
    async ({ stride, aggregation }) => {
      const rater = raterConfig({
        dModel: 32,
        layers: 1,
        heads: 4,
        ffn: 64,
        scoring: { stride, aggregation },
      });
      const { params, model } = randomRaterModel(rater, SEQ_LEN, 5, "parity-long");
      expect(readRaterMetadata(model).scoring).toEqual({ window: SEQ_LEN, stride, aggregation });
      const rng = new Rng(13);
      // Long records of mixed text, multi-byte characters cut by window edges included; one past
      // the cap, so the cap is honoured identically.
      const cap = 3000;
      const long = Array.from({ length: 12 }, (_, i) =>
        Array.from(
          { length: 200 + rng.int(600) },
          () => ["the ", "rater ", "日本 ", "😀", "0x3f ", "\n"][rng.int(6)],
        ).join("") + "ä".repeat(i));
      long.push("word ".repeat(1000));
      const bytes = long.map((t) => new TextEncoder().encode(t));
      expect(bytes.some((b) => b.length > cap)).toBe(true);
      expect(bytes.every((b) => b.length > 4 * SEQ_LEN)).toBe(true);
      const plan = { window: SEQ_LEN, stride, cap };
      const windows: Uint8Array[] = [];
      const spansOf = bytes.map((b) => {
        const { spans } = windowSpans(b.length, plan);
        for (const [s, e] of spans) windows.push(b.subarray(s, e));
        return spans;
      });
      const windowScores = tfjsScores(params, rater, SEQ_LEN, windows);
      expect(std(windowScores)).toBeGreaterThan(0.05);
      let at = 0;
      const expected = Float32Array.from(spansOf, (spans) => {
        const score = aggregateScores(
          windowScores.subarray(at, at + spans.length),
          spans,
          aggregation,
        );
        at += spans.length;
        return score;
      });
      const actual = await scoreWithOnnx(model, long, SEQ_LEN, { cap, batchSize: 37 });
      expect(maxAbsDiff(actual, expected)).toBeLessThanOrEqual(TOLERANCE);
      // The bodies count: the same records cut to their first window score differently.
      const heads = tfjsScores(params, rater, SEQ_LEN, bytes.map((b) => b.subarray(0, SEQ_LEN)));
      expect(maxAbsDiff(heads, expected)).toBeGreaterThan(1e-3);
    },
  );
});
