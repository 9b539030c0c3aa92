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
import { exportRaterOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { useBackend } from "../../training/backend.ts";
import { disposeParams, toTensors } from "../../training/params.ts";
import { raterScores } from "../../training/rater.ts";
import { randomRaterParams, raterConfig, someCalibration, variedRecords } from "./fixtures.ts";

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
) {
  return tf.tidy(() => {
    const p = toTensors(params);
    const s = raterScores(p, rater, encodeBatch(RECORDS, seqLen)).dataSync() as Float32Array;
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
      const params = randomRaterParams(rater, seqLen, 3);
      const model = exportRaterOnnx({
        params,
        rater,
        seqLen,
        calibration: someCalibration(),
        configDigest: sha256Hex("parity"),
      });
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
});
