/**
 * `POST /v1/score` with `formats`: the scorer writes the Parquet manifest and dolma attributes
 * beside the v1 manifest (also for a cached manifest, create-only), checks their URIs against the
 * allowed roots before scoring, and refuses a dolma path it cannot derive.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScoringApp } from "../../functions/app.ts";
import { readManifestEntries } from "../../lib/manifest.ts";
import { readParquetManifest } from "../../lib/manifest-formats.ts";
import type { UriStorage } from "../../lib/storage.ts";
import {
  type FileRig,
  jsonl,
  postScore,
  referenceTexts,
  startFileRig,
  stopFileRig,
} from "./fixtures.ts";

let rig: FileRig;
let tmp: string;
let app: ScoringApp;
let storage: UriStorage;
let modelUri: string;

beforeAll(async () => {
  rig = await startFileRig("score-formats-");
  ({ tmp, storage, modelUri, app } = rig);
  const records = referenceTexts(20, 3).map((text, i) => ({ id: `d-${i}`, text }));
  await storage.write(`file://${tmp}/ds/documents/x.jsonl`, jsonl(records));
}, 120_000);

afterAll(async () => {
  await stopFileRig(rig);
});

const base = () => ({
  model: modelUri,
  input: `file://${tmp}/ds/documents/x.jsonl`,
  policy: { kind: "threshold", threshold: 0 },
});

describe("POST /v1/score formats", () => {
  it("writes the Parquet manifest and dolma attributes (at the derived path) and says where", async () => {
    const body = {
      ...base(),
      output: `file://${tmp}/m/x.manifest.jsonl`,
      formats: { parquet: `${tmp}/m/x.manifest.parquet`, dolmaAttributes: { name: "dr" } },
    };
    const r = await postScore(app, body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.formats).toEqual({
      parquet: `file://${tmp}/m/x.manifest.parquet`,
      dolmaAttributes: `file://${tmp}/ds/attributes/dr/x.jsonl`,
    });
    const pq = await readParquetManifest(storage, r.body.formats.parquet);
    expect(await Array.fromAsync(pq.entries)).toEqual(
      await Array.fromAsync(readManifestEntries(storage, r.body.manifest)),
    );
    const rows = (await storage.readText(r.body.formats.dolmaAttributes)).trimEnd().split("\n");
    expect(rows.length).toBe(20);
    expect(Object.keys(JSON.parse(rows[0]).attributes).sort()).toEqual([
      "dr__datarater__doc_score",
      "dr__datarater__keep",
      "dr__datarater__score",
    ]);

    // Cached manifest: formats asked for later are written from it.
    const again = await postScore(app, {
      ...body,
      formats: { parquet: `${tmp}/m/later.parquet` },
    });
    expect(again.status).toBe(200);
    expect(again.body.cached).toBe(true);
    expect(await storage.stat(`file://${tmp}/m/later.parquet`)).not.toBeNull();
  });

  it("a format URI outside the allowed roots is refused before scoring", async () => {
    const r = await postScore(app, {
      ...base(),
      output: `file://${tmp}/m2/x.manifest.jsonl`,
      formats: { parquet: "/elsewhere/x.parquet" },
    });
    expect(r.status).toBe(403);
    expect(r.body.error.message).toContain("formats.parquet");
    expect(await storage.stat(`file://${tmp}/m2/x.manifest.jsonl`)).toBeNull();
  });

  it("dolma attributes for a shard outside documents/ need a URI: 400", async () => {
    await storage.write(`file://${tmp}/plain/y.jsonl`, jsonl([{ id: "a", text: "some text" }]));
    const r = await postScore(app, {
      ...base(),
      input: `file://${tmp}/plain/y.jsonl`,
      output: `file://${tmp}/m3/y.manifest.jsonl`,
      formats: { dolmaAttributes: { name: "dr" } },
    });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/not under a "documents\/" folder/);
  });
});
