/**
 * Score calibration: turns the rater's raw scores into percentiles of a reference sample, so that
 * every shard of a corpus is filtered against one global threshold (or one acceptance curve)
 * rather than its own local ranking.
 *
 * Three filtering policies build on it:
 * - keep a fraction `f`: {@link thresholdForKeepFraction} gives the raw-score threshold;
 * - keep records above a raw threshold (no calibration needed);
 * - the paper's per-record top-K-of-B: keep with probability {@link acceptProbability} of the
 *   record's percentile, decided by {@link deterministicUniform} of its id, so a record gets the
 *   same decision in every run and on every shard.
 *
 * @example
 * ```ts
 * const cal = quantileCalibration(referenceScores);
 * const t = thresholdForKeepFraction(cal, 0.25); // keep iff score >= t
 * const p = percentileOf(cal, score);
 * const keep = deterministicUniform(id, 0) < acceptProbability(p, 192, 256);
 * ```
 */
import { z } from "zod";

/** Number of quantiles stored: 0%, 1%, …, 100%. */
export const CALIBRATION_POINTS = 101;

/** A calibration as stored in the ONNX metadata and the trainer's artifacts. */
export const ScoreCalibrationSchema = z.object({
  /** Reference scores the quantiles were computed from. */
  samples: z.number().int().min(1),
  /** Non-decreasing scores at percentiles 0, 1, …, 100. */
  quantiles: z.array(z.number()).length(CALIBRATION_POINTS).refine(
    (q) => q.every((v, i) => i === 0 || v >= q[i - 1]),
    { message: "quantiles must be non-decreasing" },
  ),
});
export type ScoreCalibration = z.infer<typeof ScoreCalibrationSchema>;

/** A calibration input or policy argument outside its domain. */
export class CalibrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CalibrationError";
  }
}

/**
 * Quantiles 0..100% of reference scores (linear interpolation between order statistics, the usual
 * "type 7" definition), so the calibration's CDF is piecewise linear and invertible.
 */
export function quantileCalibration(
  scores: readonly number[] | Float32Array,
): ScoreCalibration {
  if (scores.length === 0) {
    throw new CalibrationError(
      "cannot calibrate on zero scores: score a non-empty reference sample of the training data",
    );
  }
  const sorted = Float64Array.from(scores).sort();
  if (sorted.some((s) => !Number.isFinite(s))) {
    throw new CalibrationError(
      "reference scores contain NaN or ±Infinity: the rater is diverged or the batch is malformed",
    );
  }
  const n = sorted.length;
  const quantiles: number[] = [];
  for (let i = 0; i < CALIBRATION_POINTS; i++) {
    // Multiply before dividing so knots that land on an order statistic are exact.
    const h = ((n - 1) * i) / (CALIBRATION_POINTS - 1);
    const lo = Math.floor(h);
    const hi = Math.min(lo + 1, n - 1);
    quantiles.push(sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]));
  }
  return { samples: n, quantiles };
}

/** The calibrated score at cumulative probability `q` ∈ [0, 1] (piecewise linear). */
export function scoreAtPercentile(cal: ScoreCalibration, q: number): number {
  const qs = cal.quantiles;
  const h = Math.min(Math.max(q, 0), 1) * (qs.length - 1);
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, qs.length - 1);
  return qs[lo] + (h - lo) * (qs[hi] - qs[lo]);
}

/**
 * The one global raw-score threshold that keeps fraction `f` of the reference distribution:
 * keep a record iff `score >= threshold`. `f = 1` gives -Number.MAX_VALUE (keeps every finite
 * score, including those below anything seen in calibration) and `f = 0` gives Number.MAX_VALUE
 * (keeps none): finite, so the threshold survives JSON (manifest headers) unlike ±Infinity.
 */
export function thresholdForKeepFraction(
  cal: ScoreCalibration,
  f: number,
): number {
  if (!(f >= 0 && f <= 1)) {
    throw new CalibrationError(`keepFraction must be in [0, 1], got ${f}`);
  }
  if (f === 1) return -Number.MAX_VALUE;
  if (f === 0) return Number.MAX_VALUE;
  return scoreAtPercentile(cal, 1 - f);
}

/**
 * The fraction of the reference distribution scoring below `score` (the calibration's CDF,
 * interpolated linearly between quantiles). Where several quantiles are equal (ties in the
 * reference scores) a score equal to them gets the middle of the tied range (mid-rank).
 */
export function percentileOf(cal: ScoreCalibration, score: number): number {
  const qs = cal.quantiles;
  const last = qs.length - 1;
  if (Number.isNaN(score)) {
    throw new CalibrationError("cannot take the percentile of NaN");
  }
  if (score < qs[0]) return 0;
  if (score > qs[last]) return 1;
  // First index whose quantile is >= score, and last index whose quantile is <= score.
  let lo = 0;
  let hi = last;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (qs[mid] < score) lo = mid + 1;
    else hi = mid;
  }
  const first = lo;
  if (qs[first] === score) {
    let end = first;
    while (end < last && qs[end + 1] === score) end++;
    return (first + end) / 2 / last;
  }
  // qs[first - 1] < score < qs[first]
  const a = qs[first - 1];
  const b = qs[first];
  return (first - 1 + (score - a) / (b - a)) / last;
}

