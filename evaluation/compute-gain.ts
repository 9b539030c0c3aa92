/**
 * The paper's compute-gain metric (Calian et al. 2025), measured on a `test` split that neither
 * meta-training (its outer objective is `heldout`) nor any tuning has seen.
 *
 * A baseline trained on unfiltered data ends at test loss `L_b` after `C_b` training FLOPs. A
 * filtered run first reaches `L_b` after `C_f` FLOPs (linearly interpolated between its evaluation
 * points); the rater's inference over every record it scored costs `C_rater`. Then
 * `netComputeGain = 1 - (C_f + C_rater) / C_b`, and it is undefined (`null`) when the filtered run
 * never reaches `L_b`.
 *
 * @example
 * ```ts
 * const baseline = [{ flops: 0, loss: 5 }, { flops: 100, loss: 2 }];
 * const filtered = [{ flops: 0, loss: 5 }, { flops: 50, loss: 2 }, { flops: 100, loss: 1.5 }];
 * computeGain(baseline, filtered, 10).netComputeGain; // 1 - (50 + 10) / 100 = 0.4
 * ```
 */

/** One evaluation of a run: cumulative training FLOPs so far and the test loss then. */
export interface CurvePoint {
  flops: number;
  loss: number;
}

/** The metric's parts, so a report can show how the figure was reached. */
export interface ComputeGain {
  /** Baseline's final test loss (`L_b`). */
  baselineLoss: number;
  /** Baseline's training FLOPs (`C_b`: its last point). */
  baselineFlops: number;
  /** FLOPs at which the filtered run first reaches `L_b`; null if it never does. */
  flopsToMatch: number | null;
  /** Rater inference FLOPs charged to the filtered run. */
  raterFlops: number;
  /** `1 - (C_f + C_rater) / C_b`; null when undefined. */
  netComputeGain: number | null;
  /** Same without the rater's cost (`1 - C_f / C_b`); null when undefined. */
  grossComputeGain: number | null;
}

/** A curve the metric cannot be computed on (empty, unsorted, non-finite). */
export class CurveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CurveError";
  }
}

function validate(curve: readonly CurvePoint[], name: string): void {
  if (curve.length === 0) throw new CurveError(`${name} curve has no evaluation points`);
  for (let i = 0; i < curve.length; i++) {
    const { flops, loss } = curve[i];
    if (!Number.isFinite(flops) || !Number.isFinite(loss)) {
      throw new CurveError(`${name} curve point ${i} is not finite (flops=${flops}, loss=${loss})`);
    }
    if (i > 0 && flops < curve[i - 1].flops) {
      throw new CurveError(
        `${name} curve FLOPs must not decrease (point ${i}: ${flops} < ${curve[i - 1].flops})`,
      );
    }
  }
}

/**
 * FLOPs at which `curve` first reaches `target` (loss ≤ target), interpolating linearly in FLOPs
 * between the last point above the target and the first at or below it; null if it never does.
 */
export function flopsToReach(curve: readonly CurvePoint[], target: number): number | null {
  validate(curve, "filtered");
  for (let i = 0; i < curve.length; i++) {
    const p = curve[i];
    if (p.loss > target) continue;
    if (i === 0) return p.flops;
    const prev = curve[i - 1];
    const t = (prev.loss - target) / (prev.loss - p.loss);
    return prev.flops + t * (p.flops - prev.flops);
  }
  return null;
}

/** Net compute gain of `filtered` over `baseline` (see the module doc). */
export function computeGain(
  baseline: readonly CurvePoint[],
  filtered: readonly CurvePoint[],
  raterFlops: number,
): ComputeGain {
  validate(baseline, "baseline");
  if (!(raterFlops >= 0)) throw new CurveError(`rater FLOPs must be ≥ 0, got ${raterFlops}`);
  const last = baseline[baseline.length - 1];
  if (!(last.flops > 0)) {
    throw new CurveError(`baseline's training FLOPs must be > 0, got ${last.flops}`);
  }
  const flopsToMatch = flopsToReach(filtered, last.loss);
  return {
    baselineLoss: last.loss,
    baselineFlops: last.flops,
    flopsToMatch,
    raterFlops,
    netComputeGain: flopsToMatch === null ? null : 1 - (flopsToMatch + raterFlops) / last.flops,
    grossComputeGain: flopsToMatch === null ? null : 1 - flopsToMatch / last.flops,
  };
}

/** Mean, min, max and count of the defined values; `undefined` counts the nulls. */
export interface SeedSummary {
  mean: number | null;
  min: number | null;
  max: number | null;
  /** Sample standard deviation (null with fewer than two defined values). */
  std: number | null;
  /**
   * 95% confidence interval of the mean over seeds: Student's t-interval
   * `mean ± t(0.975, n-1) · std / √n` over the defined values; null with fewer than two.
   */
  ci95: [number, number] | null;
  defined: number;
  undefined: number;
}

/** Two-sided 95% quantiles of Student's t, `t(0.975, df)` for df = 1…30 (then the normal's). */
const T975 = [
  12.706,
  4.303,
  3.182,
  2.776,
  2.571,
  2.447,
  2.365,
  2.306,
  2.262,
  2.228,
  2.201,
  2.179,
  2.16,
  2.145,
  2.131,
  2.12,
  2.11,
  2.101,
  2.093,
  2.086,
  2.08,
  2.074,
  2.069,
  2.064,
  2.06,
  2.056,
  2.052,
  2.048,
  2.045,
  2.042,
];

/** `t(0.975, df)`: the multiplier of a 95% t-interval with `df` degrees of freedom. */
export function tQuantile975(df: number): number {
  if (!(df >= 1)) throw new RangeError(`degrees of freedom must be ≥ 1, got ${df}`);
  return df <= T975.length ? T975[Math.floor(df) - 1] : 1.96;
}

/**
 * Summarises a figure over seeds. A run that never reached the baseline has no gain; the mean is
 * taken over the defined values only and `undefined` says how many were left out, so a report can
 * say so rather than silently averaging a subset.
 */
export function summarizeSeeds(values: readonly (number | null)[]): SeedSummary {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v));
  const n = xs.length;
  if (n === 0) {
    return {
      mean: null,
      min: null,
      max: null,
      std: null,
      ci95: null,
      defined: 0,
      undefined: values.length,
    };
  }
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n < 2 ? null : Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  const half = std === null ? null : tQuantile975(n - 1) * std / Math.sqrt(n);
  return {
    mean,
    min: Math.min(...xs),
    max: Math.max(...xs),
    std,
    ci95: half === null ? null : [mean - half, mean + half],
    defined: n,
    undefined: values.length - n,
  };
}

/**
 * Whether a claim "`a` ≥ `b`" holds over paired seeds: the 95% t-interval of the per-seed
 * differences `a[i] - b[i]` lies wholly at or above 0 (strictly above with `strict`). Any undefined
 * value (a run that never reached the baseline) or fewer than two seeds fails the claim: an
 * interval that cannot be computed cannot clear the bar.
 */
export function pairedClears(
  a: readonly (number | null)[],
  b: readonly (number | null)[],
  strict = false,
): { diff: SeedSummary; pass: boolean } {
  if (a.length !== b.length) {
    throw new RangeError(`paired values differ in count: ${a.length} vs ${b.length}`);
  }
  const d = a.map((x, i) => (x === null || b[i] === null ? null : x - b[i]!));
  const diff = summarizeSeeds(d);
  const lo = diff.ci95?.[0] ?? null;
  return { diff, pass: diff.undefined === 0 && lo !== null && (strict ? lo > 0 : lo >= 0) };
}
