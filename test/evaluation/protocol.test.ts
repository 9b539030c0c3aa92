import { describe, expect, it } from "vitest";
import { MemoryStorage } from "../../lib/storage.ts";
import { encodeJsonlGz } from "../../lib/records.ts";
import { excerpt, hasObjects, loadRecords } from "../../evaluation/data.ts";
import { keepRatesByPosition } from "../../evaluation/filters.ts";
import { unseenKeepRates } from "../../evaluation/evaluation.ts";
import type { EvalRecord } from "../../evaluation/data.ts";

const rec = (line: number, source: string, position?: "head" | "body"): EvalRecord => ({
  id: `r${line}`,
  text: "x",
  source,
  position,
  shard: "s",
  line,
});

describe("loadRecords reads the corpus's damage and position fields defensively", () => {
  it("keeps well-formed fields and leaves malformed or absent ones undefined", async () => {
    const storage = new MemoryStorage();
    await storage.write(
      "mem://c/train/shard-00000.jsonl.gz",
      await encodeJsonlGz([
        {
          id: "a",
          text: "clean head, junk body",
          source: "corrupt/x",
          damage: { start: 12, end: 21 },
          position: "body",
        },
        {
          id: "b",
          text: "junk",
          source: "corrupt/x",
          damage: { start: 5, end: 2 },
          position: "middle",
        },
        { id: "c", text: "prose", source: "prose" },
        { id: "d", text: "junk", damage: "0-4", position: "head" },
      ]),
    );
    const rs = await loadRecords(storage, "mem://c/train/");
    expect(rs.map((r) => [r.id, r.source, r.damage, r.position])).toEqual([
      ["a", "corrupt/x", { start: 12, end: 21 }, "body"],
      ["b", "corrupt/x", undefined, undefined],
      ["c", "prose", undefined, undefined],
      ["d", "unknown", undefined, "head"],
    ]);
    expect(await hasObjects(storage, "mem://c/train/")).toBe(true);
    expect(await hasObjects(storage, "mem://c/unseen/")).toBe(false);
  });
});

describe("excerpt", () => {
  it("shows the head of an undamaged record and the junk (from 40 bytes before it) of a damaged one", () => {
    const text = "p".repeat(100) + "JUNK".repeat(10);
    expect(excerpt({ text }, 20)).toBe("p".repeat(20));
    expect(excerpt({ text, damage: { start: 100, end: 140 } }, 50)).toBe(
      "…" + "p".repeat(40) + "JUNKJUNKJU",
    );
    // Junk at the head: no ellipsis.
    expect(excerpt({ text: "JUNK rest", damage: { start: 0, end: 4 } }, 4)).toBe("JUNK");
  });

  it("cuts at byte offsets of UTF-8 text, marking a split character", () => {
    // "é" is 2 bytes: the window starting at byte 1 begins inside it.
    const text = "é" + "a".repeat(40) + "JUNK";
    expect(excerpt({ text, damage: { start: 41, end: 46 } }, 3)).toBe("…\uFFFDaa");
  });
});

describe("keepRatesByPosition", () => {
  it("splits each source's keep rate by junk position, n/a where a record has none", () => {
    const all = [
      rec(1, "corrupt/hex", "head"),
      rec(2, "corrupt/hex", "head"),
      rec(3, "corrupt/hex", "body"),
      rec(4, "corrupt/hex", "body"),
      rec(5, "prose"),
      rec(6, "prose"),
    ];
    // Kept records may carry rewritten text (the heuristic filter): matched by shard and line.
    const kept = [{ ...all[0], text: "rewritten" }, all[2], all[3], all[4]];
    expect(keepRatesByPosition(all, kept)).toEqual({
      "corrupt/hex": { body: 1, head: 0.5 },
      prose: { "n/a": 0.5 },
    });
  });
});

describe("unseenKeepRates", () => {
  it("keeps a record when its score reaches the train split's threshold at each fraction", () => {
    const records = [
      rec(1, "unseen/hex"),
      rec(2, "unseen/hex"),
      rec(3, "prose"),
      rec(4, "prose"),
      rec(5, "prose"),
    ];
    const scores: Record<string, number> = { r1: 0.1, r2: 0.5, r3: 0.5, r4: 0.9, r5: 0.7 };
    const u = unseenKeepRates(records, (r) => scores[r.id], {
      "0.25": 0.5,
      "0.5": 0.8,
      "0.75": null,
    });
    expect(u.bySource).toEqual({
      prose: { count: 3, meanScore: (0.5 + 0.9 + 0.7) / 3, keep: { "0.25": 1, "0.5": 1 / 3 } },
      "unseen/hex": { count: 2, meanScore: 0.3, keep: { "0.25": 0.5, "0.5": 0 } },
    });
  });

  it("leaves out records the manifests did not score", () => {
    const u = unseenKeepRates(
      [rec(1, "prose"), rec(2, "prose")],
      (r) => (r.id === "r1" ? 1 : undefined),
      {
        "0.5": 0,
      },
    );
    expect(u.bySource).toEqual({ prose: { count: 1, meanScore: 1, keep: { "0.5": 1 } } });
  });
});
