/**
 * The DCLM-style classifier baseline: a supervised fastText model (the real C++ fastText, compiled
 * to WebAssembly by the `fasttext.wasm.js` package) trained with the target set as positives
 * (`__label__hq`) and a seeded sample of the pool as negatives (`__label__lq`); a record's score is
 * the model's P(hq), and filtering keeps the highest-scored records.
 *
 * @example
 * ```ts
 * const clf = await trainFastTextClassifier(heldoutProse, poolSample, { seed: 1 });
 * const p = clf.score(["Some text."]); // P(hq) per text
 * clf.dispose();
 * ```
 */
import { getFastTextModule } from "fasttext.wasm.js";

/** Training settings (DCLM's recipe: word bigrams, a small dimension, a few epochs). */
export interface FastTextConfig {
  dim: number;
  wordNgrams: number;
  epoch: number;
  lr: number;
  minCount: number;
  /** Hash buckets for word n-grams (fastText's default 2M costs seconds to initialise here). */
  bucket: number;
  seed: number;
}

/** The defaults the evaluation uses. */
export const DEFAULT_FASTTEXT: FastTextConfig = {
  dim: 100,
  wordNgrams: 2,
  epoch: 5,
  lr: 0.1,
  minCount: 1,
  bucket: 200_000,
  seed: 1,
};

/** A trained classifier. */
export interface FastTextClassifier {
  /** P(`__label__hq`) of each text. */
  score(texts: readonly string[]): Float64Array;
  /** Seconds spent training (file writing included). */
  trainSeconds: number;
  /** Frees the WebAssembly instance. */
  dispose(): void;
}

// The binding's surface we use (the package types it loosely as `any`).
interface Prediction {
  size(): number;
  get(i: number): [number, string];
  delete?(): void;
}
interface FastTextNative {
  train(args: unknown, callback: () => void): void;
  predict(text: string, k: number, threshold: number): Prediction;
  delete?(): void;
}
interface FastTextCore {
  FS: { writeFile(path: string, data: Uint8Array): void; unlink(path: string): void };
  Args: new () => Record<string, unknown>;
  FastText: new () => FastTextNative;
  ModelName: Record<string, unknown>;
  LossName: Record<string, unknown>;
}

/** fastText reads one line per example, so DCLM joins a document's lines with spaces. */
export function fastTextLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ");
}

/**
 * Trains a binary supervised classifier, one thread (fastText's multi-threaded training is not
 * deterministic; one thread with a fixed seed is), in a fresh WebAssembly instance: a second model
 * trained in the same instance comes out different, so one instance per classifier is what makes
 * the result depend only on the data and the seed.
 */
export async function trainFastTextClassifier(
  positives: readonly string[],
  negatives: readonly string[],
  config: Partial<FastTextConfig> = {},
): Promise<FastTextClassifier> {
  const c = { ...DEFAULT_FASTTEXT, ...config };
  if (positives.length === 0 || negatives.length === 0) {
    throw new Error(
      `fastText needs examples of both classes (got ${positives.length} positives, ${negatives.length} negatives)`,
    );
  }
  const start = performance.now();
  const core = (await getFastTextModule()) as unknown as FastTextCore;
  const lines = [
    ...positives.map((t) => `__label__hq ${fastTextLine(t)}`),
    ...negatives.map((t) => `__label__lq ${fastTextLine(t)}`),
  ];
  const input = "train.txt";
  core.FS.writeFile(input, new TextEncoder().encode(lines.join("\n") + "\n"));
  const ft = new core.FastText();
  const args = new core.Args();
  Object.assign(args, {
    dim: c.dim,
    wordNgrams: c.wordNgrams,
    epoch: c.epoch,
    lr: c.lr,
    minCount: c.minCount,
    bucket: c.bucket,
    seed: c.seed,
    // Whole words only, as fastText's `supervised` command sets them (the Args defaults are the
    // unsupervised ones).
    minn: 0,
    maxn: 0,
    thread: 1,
    verbose: 0,
    model: core.ModelName.supervised,
    loss: core.LossName.softmax,
    input,
  });
  ft.train(args, () => {});
  core.FS.unlink(input);
  const trainSeconds = (performance.now() - start) / 1000;
  return {
    trainSeconds,
    score(texts) {
      const out = new Float64Array(texts.length);
      texts.forEach((t, i) => {
        const p = ft.predict(fastTextLine(t), 2, 0);
        for (let j = 0; j < p.size(); j++) {
          const [prob, label] = p.get(j);
          if (label === "__label__hq") out[i] = prob;
        }
        p.delete?.();
      });
      return out;
    },
    dispose() {
      ft.delete?.();
    },
  };
}
