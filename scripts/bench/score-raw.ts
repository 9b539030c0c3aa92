/**
 * Raw onnxruntime-node throughput of the default demo rater (see lib/rater-fixture.ts) on the
 * windows the scorer cuts from whole documents, on one core: bytes/s and windows/s of
 * `session.run` alone (tokenisation done once up front). `score-endpoint.ts` measures this again
 * in its own run, on its own documents, for its ratio.
 *
 *   deno run -A scripts/bench/score-raw.ts [--batch 256] [--seconds 5] [--documents 500]
 *
 * Prints `{"bench":"score-raw","bytesPerSec":…,"windowsPerSec":…,"threads":1,…}`.
 */
import { parseArgs } from "node:util";
import { Rng } from "../../training/rng.ts";
import { benchDocuments, benchModel, benchWindows, rawThroughput } from "./lib/rater-fixture.ts";

const { values } = parseArgs({
  options: {
    batch: { type: "string", default: "256" },
    seconds: { type: "string", default: "5" },
    documents: { type: "string", default: "500" },
  },
});
const batchSize = Number(values.batch);
const seconds = Number(values.seconds);
const documents = Number(values.documents);
if (
  !(Number.isInteger(batchSize) && batchSize > 0) || !(seconds > 0) ||
  !(Number.isInteger(documents) && documents > 0)
) {
  throw new Error("usage: score-raw.ts [--batch N>0] [--seconds S>0] [--documents N>0]");
}

const { rater, seqLen, model } = benchModel();
const { windows, bytes } = benchWindows(benchDocuments(new Rng(2), documents), seqLen);
const raw = await rawThroughput(model, windows, batchSize, seconds);
console.log(JSON.stringify({
  bench: "score-raw",
  bytesPerSec: Math.round(raw.bytesPerSec),
  mbPerSecPerCore: Math.round(raw.bytesPerSec / 1e4) / 100,
  windowsPerSec: Math.round(raw.windowsPerSec),
  batch: batchSize,
  window: seqLen,
  meanWindowBytes: Math.round((bytes / windows.length) * 10) / 10,
  rater:
    `${rater.kind} d${rater.dModel} l${rater.layers} h${rater.heads} ffn${rater.ffn} patch${rater.patch}`,
  threads: 1,
}));
