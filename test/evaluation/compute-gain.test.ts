import { describe, expect, it } from "vitest";
import {
  computeGain,
  CurveError,
  flopsToReach,
  pairedClears,
  summarizeSeeds,
  tQuantile975,
} from "../../evaluation/compute-gain.ts";

const baseline = [
  { flops: 0, loss: 6 },
  { flops: 100, loss: 4 },
  { flops: 200, loss: 3 },
  { flops: 400, loss: 2 },
];

describe("computeGain", () => {
  it("uses the filtered run's FLOPs at an eval point that exactly hits the baseline's final loss", () => {
    const filtered = [{ flops: 0, loss: 6 }, { flops: 100, loss: 3 }, { flops: 200, loss: 2 }, {
      flops: 400,
      loss: 1.5,
    }];
    const g = computeGain(baseline, filtered, 0);
    expect(g.baselineLoss).toBe(2);
    expect(g.baselineFlops).toBe(400);
    expect(g.flopsToMatch).toBe(200);
    expect(g.netComputeGain).toBeCloseTo(0.5, 12);
  });

  it("interpolates linearly in FLOPs between the eval points that bracket the baseline's loss", () => {
    // Crosses 2.0 a quarter of the way from (100, 2.5) to (300, 0.5): 100 + 0.25 * 200 = 150.
    const filtered = [{ flops: 0, loss: 6 }, { flops: 100, loss: 2.5 }, { flops: 300, loss: 0.5 }];
    const g = computeGain(baseline, filtered, 0);
    expect(g.flopsToMatch).toBeCloseTo(150, 12);
    expect(g.netComputeGain).toBeCloseTo(1 - 150 / 400, 12);
  });

  it("charges the rater's inference FLOPs to the filtered run", () => {
    const filtered = [{ flops: 0, loss: 6 }, { flops: 200, loss: 2 }];
    const g = computeGain(baseline, filtered, 40);
    expect(g.grossComputeGain).toBeCloseTo(0.5, 12);
    expect(g.netComputeGain).toBeCloseTo(1 - 240 / 400, 12);
  });

  it("is undefined (null) when the filtered run never reaches the baseline's final loss", () => {
    const filtered = [{ flops: 0, loss: 6 }, { flops: 200, loss: 2.5 }, {
      flops: 400,
      loss: 2.0001,
    }];
    const g = computeGain(baseline, filtered, 0);
    expect(g.flopsToMatch).toBeNull();
    expect(g.netComputeGain).toBeNull();
    expect(g.grossComputeGain).toBeNull();
  });

  it("is negative when the filtered run needs more compute than the baseline (slower, or the rater costs too much)", () => {
    const slower = [{ flops: 0, loss: 6 }, { flops: 400, loss: 2.5 }, { flops: 600, loss: 1.5 }];
    expect(computeGain(baseline, slower, 0).netComputeGain).toBeCloseTo(1 - 500 / 400, 12);
    const same = baseline;
    expect(computeGain(baseline, same, 100).netComputeGain).toBeCloseTo(-0.25, 12);
  });

  it("takes the first crossing, not a later one, when the filtered curve goes back up", () => {
    const bumpy = [{ flops: 0, loss: 6 }, { flops: 100, loss: 1.9 }, { flops: 200, loss: 2.4 }, {
      flops: 300,
      loss: 1,
    }];
    // First reaches 2.0 between 0 (6) and 100 (1.9): 0 + (6 - 2) / (6 - 1.9) * 100.
    expect(flopsToReach(bumpy, 2)).toBeCloseTo((4 / 4.1) * 100, 12);
  });

  it("rejects empty, non-finite or FLOPs-decreasing curves with a CurveError", () => {
    expect(() => computeGain([], baseline, 0)).toThrow(CurveError);
    expect(() => computeGain(baseline, [{ flops: 0, loss: NaN }], 0)).toThrow(/not finite/);
    expect(() => computeGain(baseline, [{ flops: 10, loss: 3 }, { flops: 5, loss: 2 }], 0)).toThrow(
      /must not decrease/,
    );
    expect(() => computeGain([{ flops: 0, loss: 2 }], baseline, 0)).toThrow(/> 0/);
  });
});

describe("summarizeSeeds", () => {
  it("averages the defined gains and counts the runs that never reached the baseline", () => {
    const s = summarizeSeeds([0.3, null, 0.5]);
    expect(s.mean).toBeCloseTo(0.4, 12);
    expect(s.min).toBe(0.3);
    expect(s.max).toBe(0.5);
    expect(s.std).toBeCloseTo(Math.sqrt(0.02), 12);
    expect(s.defined).toBe(2);
    expect(s.undefined).toBe(1);
  });

  it("returns nulls when no seed reached the baseline", () => {
    expect(summarizeSeeds([null, null])).toEqual({
      mean: null,
      min: null,
      max: null,
      std: null,
      ci95: null,
      defined: 0,
      undefined: 2,
    });
  });

  it("gives the 95% t-interval over seeds: mean ± t(0.975, n-1)·s/√n", () => {
    const s = summarizeSeeds([0.2, 0.3, 0.4]);
    // s = 0.1, n = 3, t(0.975, 2) = 4.303.
    const half = 4.303 * 0.1 / Math.sqrt(3);
    expect(s.ci95![0]).toBeCloseTo(0.3 - half, 12);
    expect(s.ci95![1]).toBeCloseTo(0.3 + half, 12);
    expect(summarizeSeeds([0.2]).ci95).toBeNull();
    expect(tQuantile975(1)).toBe(12.706);
    expect(tQuantile975(30)).toBe(2.042);
    expect(tQuantile975(200)).toBe(1.96);
  });
});

describe("pairedClears", () => {
  it("holds only when the interval of the per-seed differences clears zero", () => {
    // Differences 0.1, 0.12, 0.14: mean 0.12, s 0.02, half-width 4.303·0.02/√3 ≈ 0.0497.
    const ok = pairedClears([0.4, 0.42, 0.44], [0.3, 0.3, 0.3]);
    expect(ok.pass).toBe(true);
    expect(ok.diff.mean).toBeCloseTo(0.12, 12);
    // Same mean difference, but spread wide enough that the interval reaches below zero.
    const wide = pairedClears([0.5, 0.3, 0.46], [0.3, 0.3, 0.3]);
    expect(wide.diff.mean).toBeCloseTo(0.12, 12);
    expect(wide.diff.ci95![0]).toBeLessThan(0);
    expect(wide.pass).toBe(false);
  });

  it("fails with an undefined seed, with one seed, and (strict) on an interval touching zero", () => {
    expect(pairedClears([0.4, null, 0.5], [0, 0, 0]).pass).toBe(false);
    expect(pairedClears([0.4], [0]).pass).toBe(false);
    expect(pairedClears([0.1, 0.1], [0.1, 0.1]).pass).toBe(true);
    expect(pairedClears([0.1, 0.1], [0.1, 0.1], true).pass).toBe(false);
    expect(() => pairedClears([1, 2], [1])).toThrow(RangeError);
  });
});
