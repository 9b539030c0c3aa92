import { describe, expect, it } from "vitest";
import {
  computeGain,
  CurveError,
  flopsToReach,
  summarizeSeeds,
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
      defined: 0,
      undefined: 2,
    });
  });
});
