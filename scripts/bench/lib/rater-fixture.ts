/**
 * What the scoring benchmarks share: the default demo rater's shape (evaluation/presets.ts DEFAULT:
 * transformer dModel 32, 1 layer, 4 heads, ffn 64, seqLen 64) with the rater config's default patch,
 * exported to ONNX (random weights: they don't change the work done); whole documents (multi-KB
 * prose-like records with some multi-byte UTF-8) cut into the windows the scorer reads
 * (lib/windows.ts, default cap); and raw onnxruntime-node throughput on those windows on one
 * thread, the reference the endpoint's figure is a ratio of.
 */
import * as ort from "onnxruntime-node";
import { encodeBatch } from "../../../lib/bytes.ts";
import { quantileCalibration } from "../../../lib/calibration.ts";
import { type RaterConfig, RaterConfigSchema } from "../../../lib/config.ts";
import { cutWindows, DEFAULT_SCORE_CAP_BYTES } from "../../../lib/windows.ts";
import { exportRaterOnnx, readRaterMetadata, sha256Hex } from "../../../training/export-onnx.ts";
import { initRaterArrays } from "../../../training/rater.ts";
import { Rng } from "../../../training/rng.ts";

/** The default demo rater's input width (evaluation/presets.ts DEFAULT `seqLen`). */
export const BENCH_SEQ_LEN = 64;

/** The default demo rater's config, its window and its exported model. */
export function benchModel(): { rater: RaterConfig; seqLen: number; model: Uint8Array } {
  const rater = RaterConfigSchema.parse({
    kind: "transformer",
    dModel: 32,
    layers: 1,
    heads: 4,
    ffn: 64,
  });
  const seqLen = BENCH_SEQ_LEN;
  const model = exportRaterOnnx({
    params: initRaterArrays(rater, seqLen, new Rng(1)),
    rater,
    seqLen,
    calibration: quantileCalibration(Array.from({ length: 101 }, (_, i) => (i - 50) / 50)),
    configDigest: sha256Hex("bench"),
  });
  return { rater, seqLen, model };
}

const WORDS = (
  "the of and to in a is that for it as was with be by on not he this are or his from at which " +
  "but have an they you were her she there been one all we their has would when if so no will " +
  "committee report government market water evening history students village letter question " +
  "during however because although several"
).split(" ");
const EXTRA = ["café", "naïve", "Grüße", "€", "日本", "—"];

/**
 * `n` documents: paragraphs of prose-like sentences, 1–8 KB each (mean about 4.5 KB), about one
 * word in 60 non-ASCII.
 */
export function benchDocuments(rng: Rng, n: number): string[] {
  return Array.from({ length: n }, () => {
    const target = 1000 + rng.int(7000);
    const paragraphs: string[] = [];
    let length = 0;
    while (length < target) {
      const sentences: string[] = [];
      for (let s = 0, m = 3 + rng.int(5); s < m; s++) {
        const words = Array.from(
          { length: 6 + rng.int(14) },
          () => rng.int(60) === 0 ? EXTRA[rng.int(EXTRA.length)] : WORDS[rng.int(WORDS.length)],
        );
        words[0] = words[0][0].toUpperCase() + words[0].slice(1);
        sentences.push(words.join(" ") + (rng.int(8) === 0 ? "?" : "."));
      }
      const p = sentences.join(" ");
      paragraphs.push(p);
      length += p.length + 2;
    }
    return paragraphs.join("\n\n");
  });
}

/** The windows the scorer cuts from `docs` (stride = window, default cap) and their bytes. */
export function benchWindows(
  docs: readonly string[],
  seqLen: number,
): { windows: Uint8Array[]; bytes: number } {
  const encoder = new TextEncoder();
  const windows: Uint8Array[] = [];
  let bytes = 0;
  for (const d of docs) {
    const { spans } = cutWindows(encoder.encode(d), {
      window: seqLen,
      stride: seqLen,
      cap: DEFAULT_SCORE_CAP_BYTES,
    }, windows);
    for (const [s, e] of spans) bytes += e - s;
  }
  return { windows, bytes };
}

/** UTF-8 bytes of texts. */
export function utf8Bytes(texts: readonly string[]): number {
  const encoder = new TextEncoder();
  return texts.reduce((n, t) => n + encoder.encode(t).length, 0);
}

/**
 * Bytes/s (and windows/s) of `session.run` alone over `windows` (tokenised once up front, in
 * batches of `batchSize`), on one onnxruntime thread, over `seconds` after a warm-up.
 */
export async function rawThroughput(
  model: Uint8Array,
  windows: readonly Uint8Array[],
  batchSize: number,
  seconds: number,
): Promise<{ bytesPerSec: number; windowsPerSec: number }> {
  const { seqLen } = readRaterMetadata(model);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  try {
    const feeds: { feed: Record<string, ort.Tensor>; windows: number; bytes: number }[] = [];
    for (let start = 0; start < windows.length; start += batchSize) {
      const part = windows.slice(start, start + batchSize);
      const batch = encodeBatch(part, seqLen);
      feeds.push({
        feed: {
          tokens: new ort.Tensor("int32", batch.tokens, [batch.batch, seqLen]),
          mask: new ort.Tensor("float32", batch.mask, [batch.batch, seqLen]),
        },
        windows: part.length,
        bytes: part.reduce((n, w) => n + w.length, 0),
      });
    }
    for (let i = 0; i < Math.min(3, feeds.length); i++) await session.run(feeds[i].feed);
    let bytes = 0;
    let done = 0;
    const start = performance.now();
    let elapsed = 0;
    for (let i = 0; elapsed < seconds * 1000; i = (i + 1) % feeds.length) {
      await session.run(feeds[i].feed);
      bytes += feeds[i].bytes;
      done += feeds[i].windows;
      elapsed = performance.now() - start;
    }
    return { bytesPerSec: bytes / (elapsed / 1000), windowsPerSec: done / (elapsed / 1000) };
  } finally {
    await session.release();
  }
}
