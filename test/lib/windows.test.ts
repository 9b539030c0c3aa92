import { describe, expect, it } from "vitest";
import { aggregateScores, cutWindows, windowSpans } from "../../lib/windows.ts";

describe("cutWindows", () => {
  it("appends each window's bytes, as views of the record, after what the list held", () => {
    const bytes = Uint8Array.from({ length: 10 }, (_, i) => i);
    const into = [Uint8Array.of(99)];
    const cut = cutWindows(bytes, { window: 4, stride: 4, cap: 9 }, into);
    expect(cut).toEqual(windowSpans(10, { window: 4, stride: 4, cap: 9 }));
    expect(into.map((w) => [...w])).toEqual([[99], [0, 1, 2, 3], [4, 5, 6, 7], [8]]);
    expect(into[1].buffer).toBe(bytes.buffer);
  });
});

describe("windowSpans", () => {
  it("tiles a record exactly when stride equals the window", () => {
    expect(windowSpans(150, { window: 64, stride: 64, cap: 16384 })).toEqual({
      spans: [[0, 64], [64, 128], [128, 150]],
      truncated: false,
    });
  });

  it("stops at the cap and says the record was cut", () => {
    const { spans, truncated } = windowSpans(1000, { window: 64, stride: 64, cap: 200 });
    expect(spans).toEqual([[0, 64], [64, 128], [128, 192], [192, 200]]);
    expect(truncated).toBe(true);
  });

  it("overlaps with a shorter stride and does not re-read the tail", () => {
    expect(windowSpans(100, { window: 64, stride: 32, cap: 16384 }).spans).toEqual([
      [0, 64],
      [32, 96],
      [64, 100],
    ]);
    expect(windowSpans(64, { window: 64, stride: 32, cap: 16384 }).spans).toEqual([[0, 64]]);
  });

  it("gives an empty record one empty window", () => {
    expect(windowSpans(0, { window: 64, stride: 64, cap: 16 })).toEqual({
      spans: [[0, 0]],
      truncated: false,
    });
  });

  it("refuses a stride longer than the window", () => {
    expect(() => windowSpans(10, { window: 8, stride: 16, cap: 100 })).toThrow(/stride/);
  });
});

describe("aggregateScores", () => {
  it("mean weighs windows by the new bytes they cover", () => {
    expect(aggregateScores([1, 4], [[0, 64], [64, 96]], "mean")).toBeCloseTo((64 + 4 * 32) / 96);
    // the second window adds 32 new bytes, the third none
    expect(aggregateScores([0, 3, 100], [[0, 64], [32, 96], [40, 90]], "mean")).toBeCloseTo(
      (3 * 32) / 96,
    );
    expect(aggregateScores([-2], [[0, 0]], "mean")).toBe(-2);
  });

  it("min is the worst window", () => {
    expect(aggregateScores([1, -3, 2], [[0, 1], [1, 2], [2, 3]], "min")).toBe(-3);
  });

  it("refuses scores that do not match the windows", () => {
    expect(() => aggregateScores([1], [[0, 1], [1, 2]], "mean")).toThrow(/2 windows/);
  });
});
