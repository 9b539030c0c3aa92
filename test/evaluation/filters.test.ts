import { describe, expect, it } from "vitest";
import {
  c4Filter,
  countSentences,
  gopherFilter,
  gopherRepetition,
  heuristicFilter,
} from "../../evaluation/heuristics.ts";
import {
  keepMiddle,
  keepRatesBySource,
  noCorruptOracleFilter,
  oracleFilter,
  perplexityFilter,
  randomFilter,
} from "../../evaluation/filters.ts";
import type { EvalRecord } from "../../evaluation/data.ts";

const prose =
  "The committee met on Tuesday to review the budget. It found that the city had spent more than it planned. " +
  "The members agreed to meet again in a month. They asked the mayor to explain the overrun with figures. " +
  "Nobody expected the matter to be settled quickly, and the newspapers said so with some glee.";

describe("C4 rules", () => {
  it("removes lines without terminal punctuation or with fewer than 3 words, keeping the rest", () => {
    const text = `Subject: budget\nClick here\n${prose}\nAll rights reserved`;
    const r = c4Filter(text);
    expect(r).toEqual({ keep: true, text: prose });
  });

  it("removes lines that mention javascript or cookie policies, and citation markers", () => {
    const r = c4Filter(
      `Please enable JavaScript to view this page.\nThis site uses cookies to work.\n${prose} [12]`,
    );
    expect(r.keep && r.text).toBe(prose);
  });

  it("drops a record with lorem ipsum, a curly bracket, or fewer than 3 sentences left", () => {
    expect(c4Filter(`${prose} Lorem ipsum dolor sit amet.`)).toEqual({
      keep: false,
      reason: "c4: lorem ipsum",
    });
    expect(c4Filter(`${prose} function f() { return 1; }`)).toEqual({
      keep: false,
      reason: "c4: curly bracket",
    });
    expect(c4Filter("One sentence here. Two sentences here.")).toEqual({
      keep: false,
      reason: "c4: fewer than 3 sentences",
    });
  });

  it("counts sentences ending in . ! or ?", () => {
    expect(countSentences('He left. "Why?" she asked! Fine.')).toBe(4);
    expect(countSentences("no end")).toBe(0);
  });
});

describe("Gopher rules", () => {
  it("keeps ordinary prose of 50+ words", () => {
    expect(gopherFilter(prose)).toEqual({ keep: true, text: prose });
  });

  it("drops a record under 50 words", () => {
    expect(gopherFilter("The cat sat on the mat with the dog.")).toEqual({
      keep: false,
      reason: "gopher: fewer than 50 words",
    });
  });

  it("drops a record whose mean word length is outside [3, 10]", () => {
    const long = Array.from({ length: 60 }, () => "internationalisation").join(" ") + " the and";
    expect(gopherFilter(long)).toEqual({
      keep: false,
      reason: "gopher: mean word length outside [3, 10]",
    });
  });

  it("drops a record with too many hashes or ellipses per word", () => {
    const hashy = prose + " " + Array.from({ length: 10 }, () => "#tag").join(" ");
    expect(gopherFilter(hashy)).toEqual({ keep: false, reason: "gopher: symbol-to-word ratio" });
  });

  it("drops a record where under 80% of words contain a letter", () => {
    const numbers = prose + " " + Array.from({ length: 40 }, (_, i) => String(1000 + i)).join(" ");
    expect(gopherFilter(numbers)).toEqual({
      keep: false,
      reason: "gopher: too few words with a letter",
    });
  });

  it("drops a record with fewer than two stop words", () => {
    const noStop = Array.from({ length: 60 }, (_, i) => `word${i}x`).join(" ");
    expect(gopherFilter(noStop)).toEqual({
      keep: false,
      reason: "gopher: fewer than 2 stop words",
    });
  });

  it("drops mostly-bullet and mostly-ellipsis line lists", () => {
    const bullets = Array.from(
      { length: 12 },
      (_, i) => `- item number ${i} of the list with the words`,
    ).join("\n");
    expect(gopherFilter(bullets)).toEqual({ keep: false, reason: "gopher: bullet lines" });
    const ellipses = Array.from(
      { length: 12 },
      (_, i) => `and then the story ${i} went on and on...`,
    ).join("\n");
    expect(gopherFilter(ellipses).keep).toBe(false);
  });

  it("flags repeated lines and repeated n-grams", () => {
    expect(gopherRepetition(`${prose}\nBuy now\nBuy now\nBuy now`)).toBe("duplicate lines");
    const repeated = Array.from({ length: 8 }, () => "the quick brown fox jumps over the lazy dog")
      .join(" ");
    expect(gopherRepetition(repeated)).toMatch(/gram character fraction/);
    expect(gopherRepetition(prose)).toBeNull();
  });

  it("applies C4 then Gopher: a raw email's header lines are removed and its prose body kept", () => {
    const email = `From: a@b.c\nTo: d@e.f\nSubject: hello\n\n${prose}\n-- \nsig`;
    expect(heuristicFilter(email)).toEqual({ keep: true, text: prose });
  });
});

