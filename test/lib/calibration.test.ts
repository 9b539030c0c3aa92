import { describe, expect, it } from "vitest";
import {
  acceptProbability,
  CalibrationError,
  deterministicUniform,
  percentileOf,
  quantileCalibration,
  scoreAtPercentile,
  thresholdForKeepFraction,
} from "../../lib/calibration.ts";
import { Rng } from "../../training/rng.ts";

const normals = (n: number, seed: number) => {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.normal());
};

/** C(n, s) p^.. by direct multiplication: fine for small n, the reference for the log-space sum. */
function directAccept(p: number, K: number, B: number) {
  const n = B - 1;
  let total = 0;
  for (let s = 0; s < K; s++) {
    let c = 1;
    for (let j = 0; j < s; j++) c = (c * (n - j)) / (j + 1);
    total += c * (1 - p) ** s * p ** (n - s);
  }
  return total;
}

/** The whole lower-tail sum in log space, every term: O(B), the reference for large B. */
function fullLogSpaceAccept(p: number, K: number, B: number) {
  const n = B - 1;
  const terms: number[] = [];
  let lnC = 0;
  for (let s = 0; s < K; s++) {
    terms.push(lnC + s * Math.log1p(-p) + (n - s) * Math.log(p));
    lnC += Math.log(n - s) - Math.log(s + 1);
  }
  const max = Math.max(...terms);
  return Math.exp(max + Math.log(terms.reduce((a, t) => a + Math.exp(t - max), 0)));
}

describe("quantileCalibration", () => {
  it("stores the 101 percentiles 0..100 of the reference scores", () => {
    const scores = Array.from({ length: 101 }, (_, i) => 100 - i); // unsorted input
    const cal = quantileCalibration(scores);
    expect(cal.samples).toBe(101);
    expect(cal.quantiles).toEqual(Array.from({ length: 101 }, (_, i) => i));
  });

  it("interpolates linearly between order statistics (type 7)", () => {
    const cal = quantileCalibration([4, 1, 3, 2]);
    expect(cal.quantiles[0]).toBe(1);
    expect(cal.quantiles[50]).toBeCloseTo(2.5, 12);
    expect(cal.quantiles[1]).toBeCloseTo(1.03, 12);
    expect(cal.quantiles[100]).toBe(4);
  });

  it("refuses an empty sample and non-finite scores with a CalibrationError", () => {
    expect(() => quantileCalibration([])).toThrow(CalibrationError);
    expect(() => quantileCalibration([1, NaN])).toThrow(/NaN or ±Infinity/);
    expect(() => quantileCalibration([1, Infinity])).toThrow(CalibrationError);
  });
});

describe("thresholdForKeepFraction", () => {
  const sample = normals(10_000, 1);
  const cal = quantileCalibration(sample);

  it.each([0.1, 0.25, 0.5, 0.75, 0.9])(
    "keeps fraction %s of the calibration sample (within 1/n)",
    (f) => {
      const t = thresholdForKeepFraction(cal, f);
      const kept = sample.filter((s) => s >= t).length / sample.length;
      expect(Math.abs(kept - f)).toBeLessThanOrEqual(1 / sample.length + 1e-12);
    },
  );

  it("keeps a between-knots fraction (0.333) to within 0.002 by interpolating the quantiles", () => {
    const t = thresholdForKeepFraction(cal, 0.333);
    const kept = sample.filter((s) => s >= t).length / sample.length;
    expect(Math.abs(kept - 0.333)).toBeLessThan(0.002);
  });

  it("keeps every finite score at fraction 1 and none at fraction 0, with JSON-safe thresholds", () => {
    const all = thresholdForKeepFraction(cal, 1);
    const none = thresholdForKeepFraction(cal, 0);
    expect(-1e30 >= all).toBe(true);
    expect(3.4e38 >= none).toBe(false);
    expect(JSON.parse(JSON.stringify({ all, none }))).toEqual({ all, none });
  });

  it("refuses a fraction outside [0, 1]", () => {
    expect(() => thresholdForKeepFraction(cal, 1.5)).toThrow(/keepFraction must be in \[0, 1\]/);
    expect(() => thresholdForKeepFraction(cal, NaN)).toThrow(CalibrationError);
  });
});

