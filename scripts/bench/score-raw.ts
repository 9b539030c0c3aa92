/**
 * Benchmark (a) of issue 4: records/s of raw onnxruntime-node scoring batches with the default
 * rater (transformer, default seqLen) on one core. Tokenisation happens once up front: this times
 * `session.run` alone. (`score-endpoint.ts` measures this again in its own run for its ratio.)
 *
 *   deno run -A scripts/bench/score-raw.ts [--batch 256] [--seconds 5]
 *
 * Prints `{"bench":"score-raw","recordsPerSec":…,"batch":…}`.
 */
import { parseArgs } from "node:util";
import { benchModel, rawRecordsPerSec } from "./lib/rater-fixture.ts";

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

const { rater, seqLen, model } = benchModel();
const recordsPerSec = await rawRecordsPerSec(model, seqLen, batchSize, seconds);
console.log(JSON.stringify({
  bench: "score-raw",
  recordsPerSec: Math.round(recordsPerSec),
  batch: batchSize,
  seqLen,
  rater: rater.kind,
  threads: 1,
}));
