/**
 * Parquet shards through the scoring function end to end (createApp, a local file and s3rver with
 * the real AWS SDK): manifests match onnxruntime's scores row by row, the header hashes the stored
 * bytes, invalid rows are skipped and counted with their row numbers, and the manifest reader joins
 * a Parquet shard's kept records and verifies its bytes.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import {
  keptRecords,
  ManifestMismatchError,
  readManifest,
  verifyManifest,
} from "../../lib/manifest.ts";
import type { UriStorage } from "../../lib/storage.ts";
import { parquetBytes, recordsParquet } from "../lib/parquet-fixtures.ts";
import { faultStorage } from "./fault-storage.ts";
import {
  postScore as score,
  referenceTexts,
  type S3Rig,
  scoreRecordsDirect,
  startS3Rig,
  stopS3Rig,
  type TestModel,
} from "./fixtures.ts";

let rig: S3Rig;
let storage: UriStorage;
let tmp: string;
let model: TestModel;
let app: ScoringApp;
const MODEL = "s3://corpus/models/rater.onnx";

beforeAll(async () => {
  rig = await startS3Rig({
    prefix: "score-parquet-",
    buckets: ["corpus"],
    modelUri: MODEL,
    model: { kind: "mlp", seqLen: 32 },
  });
  ({ tmp, storage, model } = rig);
  app = createApp({ storage, allowedRoots: ["s3://corpus/", `file://${tmp}/`], batchSize: 16 });
});

afterAll(() => stopS3Rig(rig, app));

/** Scores `input` into `output` with the model above, keeping scores ≥ 0. */
const scoreAtZero = (a: ScoringApp, input: string, output: string) =>
  score(a, { model: MODEL, input, output, policy: { kind: "threshold", threshold: 0 } });

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("scoring Parquet shards", () => {
  it("file://: a 3-row-group zstd shard scores like onnxruntime, row numbers as lines; keptRecords joins and verifies it", async () => {
    const texts = referenceTexts(90, 31);
    const records = texts.map((text, i) => ({ id: `p${i}`, text, lang: "en" }));
    const bytes = recordsParquet(records, { codec: "ZSTD", rowGroupSize: 40 });
    const shard = `file://${tmp}/shards/part-0.parquet`;
    await storage.write(shard, bytes);
    const output = `file://${tmp}/manifests/part-0.manifest.jsonl`;
    const r = await scoreAtZero(app, shard, output);
    expect(r.status).toBe(201);
    const expected = (await scoreRecordsDirect(model.bytes, texts, model.seqLen)).scores;
    const { header, entries } = await readManifest(storage, output);
    const got = await Array.fromAsync(entries);
    expect(got.map((e) => [e.id, e.line])).toEqual(records.map((rec, i) => [rec.id, i + 1]));
    for (let i = 0; i < got.length; i++) {
      expect(Math.abs(got[i].score - expected[i])).toBeLessThanOrEqual(1e-6);
      expect(got[i].keep).toBe(got[i].score >= 0);
    }
    const kept = got.filter((e) => e.keep);
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThan(records.length);
    expect(header.counts).toEqual({
      records: 90,
      kept: kept.length,
      dropped: 90 - kept.length,
      skippedInvalid: 0,
    });
    // The header describes the stored bytes, though rows were read by ranged reads.
    expect(header.input).toMatchObject({ sha256: sha256(bytes), size: bytes.length });
    expect(r.body.input.sha256).toBe(sha256(bytes));

    const joined = await Array.fromAsync(keptRecords(storage, output));
    expect(joined.map((k) => [k.line, k.id, k.text, k.score])).toEqual(
      kept.map((e) => [e.line, e.id, texts[e.line - 1], e.score]),
    );
    expect(joined[0].record.lang).toBe("en"); // the reader returns whole rows

    // A copy has another ETag: keptRecords and verifyManifest hash its bytes instead.
    const copy = `file://${tmp}/shards/copy-0.parquet`;
    await storage.write(copy, bytes);
    const viaHash = await Array.fromAsync(keptRecords(storage, output, { shard: copy }));
    expect(viaHash.map((k) => k.id)).toEqual(kept.map((e) => e.id));
    expect(await verifyManifest(storage, output, { shard: copy })).toMatchObject({
      ok: true,
      method: "sha256",
    });
    // Same ids and rows, other bytes: the join completes, then the hash check refuses it.
    const changed = `file://${tmp}/shards/changed-0.parquet`;
    await storage.write(changed, recordsParquet(records, { codec: "SNAPPY", rowGroupSize: 40 }));
    const err = await Array.fromAsync(keptRecords(storage, output, { shard: changed })).catch((e) =>
      e
    );
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toContain("sha256");
  });

  it("s3:// (s3rver): custom fields, invalid rows skipped and counted by row number, keptRecords joins across them", async () => {
    const texts = referenceTexts(50, 77);
    const ids: (string | null)[] = texts.map((_, i) => `d${i}`);
    const bodies: (string | null)[] = [...texts];
    ids[4] = null; // missing id
    bodies[9] = null; // missing text
    ids[20] = "d3"; // a duplicate of row 4's id
    const bytes = parquetBytes([
      { name: "doc", data: ids, type: "STRING" },
      { name: "body", data: bodies, type: "STRING" },
    ], { codec: "GZIP", rowGroupSize: 16 });
    const shard = "s3://corpus/shards/part-1.parquet";
    await storage.write(shard, bytes);
    const output = "s3://corpus/manifests/part-1.manifest.jsonl";
    const r = await score(app, {
      model: MODEL,
      input: shard,
      output,
      policy: { kind: "keepFraction", fraction: 0.5 },
      fields: { id: "doc", text: "body" },
      onInvalid: "skip",
    });
    expect(r.status).toBe(201);
    expect(r.body.counts.records).toBe(47);
    expect(r.body.counts.skippedInvalid).toBe(3);
    const { header, entries } = await readManifest(storage, output);
    expect(header.invalid).toEqual([
      { line: 5, error: 'field "doc" must be a string or number' },
      { line: 10, error: 'field "body" must be a string' },
      { line: 21, error: 'duplicate id "d3" (first at line 4)' },
    ]);
    expect(header.input).toMatchObject({ sha256: sha256(bytes), size: bytes.length });
    expect(header.input.etag).toBe((await storage.stat(shard))!.etag);
    const got = await Array.fromAsync(entries);
    const goodRows = texts.map((_, i) => i).filter((i) => i !== 4 && i !== 9 && i !== 20);
    expect(got.map((e) => e.line)).toEqual(goodRows.map((i) => i + 1));
    const expected =
      (await scoreRecordsDirect(model.bytes, goodRows.map((i) => texts[i]), model.seqLen)).scores;
    for (let j = 0; j < got.length; j++) {
      expect(Math.abs(got[j].score - expected[j])).toBeLessThanOrEqual(1e-6);
    }
    const kept = got.filter((e) => e.keep);
    const joined = await Array.fromAsync(keptRecords(storage, output));
    expect(joined.map((k) => [k.line, k.id, k.text])).toEqual(
      kept.map((e) => [e.line, e.id, texts[e.line - 1]]),
    );
    expect(await verifyManifest(storage, output)).toMatchObject({ ok: true, method: "etag" });
  });

  it("a read that fails mid-shard leaves no manifest (502)", async () => {
    const records = referenceTexts(60, 5).map((text, i) => ({ id: `f${i}`, text }));
    const shard = "s3://corpus/shards/part-2.parquet";
    await storage.write(shard, recordsParquet(records, { rowGroupSize: 20 }));
    const faulty = faultStorage({
      failReadAfterBytes: { match: (u) => u === shard, bytes: 300 },
    }, storage);
    const a = createApp({ storage: faulty, allowedRoots: ["s3://corpus/"], batchSize: 16 });
    try {
      const output = "s3://corpus/manifests/crash/part-2.manifest.jsonl";
      const r = await scoreAtZero(a, shard, output);
      expect(r.status).toBe(502);
      expect(r.body.error.code).toBe("storage_error");
      expect(await storage.stat(output)).toBeNull();
      expect(await Array.fromAsync(storage.list("s3://corpus/manifests/crash/"))).toEqual([]);
    } finally {
      await a.close();
    }
  });

  it("a truncated Parquet shard is a 400 invalid_record of kind corrupt", async () => {
    const bytes = recordsParquet([{ id: "a", text: "x" }, { id: "b", text: "y" }]);
    const shard = `file://${tmp}/shards/truncated.parquet`;
    await storage.write(shard, bytes.slice(0, -6));
    const output = `file://${tmp}/manifests/truncated.manifest.jsonl`;
    const r = await scoreAtZero(app, shard, output);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "invalid_record", kind: "corrupt", uri: shard });
    expect(r.body.error.message).toContain("is the file truncated");
    expect(await storage.stat(output)).toBeNull();
  });
});