describe("percentileOf", () => {
  const cal = quantileCalibration(normals(10_000, 2));

  it("inverts the calibrated quantile function", () => {
    for (const q of [0, 0.005, 0.1, 0.37, 0.5, 0.999, 1]) {
      expect(percentileOf(cal, scoreAtPercentile(cal, q))).toBeCloseTo(q, 9);
    }
  });

  it("matches the empirical CDF of a fresh sample from the same distribution (within 0.02)", () => {
    const fresh = normals(5_000, 3).sort((a, b) => a - b);
    for (const i of [250, 1000, 2500, 4000, 4750]) {
      expect(Math.abs(percentileOf(cal, fresh[i]) - i / fresh.length)).toBeLessThan(0.02);
    }
  });

  it("is 0 below the calibration's minimum and 1 above its maximum", () => {
    expect(percentileOf(cal, cal.quantiles[0] - 1)).toBe(0);
    expect(percentileOf(cal, cal.quantiles[100] + 1)).toBe(1);
  });

  it("gives a tied score the middle of its tied percentile range", () => {
    // 60% of the reference scores are exactly 0: quantiles 0..59 are 0 (0.99·i <= 59).
    const tied = quantileCalibration([
      ...Array(60).fill(0),
      ...Array.from({ length: 40 }, (_, i) => i + 1),
    ]);
    const last0 = tied.quantiles.lastIndexOf(0);
    expect(percentileOf(tied, 0)).toBeCloseTo(last0 / 2 / 100, 12);
  });
});

describe("acceptProbability", () => {
  it("equals the direct binomial sum for every K of B = 10 (both summation branches)", () => {
    for (const p of [0.01, 0.2, 0.5, 0.77, 0.99]) {
      for (let K = 1; K <= 10; K++) {
        expect(acceptProbability(p, K, 10)).toBeCloseTo(directAccept(p, K, 10), 12);
      }
    }
  });

  it("equals the simulated rate at which a record at percentile p lands in the top K of B", () => {
    const rng = new Rng(9);
    const B = 64;
    const K = 16;
    const trials = 20_000;
    for (const p of [0.6, 0.75, 0.8, 0.9]) {
      let accepted = 0;
      for (let t = 0; t < trials; t++) {
        // The other B-1 records' scores are uniform percentiles; the record survives if fewer than
        // K of them outrank it.
        let above = 0;
        for (let j = 0; j < B - 1; j++) if (rng.next() > p) above++;
        if (above < K) accepted++;
      }
      const expected = acceptProbability(p, K, B);
      const sigma = Math.sqrt((expected * (1 - expected)) / trials);
      expect(Math.abs(accepted / trials - expected)).toBeLessThanOrEqual(4 * sigma + 1e-3);
    }
  });

  it("keeps K/B of uniformly distributed percentiles on average", () => {
    for (const [K, B] of [[1, 4], [16, 64], [192, 256], [900, 1000]]) {
      const steps = 20_000;
      let mean = 0;
      for (let i = 0; i < steps; i++) mean += acceptProbability((i + 0.5) / steps, K, B) / steps;
      expect(mean).toBeCloseTo(K / B, 4);
    }
  });

  it("stays finite and exact for B in the thousands (matches the normal approximation at the median)", () => {
    const B = 5000;
    // P(Bin(4999, 0.2) <= 999) ≈ Φ((999.5 - 999.8) / sqrt(4999·0.2·0.8)) ≈ 0.4958.
    expect(acceptProbability(0.8, 1000, B)).toBeCloseTo(0.4958, 2);
    let prev = 0;
    for (let i = 0; i <= 100; i++) {
      const a = acceptProbability(i / 100, 1000, B);
      expect(Number.isFinite(a) && a >= prev - 1e-12 && a <= 1).toBe(true);
      prev = a;
    }
    expect(acceptProbability(0.5, 1, 100_000)).toBe(0);
    expect(acceptProbability(0.999999, 99_999, 100_000)).toBeCloseTo(1, 12);
  });

  it("equals the full O(B) log-space sum for B = 3000 (the truncated walk loses nothing)", () => {
    for (const K of [1, 30, 750, 1500, 2250, 2999]) {
      for (const p of [0.05, 0.25, 0.5, 0.74, 0.75, 0.76, 0.99]) {
        expect(acceptProbability(p, K, 3000)).toBeCloseTo(fullLogSpaceAccept(p, K, 3000), 10);
      }
    }
  });

  it("satisfies the complement identity A(p, K, B) + A(1-p, B-K, B) = 1", () => {
    for (const [K, B] of [[10, 3000], [2000, 3000], [1499, 3000]]) {
      for (const p of [0.3, 0.5, 0.6667, 0.9]) {
        expect(acceptProbability(p, K, B) + acceptProbability(1 - p, B - K, B)).toBeCloseTo(1, 10);
      }
    }
  });

  it("accepts surely at K = B or p = 1, never at p = 0 with K < B", () => {
    expect(acceptProbability(0.3, 8, 8)).toBe(1);
    expect(acceptProbability(1, 1, 256)).toBe(1);
    expect(acceptProbability(0, 255, 256)).toBe(0);
  });

  it("refuses K outside [1, B], a non-integer B, or p outside [0, 1]", () => {
    expect(() => acceptProbability(0.5, 0, 10)).toThrow(/K must be an integer in \[1, B=10\]/);
    expect(() => acceptProbability(0.5, 11, 10)).toThrow(CalibrationError);
    expect(() => acceptProbability(0.5, 1, 2.5)).toThrow(/batch size B/);
    expect(() => acceptProbability(1.2, 1, 10)).toThrow(/percentile p/);
  });
});

