/**
 * The paper's toy setting, small enough for CI: clean "prose" from a fixed vocabulary, a training
 * set where records are corrupted at known noise levels (each character replaced, with
 * probability = level, by a random byte-range character), and a clean held-out set.
 */
import { parseTrainConfig, type TrainConfig } from "../../lib/config.ts";
import { Rng } from "../../training/rng.ts";

const WORDS = (
  "the of and to in is was he for it with as his on be at by had not are but from or have an they " +
  "which one you were her all she there would their we him been has when who will more no if out so " +
  "said what up its about into than them can only other new some could time these two may then do " +
  "first any my now such like our over man me even most made after also did many before must through"
).split(" ");

/** A clean sentence of `chars` characters or more. */
export function cleanText(rng: Rng, chars: number): string {
  let s = "";
  while (s.length < chars) {
    const w = WORDS[rng.int(WORDS.length)];
    s += s.length === 0 ? w[0].toUpperCase() + w.slice(1) : " " + w;
  }
  return s + ".";
}

/** Replaces each character with probability `level` by a random character (code 1..255). */
export function corrupt(text: string, level: number, rng: Rng): string {
  let out = "";
  for (const ch of text) out += rng.next() < level ? String.fromCharCode(1 + rng.int(255)) : ch;
  return out;
}

export const NOISE_LEVELS = [0, 0.1, 0.25, 0.5, 1];

/** `n` training records spread evenly over {@link NOISE_LEVELS}, and `m` clean held-out records. */
export function toyCorpus(seed: number, n: number, m: number, chars: number) {
  const rng = new Rng(seed);
  const train: { text: string; noise: number }[] = [];
  for (let i = 0; i < n; i++) {
    const noise = NOISE_LEVELS[i % NOISE_LEVELS.length];
    train.push({ text: corrupt(cleanText(rng, chars), noise, rng), noise });
  }
  const heldout = Array.from({ length: m }, () => cleanText(rng, chars));
  return { train, heldout };
}

/** ROC AUC of `pos` scored above `neg` (ties count half). */
export function rocAuc(pos: number[], neg: number[]): number {
  let wins = 0;
  for (const p of pos) for (const q of neg) wins += p > q ? 1 : p === q ? 0.5 : 0;
  return wins / (pos.length * neg.length);
}

function ranks(xs: number[]): number[] {
  const order = xs.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(xs.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2;
    i = j + 1;
  }
  return r;
}

/** Spearman rank correlation (ties get average ranks). */
export function spearman(a: number[], b: number[]): number {
  const ra = ranks(a), rb = ranks(b);
  const n = a.length;
  const ma = ra.reduce((s, x) => s + x, 0) / n, mb = rb.reduce((s, x) => s + x, 0) / n;
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < n; i++) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) ** 2;
    db += (rb[i] - mb) ** 2;
  }
  return num / Math.sqrt(da * db);
}

/**
 * The tiny trainer config the toy tests share: MLP rater (d16, 32 hidden), one-layer inner LM
 * (d16, 2 heads), SGD lr 1e-2, batches 16, WASM; what varies is the run's length and data window.
 */
export function tinyTrainConfig(o: {
  output: string;
  seqLen: number;
  steps: number;
  population: number;
  resetEvery: number;
  warmupSteps: number;
  window?: "random" | "head";
}): TrainConfig {
  return parseTrainConfig({
    data: { train: "unused", heldout: "unused", ...(o.window ? { window: o.window } : {}) },
    output: o.output,
    seqLen: o.seqLen,
    rater: { kind: "mlp", dModel: 16, hidden: 32 },
    inner: { dModel: 16, layers: 1, heads: 2, ffn: 32, lr: 1e-2 },
    meta: {
      steps: o.steps,
      population: o.population,
      resetEvery: o.resetEvery,
      lr: 1e-2,
      warmupSteps: o.warmupSteps,
      innerBatch: 16,
      outerBatch: 16,
      clipNorm: 1,
      weightDecay: 0,
      paramEma: 0.9,
    },
    backend: "wasm",
    checkpointEvery: 1000,
  });
}
