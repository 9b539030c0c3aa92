/** Elementwise closeness of float results, relative to the expected values' largest magnitude. */
import { expect } from "vitest";

/**
 * Asserts `actual` has `expected`'s length and each element is within `relTol` times the largest
 * |expected| of it (a scale, not a per-element ratio: near-zero elements would otherwise demand
 * exact float agreement). The failing index is named.
 */
export function expectClose(actual: Float32Array, expected: Float32Array, relTol: number) {
  expect(actual.length).toBe(expected.length);
  const scale = Math.max(...expected.map(Math.abs));
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i]), `[${i}]`).toBeLessThanOrEqual(relTol * scale);
  }
}
