/**
 * What the scoring benchmarks share: the default rater exported to ONNX (random weights: they
 * don't change the work done), the record mix (mixed lengths, about half longer than seqLen, some
 * multi-byte UTF-8), and raw onnxruntime-node throughput on one thread — the reference the
 * endpoint's figure is a ratio of.
 */
import * as ort from "onnxruntime-node";
import { encodeBatch } from "../../../lib/bytes.ts";
import { quantileCalibration } from "../../../lib/calibration.ts";
import { type RaterConfig, RaterConfigSchema, TrainConfigSchema } from "../../../lib/config.ts";
import { exportRaterOnnx, sha256Hex } from "../../../training/export-onnx.ts";
import { initRaterArrays } from "../../../training/rater.ts";
import { Rng } from "../../../training/rng.ts";

/** The default rater's config, sequence length and exported model. */
export function benchModel(): { rater: RaterConfig; seqLen: number; model: Uint8Array } {
  const rater = RaterConfigSchema.parse({});
  const seqLen = TrainConfigSchema.shape.seqLen.parse(undefined);
  const model = exportRaterOnnx({
    params: initRaterArrays(rater, seqLen, new Rng(1)),
    rater,
    seqLen,
    calibration: quantileCalibration(Array.from({ length: 101 }, (_, i) => (i - 50) / 50)),
    configDigest: sha256Hex("bench"),
  });
  return { rater, seqLen, model };
}

const WORDS = ["the", "data", "rater", "scores", "records", "of", "a", "corpus", "€", "日本"];

/** `n` record texts of the benchmark mix. */
export function benchTexts(rng: Rng, n: number, seqLen: number): string[] {
  return Array.from({ length: n }, () => {
    const words = rng.int(2 * seqLen / 4) + 1;
    return Array.from({ length: words }, () => WORDS[rng.int(WORDS.length)]).join(" ");
  });
}

/**
 * Records/s of `session.run` alone (tokenisation done once up front) on one onnxruntime thread,
 * over `seconds` after a warm-up.
 */
export async function rawRecordsPerSec(
  model: Uint8Array,
  seqLen: number,
  batchSize: number,
  seconds: number,
): Promise<number> {
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  try {
    const batch = encodeBatch(benchTexts(new Rng(2), batchSize, seqLen), seqLen);
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
    return records / (elapsed / 1000);
  } finally {
    await session.release();
  }
}
