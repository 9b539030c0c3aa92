/**
 * Whole-record scoring (issue 12 item 2): every byte of a record up to the cap is rated, window by
 * window, and the record's score is the aggregate the export names. Pinned here: a record's score
 * and spans depend on its body, not only its head; spans are byte-exact and cover the record
 * (multi-byte UTF-8 included); the cap and truncation are recorded; policies act on record scores;
 * and with a constructed rater (bytes that are letters score high), records whose junk sits past a
 * clean head are dropped while clean records are kept.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import { optionsFromEnv } from "../../functions/main.ts";
import { quantileCalibration } from "../../lib/calibration.ts";
import { RaterConfigSchema } from "../../lib/config.ts";
import { type ManifestEntry, readManifest } from "../../lib/manifest.ts";
import { createStorage, type UriStorage } from "../../lib/storage.ts";
import { DEFAULT_SCORE_CAP_BYTES } from "../../lib/windows.ts";
import { exportRaterOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";
import {
  buildTestModel,
  jsonl,
  postScore,
  scoreRecordsDirect,
  type TestModel,
} from "./fixtures.ts";

const encoder = new TextEncoder();
let tmp: string;
let storage: UriStorage;
let app: ScoringApp;
let model: TestModel;
let modelUri: string;
let lettersUri: string;
let minUri: string;

/**
 * An mlp rater whose window score is gelu(fraction of the window's bytes that are ASCII letters or
 * spaces): clean prose scores about 0.84, a hex dump or digits about 0.
 */
function letterRater(aggregation: "mean" | "min"): Uint8Array {
  const rater = RaterConfigSchema.parse({
    kind: "mlp",
    dModel: 4,
    hidden: 1,
    scoring: { aggregation },
  });
  const params = initRaterArrays(rater, 32, new Rng(1));
  params.embed.values.fill(0);
  for (let b = 0; b < 256; b++) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z ]/.test(c)) params.embed.values[b * 4] = 1;
  }
  params["mlp.w1"].values.fill(0);
  params["mlp.w1"].values[0] = 1;
  params["mlp.b1"].values.fill(0);
  params["mlp.w2"].values.fill(1);
  params["mlp.b2"].values.fill(0);
  return exportRaterOnnx({
    params,
    rater,
    seqLen: 32,
    calibration: quantileCalibration(Array.from({ length: 101 }, (_, i) => i / 100)),
    configDigest: sha256Hex(`letters-${aggregation}`),
  });
}

beforeAll(async () => {
  tmp = await Deno.makeTempDir({ prefix: "whole-record-" });
  storage = createStorage();
  model = await buildTestModel({ kind: "transformer", seqLen: 32 });
  modelUri = `file://${tmp}/rater.onnx`;
  lettersUri = `file://${tmp}/letters.onnx`;
  minUri = `file://${tmp}/letters-min.onnx`;
  await storage.write(modelUri, model.bytes);
  await storage.write(lettersUri, letterRater("mean"));
  await storage.write(minUri, letterRater("min"));
  app = createApp({ storage, allowedRoots: [`file://${tmp}/`], batchSize: 8 });
}, 60_000);

afterAll(async () => {
  await app.close();
  storage.close();
  await Deno.remove(tmp, { recursive: true });
});