/** ln(m!) for m < LOG_FACTORIAL_TABLE.length, summed exactly once. */
const LOG_FACTORIAL_TABLE = (() => {
  const t = new Float64Array(256);
  for (let m = 2; m < t.length; m++) t[m] = t[m - 1] + Math.log(m);
  return t;
})();

/** ln(m!) for an integer m ≥ 0: a table below 256, Stirling's series (error < 1e-25) above. */
function logFactorial(m: number): number {
  if (m < LOG_FACTORIAL_TABLE.length) return LOG_FACTORIAL_TABLE[m];
  const x = m + 1; // ln Γ(x)
  const x2 = x * x;
  return (x - 0.5) * Math.log(x) - x + 0.5 * Math.log(2 * Math.PI) +
    (1 / 12 - (1 / 360 - (1 / 1260 - 1 / (1680 * x2)) / x2) / x2) / x;
}

/** Stop summing once a term is this many nats below the running sum (e^-50 ≈ 2e-22). */
const NEGLIGIBLE_NATS = 50;

/**
 * ln Σ_j exp(t_j) over terms walked away from the mode of a unimodal sequence: `first` is the
 * largest term and `nextLog(i, t)` gives the log of the term after `t` (null past the end). The
 * terms shrink ever faster, so the walk stops when they no longer change the sum.
 */
function logTailSum(
  first: number,
  nextLog: (step: number, t: number) => number | null,
): number {
  let sum = 1; // Σ exp(t_j - first)
  let t: number | null = first;
  for (let i = 1;; i++) {
    t = nextLog(i, t);
    if (t === null) break;
    const rel = t - first;
    sum += Math.exp(rel);
    if (rel < Math.log(sum) - NEGLIGIBLE_NATS) break;
  }
  return first + Math.log(sum);
}

/**
 * Probability that a record at percentile `p` survives top-K-of-B selection (the paper's
 * per-record acceptance): the other B−1 records of the batch each score above it with
 * probability 1−p, and it is kept iff fewer than K of them do,
 *   P = Σ_{s=0}^{K−1} C(B−1, s) (1−p)^s p^(B−1−s).
 *
 * Computed in log space over whichever tail of Binomial(B−1, 1−p) holds less probability
 * (so values near 0 and near 1 both keep their precision), starting at the tail's edge, next to
 * the mode, with ln C from log-factorials, and walking outwards only while terms still matter:
 * O(√B) work even for B in the millions, no overflow of C(B−1, s), no underflow of p^(B−1).
 * Written here rather than pulled from a statistics package because it is this one sum.
 */
export function acceptProbability(p: number, K: number, B: number): number {
  if (!Number.isInteger(B) || B < 1) {
    throw new CalibrationError(`batch size B must be an integer >= 1, got ${B}`);
  }
  if (!Number.isInteger(K) || K < 1 || K > B) {
    throw new CalibrationError(`K must be an integer in [1, B=${B}], got ${K}`);
  }
  if (!(p >= 0 && p <= 1)) {
    throw new CalibrationError(`percentile p must be in [0, 1], got ${p}`);
  }
  if (K === B) return 1;
  const n = B - 1;
  if (p === 1) return 1; // nobody scores above it
  if (p === 0) return 0; // everybody does, and K <= n
  const lnAbove = Math.log1p(-p); // ln(1 - p)
  const lnBelow = Math.log(p);
  const lnTerm = (s: number) =>
    logFactorial(n) - logFactorial(s) - logFactorial(n - s) + s * lnAbove + (n - s) * lnBelow;
  // S, the number of other records that outrank this one, is Binomial(n, 1 - p), whose pmf
  // rises up to its mode ⌊(n+1)(1−p)⌋ and falls after it.
  if (K - 1 < n * (1 - p)) {
    // Lower tail P(S ≤ K−1): K−1 is below the mode, so terms shrink walking down to s = 0.
    // term(s−1) = term(s) · s / (n−s+1) · p / (1−p)
    const ln = logTailSum(lnTerm(K - 1), (i, t) => {
      const s = K - i; // index of the term being produced, plus one
      return s < 1 ? null : t + Math.log(s) - Math.log(n - s + 1) + lnBelow - lnAbove;
    });
    return Math.min(1, Math.exp(ln));
  }
  // Upper tail P(S ≥ K): K is above the mode, so terms shrink walking up to s = n.
  // term(s+1) = term(s) · (n−s) / (s+1) · (1−p) / p
  const ln = logTailSum(lnTerm(K), (i, t) => {
    const s = K + i - 1; // index of the previous term
    return s >= n ? null : t + Math.log(n - s) - Math.log(s + 1) + lnAbove - lnBelow;
  });
  return Math.max(0, 1 - Math.exp(ln));
}

const utf8 = new TextEncoder();

/**
 * A uniform number in [0, 1) determined by a record id and a seed: a 53-bit hash of the id's
 * UTF-8 bytes (two independent 32-bit multiply-xorshift lanes, after cyrb53). Same id and seed →
 * same number on every machine and runtime, so per-record random decisions are reproducible.
 */
export function deterministicUniform(id: string, seed: number): number {
  const bytes = utf8.encode(id);
  let h1 = 0xdeadbeef ^ (seed >>> 0);
  let h2 = 0x41c6ce57 ^ Math.imul(seed >>> 0, 0x9e3779b1);
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  // 21 bits of h2 above 32 bits of h1: an exact integer below 2^53.
  return ((h2 & 0x1fffff) * 4294967296 + (h1 >>> 0)) / 2 ** 53;
}
