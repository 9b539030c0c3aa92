/** The pure parts of scoring: tokenising a record's head, and the keep/drop rule of each policy. */
import { describe, expect, it } from "vitest";
import { headBytes } from "../../lib/bytes.ts";
import { makeDecider } from "../../functions/score.ts";
import { quantileCalibration } from "../../lib/calibration.ts";
import { Rng } from "../../training/rng.ts";

const calibration = quantileCalibration(Array.from({ length: 1001 }, (_, i) => i / 1000));

describe("headBytes", () => {
  it("equals the full UTF-8 encoding cut at seqLen, for 1- to 4-byte characters at every cut", () => {
    const enc = new TextEncoder();
    const chars = ["a", "é", "€", "😀", "日", " "];
    const rng = new Rng(3);
    for (let t = 0; t < 3000; t++) {
      let s = "";
      const n = rng.int(40);
      for (let i = 0; i < n; i++) s += chars[rng.int(chars.length)];
      for (const seqLen of [1, 2, 3, 4, 5, 7, 16, 33]) {
        expect(headBytes(s, seqLen)).toEqual(enc.encode(s).subarray(0, seqLen));
      }
    }
  });
});

describe("policies", () => {
  it("keepFraction keeps scores at or above the calibration's (1-f) quantile", () => {
    const d = makeDecider({ kind: "keepFraction", fraction: 0.25 }, calibration);
    expect(d.threshold).toBeCloseTo(0.75, 12);
    expect(d.keep("a", 0.76)).toBe(true);
    expect(d.keep("a", 0.74)).toBe(false);
  });

  it("keepFraction 1 keeps everything and 0 nothing, with thresholds that survive JSON", () => {
    const all = makeDecider({ kind: "keepFraction", fraction: 1 }, calibration);
    expect(all.threshold).toBe(-Number.MAX_VALUE);
    expect(all.keep("a", -1e9)).toBe(true);
    const none = makeDecider({ kind: "keepFraction", fraction: 0 }, calibration);
    expect(none.keep("a", 1e9)).toBe(false);
    expect(JSON.parse(JSON.stringify(none.threshold))).toBe(Number.MAX_VALUE);
  });

  it("threshold keeps raw scores at or above it", () => {
    const d = makeDecider({ kind: "threshold", threshold: 0.5 }, calibration);
    expect(d.threshold).toBe(0.5);
    expect([d.keep("a", 0.5), d.keep("a", 0.4999)]).toEqual([true, false]);
  });

  it("topK keeps about the expected share, the same ids every time, and more of high scorers", () => {
    const d = makeDecider({ kind: "topK", k: 2, b: 4, seed: 5 }, calibration);
    expect(d.threshold).toBeNull();
    const rng = new Rng(8);
    let kept = 0;
    let keptHigh = 0;
    let keptLow = 0;
    const n = 20000;
    const decisions: boolean[] = [];
    for (let i = 0; i < n; i++) {
      const score = rng.next(); // uniform, like the calibration
      const keep = d.keep(`id-${i}`, score);
      decisions.push(keep);
      if (keep) kept++;
      if (keep && score > 0.8) keptHigh++;
      if (keep && score < 0.2) keptLow++;
    }
    // Top-2-of-4 keeps half of a batch in expectation.
    expect(Math.abs(kept / n - 0.5)).toBeLessThan(0.02);
    expect(keptHigh).toBeGreaterThan(5 * keptLow);
    const again = makeDecider({ kind: "topK", k: 2, b: 4, seed: 5 }, calibration);
    const rng2 = new Rng(8);
    for (let i = 0; i < n; i++) expect(again.keep(`id-${i}`, rng2.next())).toBe(decisions[i]);
  });
});