const rec = (i: number, source: string): EvalRecord => ({
  id: `r${i}`,
  text: `t${i}`,
  source,
  shard: "s",
  line: i + 1,
});

describe("baseline filters", () => {
  const records = Array.from(
    { length: 100 },
    (_, i) => rec(i, i % 4 === 0 ? "prose" : i % 4 === 1 ? "email/ham" : "corrupt/ocr"),
  );

  it("random dropping removes exactly the fraction, deterministically for a seed", () => {
    const a = randomFilter(records, 0.25, 1);
    expect(a.kept.length).toBe(75);
    expect(randomFilter(records, 0.25, 1).kept).toEqual(a.kept);
    expect(randomFilter(records, 0.25, 2).kept).not.toEqual(a.kept);
    expect(a.inferenceFlops).toBe(0);
  });

  it("the oracle keeps exactly the clean prose", () => {
    const kept = oracleFilter(records).kept;
    expect(kept.length).toBe(25);
    expect(kept.every((r) => r.source === "prose")).toBe(true);
  });

  it("the no-corrupt oracle drops exactly the corrupted records and keeps prose and email", () => {
    const kept = noCorruptOracleFilter(records).kept;
    expect(kept.length).toBe(records.filter((r) => !r.source.startsWith("corrupt/")).length);
    expect(kept.some((r) => r.source.startsWith("email/"))).toBe(true);
    expect(kept.some((r) => r.source.startsWith("corrupt/"))).toBe(false);
  });

  it("keepMiddle drops half the discard from each tail of the scores", () => {
    const items = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const scores = [9, 0, 8, 1, 7, 2, 6, 3, 5, 4]; // item i has score scores[i]
    // Discard 40%: the 2 lowest (items 1, 3) and the 2 highest (items 0, 2) go.
    expect(keepMiddle(items, scores, 0.4)).toEqual([4, 5, 6, 7, 8, 9]);
  });

  it("perplexity filtering keeps the middle of the NLL distribution and charges its inference", () => {
    const nll = Float64Array.from(records, (_, i) => i);
    const out = perplexityFilter(records, { nll, inferenceFlops: 123, trainLoss: 1 }, 0.5);
    expect(out.kept.map((r) => r.id)).toEqual(records.slice(25, 75).map((r) => r.id));
    expect(out.inferenceFlops).toBe(123);
  });

  it("keep rates are per source shares of the original records", () => {
    const kept = records.filter((r) => r.source === "prose" || r.line % 2 === 0);
    const rates = keepRatesBySource(records, kept);
    expect(rates.prose).toBe(1);
    expect(rates["email/ham"]).toBeCloseTo(
      kept.filter((r) => r.source === "email/ham").length / 25,
      12,
    );
  });
});