describe("deterministicUniform", () => {
  it("returns the same number for the same id and seed, and a pinned value across versions", () => {
    expect(deterministicUniform("doc-42", 0)).toBe(deterministicUniform("doc-42", 0));
    expect(deterministicUniform("doc-42", 0)).toBe(PINNED);
  });

  it("gives different numbers for different seeds and for ids differing in one character", () => {
    expect(deterministicUniform("doc-42", 1)).not.toBe(deterministicUniform("doc-42", 0));
    expect(deterministicUniform("doc-43", 0)).not.toBe(deterministicUniform("doc-42", 0));
  });

  it("is uniform on [0, 1) over many ids (max CDF deviation < 0.015)", () => {
    const n = 20_000;
    const u = Array.from({ length: n }, (_, i) => deterministicUniform(`rec-${i}`, 7)).sort(
      (a, b) => a - b,
    );
    expect(u[0]).toBeGreaterThanOrEqual(0);
    expect(u[n - 1]).toBeLessThan(1);
    let ks = 0;
    for (let i = 0; i < n; i++) ks = Math.max(ks, Math.abs(u[i] - i / n));
    expect(ks).toBeLessThan(0.015);
  });

  it("hashes ids by their UTF-8 bytes (non-ASCII ids are distinct and stable)", () => {
    expect(deterministicUniform("naïve", 0)).not.toBe(deterministicUniform("naive", 0));
    expect(deterministicUniform("日本", 3)).toBe(deterministicUniform("日本", 3));
  });

  it("decides per-record top-K-of-B so that K/B of a uniformly calibrated corpus is kept", () => {
    const cal = quantileCalibration(Array.from({ length: 1001 }, (_, i) => i / 1000));
    const K = 64;
    const B = 256;
    const n = 20_000;
    const rng = new Rng(4);
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const p = percentileOf(cal, rng.next());
      if (deterministicUniform(`r${i}`, 0) < acceptProbability(p, K, B)) kept++;
    }
    expect(Math.abs(kept / n - K / B)).toBeLessThan(0.015);
  });
});

// Changing the hash would change every past keep decision: this value must never change.
const PINNED = 0.24444346842582954;
