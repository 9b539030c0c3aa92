/**
 * End to end over the real S3 protocol: s3rver (in a Node child) and the real AWS SDK. Shards go
 * in, manifests come out, and every count and decision is checked against onnxruntime run
 * directly on the same records with the policy applied by hand.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import {
  acceptProbability,
  deterministicUniform,
  percentileOf,
  thresholdForKeepFraction,
} from "../../lib/calibration.ts";
import {
  keptIds,
  keptRecords,
  type ManifestEntry,
  readManifest,
  verifyManifest,
} from "../../lib/manifest.ts";
import { encodeJsonl, encodeJsonlGz } from "../../lib/records.ts";
import type { UriStorage } from "../../lib/storage.ts";
import {
  postScore as score,
  referenceTexts,
  type S3Rig,
  scoreRecordsDirect,
  startS3Rig,
  stopS3Rig,
  type TestModel,
} from "./fixtures.ts";
import { faultStorage, racingWrites } from "./fault-storage.ts";

let rig: S3Rig;
let storage: UriStorage;
let model: TestModel;
let app: ScoringApp;
const MODEL = "s3://corpus/models/rater.onnx";

interface ShardFixture {
  uri: string;
  records: { id: string; text: string }[];
  scores: Float32Array;
  /** Each record's window scores `[start, end, score]`, byte offsets. */
  spans: [number, number, number][][];
}
const shards: ShardFixture[] = [];

beforeAll(async () => {
  rig = await startS3Rig({
    prefix: "score-s3-",
    buckets: ["corpus", "other"],
    modelUri: MODEL,
    model: { kind: "transformer", seqLen: 48 },
  });
  ({ storage, model } = rig);
  // 8 shards of varied size, half gzip, records drawn like the calibration's reference sample.
  for (let s = 0; s < 8; s++) {
    const texts = referenceTexts(150 + 37 * s, 100 + s);
    const records = texts.map((text, i) => ({ id: `s${s}-r${i}`, text }));
    const uri = `s3://corpus/shards/part-${s}.jsonl${s % 2 ? ".gz" : ""}`;
    await storage.write(uri, s % 2 ? await encodeJsonlGz(records) : encodeJsonl(records));
    const { scores, spans } = await scoreRecordsDirect(model.bytes, texts, model.seqLen);
    shards.push({ uri, records, scores, spans });
  }
  app = createApp({ storage, allowedRoots: ["s3://corpus/"], batchSize: 64 });
});

afterAll(() => stopS3Rig(rig, app));

/** Scores `shard` into `output` with the model above. */
const scoreShard = (a: ScoringApp, shard: ShardFixture, output: string, policy: unknown) =>
  score(a, { model: MODEL, input: shard.uri, output, policy });

async function entriesOf(uri: string): Promise<ManifestEntry[]> {
  const { entries } = await readManifest(storage, uri);
  return await Array.fromAsync(entries);
}

/** Checks a manifest's entries against direct scores and a keep rule, exactly. */
async function expectManifestMatches(
  manifest: string,
  shard: ShardFixture,
  keep: (id: string, score: number) => boolean,
) {
  const entries = await entriesOf(manifest);
  expect(entries.map((e) => e.id)).toEqual(shard.records.map((r) => r.id));
  expect(entries.map((e) => e.line)).toEqual(shard.records.map((_, i) => i + 1));
  for (let i = 0; i < entries.length; i++) {
    expect(Math.abs(entries[i].score - shard.scores[i])).toBeLessThanOrEqual(1e-6);
    expect(entries[i].keep).toBe(keep(entries[i].id, entries[i].score));
    const spans = entries[i].spans!;
    expect(spans.map(([s, e]) => [s, e])).toEqual(shard.spans[i].map(([s, e]) => [s, e]));
    spans.forEach(([, , score], j) =>
      expect(Math.abs(score - shard.spans[i][j][2])).toBeLessThanOrEqual(1e-6)
    );
  }
  return entries;
}