async function scoreTexts(
  name: string,
  texts: string[],
  extra: Record<string, unknown> = {},
  model = modelUri,
) {
  const input = `file://${tmp}/${name}.jsonl`;
  await storage.write(input, jsonl(texts.map((text, i) => ({ id: `r${i}`, text }))));
  const output = `file://${tmp}/${name}.manifest.jsonl`;
  const r = await postScore(app, {
    model,
    input,
    output,
    policy: { kind: "threshold", threshold: 0.5 },
    ...extra,
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const { header, entries } = await readManifest(storage, output);
  return { body: r.body, header, entries: await Array.fromAsync(entries) as ManifestEntry[] };
}

describe("whole-record scoring", () => {
  it("two records with the same head and different bodies get different scores and spans", async () => {
    const head = "The committee met on Tuesday to discuss the budget. ".repeat(2); // 104 bytes
    const clean = head + "Members agreed to publish the minutes next week. ".repeat(4);
    const junk = head + "0x3f9a 0x00ff 0xdead 0xbeef 7f:3a:00 ".repeat(6);
    const { entries } = await scoreTexts("same-head", [clean, junk]);
    const [a, b] = entries;
    expect(a.spans!.length).toBe(Math.ceil(encoder.encode(clean).length / 32));
    expect(b.spans!.length).toBe(Math.ceil(encoder.encode(junk).length / 32));
    // The first three windows read the same bytes: the same scores.
    expect(a.spans!.slice(0, 3)).toEqual(b.spans!.slice(0, 3));
    expect(a.score).not.toBe(b.score);
    expect(a.spans!.slice(4)).not.toEqual(b.spans!.slice(4));
    const direct = await scoreRecordsDirect(model.bytes, [clean, junk], 32);
    expect(Math.abs(a.score - direct.scores[0])).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(b.score - direct.scores[1])).toBeLessThanOrEqual(1e-6);
  });

  it("spans are byte offsets into the UTF-8 text that tile it exactly, multi-byte characters included", async () => {
    const texts = [
      "", // one empty window
      "a",
      "x".repeat(32),
      "x".repeat(33),
      "é".repeat(40), // 80 bytes: windows cut characters in half
      "日本語のテキスト😀".repeat(9), // 3- and 4-byte characters
    ];
    const { entries, header } = await scoreTexts("utf8", texts);
    expect(header.scoring).toEqual({
      window: 32,
      stride: 32,
      aggregation: "mean",
      cap: DEFAULT_SCORE_CAP_BYTES,
    });
    entries.forEach((e, i) => {
      const n = encoder.encode(texts[i]).length;
      const bounds = e.spans!.map(([s, end]) => [s, end]);
      const want = n === 0
        ? [[0, 0]]
        : Array.from({ length: Math.ceil(n / 32) }, (_, k) => [32 * k, Math.min(32 * k + 32, n)]);
      expect(bounds, texts[i]).toEqual(want);
      expect(e.truncated).toBeUndefined();
    });
    expect(entries[4].spans!.map(([s, e]) => [s, e])).toEqual([[0, 32], [32, 64], [64, 80]]);
    const direct = await scoreRecordsDirect(model.bytes, texts, 32);
    entries.forEach((e, i) => {
      e.spans!.forEach(([, , s], j) =>
        expect(Math.abs(s - direct.spans[i][j][2])).toBeLessThanOrEqual(1e-6)
      );
    });
  });

  it("a record past the cap is rated over its first cap bytes and says truncated; the header records the cap", async () => {
    const texts = ["word ".repeat(20), "word ".repeat(40), "ü".repeat(60)]; // 100, 200, 120 bytes
    const { entries, header, body } = await scoreTexts("cap", texts, { capBytes: 100 });
    expect(header.scoring!.cap).toBe(100);
    expect(body.scoring).toEqual(header.scoring);
    expect(entries[0].truncated).toBeUndefined();
    expect(entries[1].truncated).toBe(true);
    expect(entries[2].truncated).toBe(true);
    for (const e of entries) expect(e.spans!.at(-1)![1]).toBe(100);
    expect(entries[1].spans!.map(([s, e]) => [s, e])).toEqual([[0, 32], [32, 64], [64, 96], [
      96,
      100,
    ]]);
    const direct = await scoreRecordsDirect(model.bytes, texts, 32, { cap: 100 });
    expect(direct.truncated).toEqual([false, true, true]);
    entries.forEach((e, i) =>
      expect(Math.abs(e.score - direct.scores[i])).toBeLessThanOrEqual(1e-6)
    );
    // The same output with another cap is another request: a 409, never a stale answer.
    const again = await postScore(app, {
      model: modelUri,
      input: `file://${tmp}/cap.jsonl`,
      output: `file://${tmp}/cap.manifest.jsonl`,
      policy: { kind: "threshold", threshold: 0.5 },
      capBytes: 200,
    });
    expect(again.status).toBe(409);
    expect(again.body.error.message).toMatch(/scoring cap is 100, this request's 200/);
  });

  it("the default cap comes from DATARATER_SCORE_CAP_BYTES and a request may not exceed 1 MiB", async () => {
    expect(optionsFromEnv({ DATARATER_SCORE_CAP_BYTES: "4096" }).app.limits).toMatchObject({
      scoreCapBytes: 4096,
    });
    expect(() => optionsFromEnv({ DATARATER_SCORE_CAP_BYTES: String(2 ** 21) })).toThrow();
    const capped = createApp({
      storage,
      allowedRoots: [`file://${tmp}/`],
      limits: { scoreCapBytes: 40 },
    });
    try {
      const input = `file://${tmp}/env-cap.jsonl`;
      await storage.write(input, jsonl([{ id: "a", text: "z".repeat(100) }]));
      const r = await postScore(capped, {
        model: modelUri,
        input,
        output: `file://${tmp}/env-cap.manifest.jsonl`,
        policy: { kind: "threshold", threshold: 0 },
      });
      expect(r.status).toBe(201);
      const { header, entries } = await readManifest(
        storage,
        `file://${tmp}/env-cap.manifest.jsonl`,
      );
      expect(header.scoring!.cap).toBe(40);
      expect((await Array.fromAsync(entries))[0]).toMatchObject({
        spans: [[0, 32, expect.any(Number)], [32, 40, expect.any(Number)]],
        truncated: true,
      });
      const tooBig = await postScore(capped, {
        model: modelUri,
        input,
        output: `file://${tmp}/env-cap-2.manifest.jsonl`,
        policy: { kind: "threshold", threshold: 0 },
        capBytes: 2 ** 20 + 1,
      });
      expect(tooBig.status).toBe(400);
    } finally {
      await capped.close();
    }
  });

  it("a constructed rater drops records whose junk sits past a clean head and keeps clean ones (policies on record scores)", async () => {
    const prose = "the quick brown fox jumps over the lazy dog and ".repeat(2); // 96 letters/spaces
    const digits = "8734:2291;0045|7713,"; // no letters, no spaces
    const texts = [
      prose + "then it rests in the shade of the old tree ".repeat(6),
      prose + digits.repeat(16),
      prose + "-----BEGIN RSA PRIVATE KEY-----" + digits.repeat(12),
      prose + "cleanly ending prose with more words ".repeat(5),
    ];
    const { entries, header } = await scoreTexts("letters", texts, {}, lettersUri);
    expect(header.scoring!.aggregation).toBe("mean");
    // Every record's first three windows are clean prose: a head-only rater could not tell them
    // apart.
    for (const e of entries) {
      for (const [, , s] of e.spans!.slice(0, 3)) expect(s).toBeGreaterThan(0.8);
    }
    expect(entries.map((e) => e.keep)).toEqual([true, false, false, true]);
    for (const e of entries) expect(e.keep).toBe(e.score >= 0.5);
    // Record score = byte-weighted mean of its window scores.
    for (const e of entries) {
      const n = e.spans!.at(-1)![1];
      const mean = e.spans!.reduce((s, [a, b, v]) => s + (b - a) * v, 0) / n;
      expect(Math.abs(e.score - mean)).toBeLessThanOrEqual(1e-6);
    }

    // keepFraction's threshold comes from the calibration (quantiles 0..1 here) and applies to
    // record scores.
    const kf = await scoreTexts("letters-kf", texts, {
      policy: { kind: "keepFraction", fraction: 0.5 },
    }, lettersUri);
    expect(kf.header.threshold).toBeCloseTo(0.5, 6);
    expect(kf.entries.map((e) => e.keep)).toEqual(entries.map((e) => e.score >= 0.5));

    // With min aggregation, one junk window is enough to drop a record.
    const oneBlock = [prose + digits.repeat(2) + prose.repeat(3), prose + prose];
    const min = await scoreTexts("letters-min", oneBlock, {}, minUri);
    expect(min.header.scoring!.aggregation).toBe("min");
    for (const e of min.entries) {
      expect(e.score).toBe(Math.min(...e.spans!.map(([, , s]) => s)));
    }
    expect(min.entries.map((e) => e.keep)).toEqual([false, true]);
  });
});
