/**
 * The exported rater loads and scores in onnxruntime-web (WASM, no native addon: what edge runtimes
 * can run), offline, from the wasm files in node_modules, with the same scores as the tfjs forward
 * pass and onnxruntime-node.
 */
import * as tf from "@tensorflow/tfjs";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import { useBackend } from "../../training/backend.ts";
import { disposeParams, toTensors } from "../../training/params.ts";
import { raterScores } from "../../training/rater.ts";
import { randomRaterModel, raterConfig, variedRecords } from "./fixtures.ts";

const SEQ_LEN = 64;
const RECORDS = variedRecords(SEQ_LEN, 256, 23);

beforeAll(async () => {
  await useBackend("wasm");
  // Load the wasm binary from node_modules rather than a CDN: the test runs offline.
  const require = createRequire(import.meta.url);
  ortWeb.env.wasm.wasmPaths =
    dirname(require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm")) + "/";
  ortWeb.env.wasm.numThreads = 1;
});

function maxAbsDiff(a: Float32Array, b: Float32Array) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.each(["transformer", "mlp"] as const)("onnxruntime-web (%s)", (kind) => {
  it("scores 256 varied records like tfjs and onnxruntime-node (max abs diff <= 1e-4)", async () => {
    const rater = raterConfig({ kind });
    const { params, model } = randomRaterModel(rater, SEQ_LEN, 5, "web");
    const batch = encodeBatch(RECORDS, SEQ_LEN);
    const dims = [batch.batch, SEQ_LEN];

    const web = await ortWeb.InferenceSession.create(model, { executionProviders: ["wasm"] });
    const webOut = await web.run({
      tokens: new ortWeb.Tensor("int32", batch.tokens, dims),
      mask: new ortWeb.Tensor("float32", batch.mask, dims),
    });
    await web.release();
    const webScores = webOut.scores.data as Float32Array;

    const native = await ortNode.InferenceSession.create(model);
    const nativeOut = await native.run({
      tokens: new ortNode.Tensor("int32", batch.tokens, dims),
      mask: new ortNode.Tensor("float32", batch.mask, dims),
    });
    await native.release();

    const expected = tf.tidy(() => {
      const p = toTensors(params);
      const s = raterScores(p, rater, batch).dataSync() as Float32Array;
      disposeParams(p);
      return Float32Array.from(s);
    });

    expect(webOut.scores.dims).toEqual([RECORDS.length]);
    expect(webScores.every(Number.isFinite)).toBe(true);
    expect(maxAbsDiff(webScores, expected)).toBeLessThanOrEqual(1e-4);
    expect(maxAbsDiff(webScores, nativeOut.scores.data as Float32Array)).toBeLessThanOrEqual(1e-4);
  });
});