describe("scoring shards in S3", () => {
  it("keepFraction: one global threshold from the calibration; counts and decisions exact", async () => {
    const shard = shards[0];
    const output = "s3://corpus/manifests/kf/part-0.manifest.jsonl";
    const r = await scoreShard(app, shard, output, { kind: "keepFraction", fraction: 0.25 });
    expect(r.status).toBe(201);
    const t = thresholdForKeepFraction(model.calibration, 0.25);
    expect(r.body.threshold).toBe(t);
    const entries = await expectManifestMatches(output, shard, (_id, s) => s >= t);
    const kept = entries.filter((e) => e.keep).length;
    expect(r.body.counts).toEqual({
      records: shard.records.length,
      kept,
      dropped: shard.records.length - kept,
      skippedInvalid: 0,
    });
    // Same distribution as the calibration sample: about a quarter is kept.
    expect(kept / shard.records.length).toBeGreaterThan(0.12);
    expect(kept / shard.records.length).toBeLessThan(0.38);
    const info = await storage.stat(shard.uri);
    expect(r.body.input.etag).toBe(info!.etag);
    expect(r.body.model.sha256).toBe(model.sha256);
    expect(await verifyManifest(storage, output)).toMatchObject({ ok: true, method: "etag" });
  });

  it("threshold: keep iff the raw score is at least the threshold (gzip shard)", async () => {
    const shard = shards[1];
    const output = "s3://corpus/manifests/th/part-1.manifest.jsonl";
    const threshold = model.calibration.quantiles[60];
    const r = await scoreShard(app, shard, output, { kind: "threshold", threshold });
    expect(r.status).toBe(201);
    expect(r.body.threshold).toBe(threshold);
    await expectManifestMatches(output, shard, (_id, s) => s >= threshold);
  });

  it("topK: per-record top-K-of-B acceptance, deterministic per id", async () => {
    const shard = shards[2];
    const policy = { kind: "topK", k: 3, b: 4, seed: 11 };
    const keep = (id: string, s: number) =>
      deterministicUniform(id, 11) < acceptProbability(percentileOf(model.calibration, s), 3, 4);
    const out1 = "s3://corpus/manifests/topk/a.manifest.jsonl";
    const out2 = "s3://corpus/manifests/topk/b.manifest.jsonl";
    const r1 = await scoreShard(app, shard, out1, policy);
    expect(r1.status).toBe(201);
    expect(r1.body.threshold).toBeNull();
    const e1 = await expectManifestMatches(out1, shard, keep);
    // Same request to another output: the same decisions, record by record.
    const r2 = await scoreShard(app, shard, out2, policy);
    expect(r2.status).toBe(201);
    expect((await entriesOf(out2)).map((e) => e.keep)).toEqual(e1.map((e) => e.keep));
  });

  it("the reader library streams the kept ids and kept records of a scored shard", async () => {
    const shard = shards[3];
    const output = "s3://corpus/manifests/reader/part-3.manifest.jsonl";
    await scoreShard(app, shard, output, { kind: "keepFraction", fraction: 0.5 });
    const entries = await entriesOf(output);
    const keptEntries = entries.filter((e) => e.keep);
    expect(await Array.fromAsync(keptIds(storage, output))).toEqual(keptEntries.map((e) => e.id));
    const records = await Array.fromAsync(keptRecords(storage, output));
    const byId = new Map(shard.records.map((r) => [r.id, r.text]));
    expect(records.map((r) => r.id)).toEqual(keptEntries.map((e) => e.id));
    for (const r of records) expect(r.text).toBe(byId.get(r.id));
  });

  it("many simultaneous requests for different shards all complete with correct manifests", async () => {
    const policy = { kind: "threshold", threshold: model.calibration.quantiles[50] };
    const results = await Promise.all(
      shards.map((shard, s) =>
        scoreShard(app, shard, `s3://corpus/manifests/many/part-${s}.manifest.jsonl`, policy)
      ),
    );
    expect(results.map((r) => r.status)).toEqual(shards.map(() => 201));
    for (let s = 0; s < shards.length; s++) {
      const entries = await expectManifestMatches(
        `s3://corpus/manifests/many/part-${s}.manifest.jsonl`,
        shards[s],
        (_id, v) => v >= policy.threshold,
      );
      expect(results[s].body.counts.kept).toBe(entries.filter((e) => e.keep).length);
    }
  });

  it("the same shard requested twice at once yields exactly one manifest", async () => {
    const body = {
      model: MODEL,
      input: shards[4].uri,
      output: "s3://corpus/manifests/twice/part-4.manifest.jsonl",
      policy: { kind: "keepFraction", fraction: 0.3 },
    };
    const [a, b] = await Promise.all([score(app, body), score(app, body)]);
    expect([a.status, b.status].sort()).toEqual([200, 201]);
    expect([a.body.cached, b.body.cached].sort()).toEqual([false, true]);
    expect(a.body.counts).toEqual(b.body.counts);
    const objects = await Array.fromAsync(storage.list("s3://corpus/manifests/twice/"));
    expect(objects.map((o) => o.uri)).toEqual([body.output]);
  });

  it("two replicas racing on one shard over S3 conditional writes: one manifest, one cached answer", async () => {
    // s3rver ignores If-None-Match: the wrapper gives it S3's atomic create-only semantics.
    const faulty = racingWrites(storage);
    const replicas = [0, 1].map(() =>
      createApp({ storage: faulty, allowedRoots: ["s3://corpus/"] })
    );
    try {
      const body = {
        model: MODEL,
        input: shards[5].uri,
        output: "s3://corpus/manifests/replicas/part-5.manifest.jsonl",
        policy: { kind: "keepFraction", fraction: 0.3 },
      };
      const [a, b] = await Promise.all(replicas.map((r) => score(r, body)));
      expect([a.status, b.status].sort()).toEqual([200, 201]);
      const objects = await Array.fromAsync(storage.list("s3://corpus/manifests/replicas/"));
      expect(objects.length).toBe(1);
    } finally {
      for (const r of replicas) await r.close();
    }
  });

  it("a read that fails mid-shard in S3 leaves no manifest object", async () => {
    const shard = shards[6];
    const faulty = faultStorage({
      failReadAfterBytes: { match: (u) => u === shard.uri, bytes: 2000 },
    }, storage);
    const a = createApp({ storage: faulty, allowedRoots: ["s3://corpus/"], batchSize: 16 });
    try {
      const output = "s3://corpus/manifests/crash/part-6.manifest.jsonl";
      const r = await scoreShard(a, shard, output, { kind: "threshold", threshold: 0 });
      expect(r.status).toBe(502);
      expect(await storage.stat(output)).toBeNull();
      expect(await Array.fromAsync(storage.list("s3://corpus/manifests/crash/"))).toEqual([]);
    } finally {
      await a.close();
    }
  });

  it("missing objects and buckets in S3 are 404s; other buckets are 403s", async () => {
    const base = { model: MODEL, output: "s3://corpus/manifests/x.manifest.jsonl" };
    const policy = { kind: "threshold", threshold: 0 };
    const missing = await score(app, { ...base, input: "s3://corpus/shards/nope.jsonl", policy });
    expect(missing.status).toBe(404);
    expect(missing.body.error.message).toBe("input s3://corpus/shards/nope.jsonl does not exist");
    const missingModel = await score(app, {
      ...base,
      model: "s3://corpus/models/none.onnx",
      input: shards[0].uri,
      policy,
    });
    expect(missingModel.status).toBe(404);
    const forbidden = await score(app, { ...base, input: "s3://other/shard.jsonl", policy });
    expect(forbidden.status).toBe(403);
  });
});
