/**
 * Benchmark (a) of issue 4: records/s of raw onnxruntime-node scoring batches with the default
 * rater (transformer, default seqLen) on one core. The figure the endpoint's end-to-end throughput
 * is compared with. Tokenisation happens once up front: this times `session.run` alone.
 *
 *   deno run -A scripts/bench/score-raw.ts [--batch 256] [--seconds 5]
 *
 * Prints `{"bench":"score-raw","recordsPerSec":…,"batch":…}`.
 */
import * as ort from "onnxruntime-node";
import { parseArgs } from "node:util";
import { encodeBatch } from "../../lib/bytes.ts";
import { quantileCalibration } from "../../lib/calibration.ts";
import { RaterConfigSchema, TrainConfigSchema } from "../../lib/config.ts";
import { exportRaterOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";

const { values } = parseArgs({
  options: {
    batch: { type: "string", default: "256" },
    seconds: { type: "string", default: "5" },
  },
});
const batchSize = Number(values.batch);
const seconds = Number(values.seconds);
if (!(Number.isInteger(batchSize) && batchSize > 0) || !(seconds > 0)) {
  throw new Error("usage: score-raw.ts [--batch N>0] [--seconds S>0]");
}

const rater = RaterConfigSchema.parse({});
const seqLen = TrainConfigSchema.shape.seqLen.parse(undefined);
const rng = new Rng(1);
// Weights don't change the work done; the graph and sizes are exactly the default export's.
const model = exportRaterOnnx({
  params: initRaterArrays(rater, seqLen, rng),
  rater,
  seqLen,
  calibration: quantileCalibration([0, 1]),
  configDigest: sha256Hex("bench"),
});
const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
});

// Records of mixed lengths (about half longer than seqLen), as in a real shard.
const words = ["the", "data", "rater", "scores", "records", "of", "a", "corpus", "€", "日本"];
const texts = Array.from({ length: batchSize }, () => {
  const n = rng.int(2 * seqLen / 4) + 1;
  return Array.from({ length: n }, () => words[rng.int(words.length)]).join(" ");
});
const batch = encodeBatch(texts, seqLen);
const feeds = {
  tokens: new ort.Tensor("int32", batch.tokens, [batchSize, seqLen]),
  mask: new ort.Tensor("float32", batch.mask, [batchSize, seqLen]),
};

for (let i = 0; i < 3; i++) await session.run(feeds); // warm-up
let records = 0;
const start = performance.now();
let elapsed = 0;
while (elapsed < seconds * 1000) {
  await session.run(feeds);
  records += batchSize;
  elapsed = performance.now() - start;
}
await session.release();
console.log(JSON.stringify({
  bench: "score-raw",
  recordsPerSec: Math.round(records / (elapsed / 1000)),
  batch: batchSize,
  seqLen,
  rater: rater.kind,
  threads: 1,
}));
