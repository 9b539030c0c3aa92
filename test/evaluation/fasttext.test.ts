import { describe, expect, it } from "vitest";
import { fastTextLine, trainFastTextClassifier } from "../../evaluation/fasttext.ts";
import { classifierFilter, keepTop } from "../../evaluation/filters.ts";
import type { EvalRecord } from "../../evaluation/data.ts";
import { fastTextFlops } from "../../evaluation/evaluation.ts";
import { loadBrown } from "../../corpus/prepare.ts";
import { Rng } from "../../training/rng.ts";

/** ROC AUC: the chance a random positive scores above a random negative (ties count half). */
function auc(pos: ArrayLike<number>, neg: ArrayLike<number>): number {
  let wins = 0;
  for (let i = 0; i < pos.length; i++) {
    for (let j = 0; j < neg.length; j++) {
      wins += pos[i] > neg[j] ? 1 : pos[i] === neg[j] ? 0.5 : 0;
    }
  }
  return wins / (pos.length * neg.length);
}

/** Random bytes read as Latin-1 text, the length of a paragraph. */
function randomBytes(rng: Rng, n: number): string {
  return Array.from({ length: n }, () => String.fromCharCode(rng.int(256))).join("");
}

describe("fastText classifier (DCLM-style baseline)", () => {
  const brown = loadBrown().slice(0, 400).map((p) => p.text);
  const rng = new Rng(3);
  const junk = brown.map((t) => randomBytes(rng, t.length));
  const [trainPos, testPos] = [brown.slice(0, 200), brown.slice(200)];
  const [trainNeg, testNeg] = [junk.slice(0, 200), junk.slice(200)];

  it(
    "separates held-out prose from random bytes (AUC > 0.9) and is deterministic for a seed",
    async () => {
      const a = await trainFastTextClassifier(trainPos, trainNeg, { seed: 5 });
      const b = await trainFastTextClassifier(trainPos, trainNeg, { seed: 5 });
      try {
        const pa = a.score(testPos), na = a.score(testNeg);
        expect(auc(pa, na)).toBeGreaterThan(0.9);
        for (const x of [...pa, ...na]) expect(x >= 0 && x <= 1).toBe(true);
        expect(b.score(testPos)).toEqual(pa);
        expect(b.score(testNeg)).toEqual(na);
      } finally {
        a.dispose();
        b.dispose();
      }
    },
    120_000,
  );

  it("refuses a training set without both classes", async () => {
    await expect(trainFastTextClassifier(trainPos, [])).rejects.toThrow(/both classes/);
  });

  it("reads a document as one line, as DCLM feeds fastText", () => {
    expect(fastTextLine("a\nb\r\n\nc")).toBe("a b c");
  });

  it("charges one dim-wide add per word and bigram, the average and a two-label output", () => {
    // 3 words + end of line = 4 tokens, 3 bigrams: 7 adds of 100, the average, 2 × 2 × 100.
    expect(fastTextFlops("a b\nc", 100)).toBe(7 * 100 + 100 + 400);
  });
});

describe("classifier filter", () => {
  const records: EvalRecord[] = Array.from({ length: 10 }, (_, i) => ({
    id: `r${i}`,
    text: `text ${i}`,
    source: "prose",
    shard: "s",
    line: i,
  }));

  it("drops exactly round(n·discard) records, the lowest P(hq) first, ties by position", () => {
    const scores = Float64Array.from([0.9, 0.1, 0.5, 0.5, 0.2, 0.8, 0.5, 0.3, 0.7, 0.6]);
    const out = classifierFilter(records, { scores, inferenceFlops: 123 }, 0.45);
    // round(4.5) = 5 dropped: 0.1, 0.2, 0.3, then the first two of the three 0.5s.
    expect(out.kept.map((r) => r.id)).toEqual(["r0", "r5", "r6", "r8", "r9"]);
    expect(out.inferenceFlops).toBe(123);
    for (const d of [0, 0.1, 0.25, 0.5, 0.75, 1]) {
      expect(keepTop(records, scores, d).length).toBe(10 - Math.round(10 * d));
    }
  });
});
