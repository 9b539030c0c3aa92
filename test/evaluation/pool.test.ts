import { describe, expect, it } from "vitest";
import { pool } from "../../evaluation/evaluation.ts";

describe("the evaluation's pool of downstream runs (p-map)", () => {
  it("runs every item with at most `jobs` at once", async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    await pool([1, 2, 3, 4, 5, 6, 7], 3, async (i) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 10 + (i % 3) * 5));
      running--;
      done.push(i);
    });
    expect(peak).toBe(3);
    expect(done.toSorted()).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it("a failure lets the other runs finish, then rejects with the first failure", async () => {
    const done: number[] = [];
    const result = pool([1, 2, 3, 4, 5], 2, async (i) => {
      await new Promise((r) => setTimeout(r, i * 5));
      if (i === 2 || i === 4) throw new Error(`run ${i} failed`);
      done.push(i);
    });
    await expect(result).rejects.toThrow(/^run 2 failed$/);
    expect(done.toSorted()).toEqual([1, 3, 5]);
  });

  it("jobs below 1 still run one at a time", async () => {
    let peak = 0;
    let running = 0;
    await pool([1, 2, 3], 0, async () => {
      peak = Math.max(peak, ++running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
    });
    expect(peak).toBe(1);
  });
});
