/**
 * The manifest's other formats (lib/manifest-formats.ts) against manifests the scoring function
 * wrote: the Parquet manifest round-trips the v1 entries and header, matches the Parquet schema in
 * schemas/; dolma attributes mirror the shard row for row with code-point spans; every written
 * file validates against the JSON Schemas in schemas/ (checked with ajv), which match the code;
 * and real clients agree on the kept set: DuckDB joining the Parquet manifest with its Parquet
 * shard, the Python reader (clients/python) and the TypeScript reader.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ajv2020 } from "ajv/dist/2020.js";
import { DuckDBInstance } from "@duckdb/node-api";
import { parquetMetadataAsync } from "hyparquet";
import type { ScoringApp } from "../../functions/app.ts";
import {
  keptIds,
  keptRecords,
  ManifestError,
  readManifest,
  readManifestEntries,
} from "../../lib/manifest.ts";
import {
  codePointLength,
  dolmaAttributesUriFor,
  PARQUET_HEADER_KEY,
  readParquetManifest,
  writeDolmaAttributes,
  writeManifestFormats,
  writeParquetManifest,
} from "../../lib/manifest-formats.ts";
import { rangedFile } from "../../lib/parquet.ts";
import { gzip } from "../../lib/records.ts";
import type { UriStorage } from "../../lib/storage.ts";
import { generatedSchemas } from "../../scripts/schemas.ts";
import { recordsParquet } from "./parquet-fixtures.ts";
import {
  type FileRig,
  postScore,
  referenceTexts,
  startFileRig,
  stopFileRig,
} from "../functions/fixtures.ts";

const SCHEMAS = new URL("../../schemas/", import.meta.url);
const CLIENT_DIR = new URL("../../clients/python/", import.meta.url).pathname;

let rig: FileRig;
let tmp: string;
let app: ScoringApp;
let storage: UriStorage;
let modelUri: string;
const texts = referenceTexts(50, 5);
let jsonlText: string;

const schemaFile = async (name: string) =>
  JSON.parse(await Deno.readTextFile(new URL(name, SCHEMAS)));

async function gunzip(b: Uint8Array): Promise<string> {
  const s = new Blob([b as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(s).text();
}

beforeAll(async () => {
  rig = await startFileRig("manifest-formats-");
  ({ tmp, storage, modelUri, app } = rig);
  const lines = texts.slice(0, 25).map((t, i) =>
    JSON.stringify({ id: `j-${i}`, text: i === 4 ? `😀 astral ${t}` : t })
  );
  lines.splice(6, 0, "{broken json", JSON.stringify({ id: "j-2", text: "a duplicate id" }));
  jsonlText = lines.join("\n") + "\n";
  await storage.write(`file://${tmp}/data/documents/cc/a.jsonl.gz`, await gzip(jsonlText));
  await storage.write(
    `file://${tmp}/data/documents/cc/b.parquet`,
    recordsParquet(texts.slice(25).map((t, i) => ({ id: `p-${i}`, text: t })), { rowGroupSize: 6 }),
  );
  for (const [shard, manifest] of [["a.jsonl.gz", "a"], ["b.parquet", "b"]]) {
    const r = await postScore(app, {
      model: modelUri,
      input: `file://${tmp}/data/documents/cc/${shard}`,
      output: `file://${tmp}/m/${manifest}.manifest.jsonl`,
      onInvalid: "skip",
      policy: { kind: "keepFraction", fraction: 0.4 },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
}, 120_000);

afterAll(async () => {
  await stopFileRig(rig);
});

describe("schemas", () => {
  it("the committed manifest v1 JSON Schemas are the ones generated from lib/manifest.ts", async () => {
    for (const [name, schema] of Object.entries(generatedSchemas())) {
      expect(await schemaFile(name), name).toEqual(schema);
    }
  });
});

describe("Parquet manifest", () => {
  it("holds every v1 entry in order and the v1 header in its key-value metadata, under the documented schema", async () => {
    for (const name of ["a", "b"]) {
      const v1 = `file://${tmp}/m/${name}.manifest.jsonl`;
      const pq = `file://${tmp}/m/${name}.manifest.parquet`;
      expect(await writeParquetManifest(storage, v1, pq, { rowGroupSize: 7 })).toBe(true);
      expect(await writeParquetManifest(storage, v1, pq)).toBe(false); // create-only
      const { header, entries } = await readManifest(storage, v1);
      const want = await Array.fromAsync(entries);
      const got = await readParquetManifest(storage, pq);
      expect(got.header).toEqual(header);
      expect(await Array.fromAsync(got.entries)).toEqual(want);

      const meta = await parquetMetadataAsync(await rangedFile(storage, pq));
      expect(meta.row_groups.length).toBe(Math.ceil(want.length / 7));
      const doc = await schemaFile("manifest.parquet-schema.json");
      expect(
        meta.schema.slice(1).map((s) => ({
          name: s.name,
          physicalType: s.type,
          convertedType: s.converted_type ?? null,
          repetition: s.repetition_type,
        })),
      ).toEqual(doc.columns);
      const kv = Object.fromEntries((meta.key_value_metadata ?? []).map((p) => [p.key, p.value]));
      expect(Object.keys(kv).sort()).toEqual(Object.keys(doc.keyValueMetadata).sort());
      expect(JSON.parse(kv[PARQUET_HEADER_KEY]!)).toEqual(header);
    }
  });

  it("a Parquet file without the header key, or with an unknown version, is a ManifestError", async () => {
    await expect(readParquetManifest(storage, `file://${tmp}/data/documents/cc/b.parquet`))
      .rejects.toThrow(/has no "datarater.manifest" key-value metadata/);
    const lines = (await storage.readText(`file://${tmp}/m/a.manifest.jsonl`)).split("\n");
    const h = JSON.parse(lines[0]);
    h.version = 9;
    lines[0] = JSON.stringify(h);
    await storage.write(`file://${tmp}/v9/a.manifest.jsonl`, lines.join("\n"));
    // The v1 reader refuses it before anything is written.
    await expect(
      writeParquetManifest(storage, `file://${tmp}/v9/a.manifest.jsonl`, `file://${tmp}/v9/a.pq`),
    ).rejects.toBeInstanceOf(ManifestError);
    expect(await storage.stat(`file://${tmp}/v9/a.pq`)).toBeNull();
  });
});

describe("dolma attributes", () => {
  it("one row per document in order, code-point window spans, doc score and keep matching the manifest, at dolma's derived path", async () => {
    const v1 = `file://${tmp}/m/a.manifest.jsonl`;
    const { uri, created } = await writeDolmaAttributes(storage, v1, { name: "rater1" });
    expect(created).toBe(true);
    expect(uri).toBe(`file://${tmp}/data/attributes/rater1/cc/a.jsonl.gz`);
    const rows = (await gunzip(await storage.readBytes(uri))).trimEnd().split("\n").map((l) =>
      JSON.parse(l)
    );
    const docs = jsonlText.trimEnd().split("\n");
    expect(rows.length).toBe(docs.length);
    const entries = new Map(
      (await Array.fromAsync(readManifestEntries(storage, v1))).map((e) => [e.line, e]),
    );
    rows.forEach((row, i) => {
      const entry = entries.get(i + 1);
      if (!entry) {
        expect(row.attributes).toEqual({});
        return;
      }
      const doc = JSON.parse(docs[i]);
      const len = [...doc.text].length;
      // Characters that start before byte b: a character cut at b decodes as one U+FFFD.
      const bytes = new TextEncoder().encode(doc.text);
      const cpAt = (b: number) => [...new TextDecoder().decode(bytes.subarray(0, b))].length;
      expect(entry.spans!.length).toBeGreaterThanOrEqual(Math.ceil(bytes.length / 32));
      expect(row).toEqual({
        id: entry.id,
        attributes: {
          rater1__datarater__score: entry.spans!.map(([s, e, score]) => [cpAt(s), cpAt(e), score]),
          rater1__datarater__doc_score: [[0, len, entry.score]],
          rater1__datarater__keep: [[0, len, entry.keep ? 1 : 0]],
        },
      });
    });
    expect(rows[6]).toEqual({ id: null, attributes: {} }); // the broken line
    expect(rows[7]).toEqual({ id: "j-2", attributes: {} }); // the duplicate the scorer skipped
    expect(rows[4].attributes.rater1__datarater__score.at(-1)[1]).toBe(
      codePointLength(JSON.parse(docs[4]).text),
    );
    expect(rows[4].attributes.rater1__datarater__doc_score[0][1]).toBe(
      codePointLength(JSON.parse(docs[4]).text),
    );
    // The astral character's 4 bytes sit in the first window, counted once.
    expect(rows[4].attributes.rater1__datarater__score[0].slice(0, 2)).toEqual([0, 29]);
    expect(codePointLength(JSON.parse(docs[4]).text)).toBe(JSON.parse(docs[4]).text.length - 1);
  });

  it("a shard outside a documents/ folder needs an explicit URI", () => {
    expect(() => dolmaAttributesUriFor("s3://b/shards/x.jsonl", "r")).toThrow(
      /not under a "documents\/" folder/,
    );
    expect(dolmaAttributesUriFor("s3://b/d/documents/x/y.parquet", "r")).toBe(
      "s3://b/d/attributes/r/x/y.jsonl.gz",
    );
  });
});

describe("written files validate against the JSON Schemas (ajv)", () => {
  it("manifest v1 lines, the Parquet manifest's header and dolma attribute rows", async () => {
    const ajv = new Ajv2020({ strict: false });
    const header = ajv.compile(await schemaFile("manifest-v1.header.schema.json"));
    const entry = ajv.compile(await schemaFile("manifest-v1.entry.schema.json"));
    const dolma = ajv.compile(await schemaFile("dolma-attributes.schema.json"));
    for (const name of ["a", "b"]) {
      const lines = (await storage.readText(`file://${tmp}/m/${name}.manifest.jsonl`)).trimEnd()
        .split("\n").map((l) => JSON.parse(l));
      expect(header(lines[0]), JSON.stringify(header.errors)).toBe(true);
      for (const l of lines.slice(1)) expect(entry(l), JSON.stringify(entry.errors)).toBe(true);
      expect(entry(lines[0])).toBe(false);
    }
    const formats = await writeManifestFormats(storage, `file://${tmp}/m/b.manifest.jsonl`, {
      parquet: `file://${tmp}/m/b.manifest.parquet`,
      dolmaAttributes: { name: "r2" },
    });
    expect(formats.dolmaAttributes).toBe(`file://${tmp}/data/attributes/r2/cc/b.jsonl.gz`);
    const pq = await readParquetManifest(storage, formats.parquet!);
    expect(header(pq.header)).toBe(true);
    for (
      const uri of [formats.dolmaAttributes!, `file://${tmp}/data/attributes/rater1/cc/a.jsonl.gz`]
    ) {
      const rows = (await gunzip(await storage.readBytes(uri))).trimEnd().split("\n");
      expect(rows.length).toBeGreaterThan(20);
      for (const r of rows) expect(dolma(JSON.parse(r)), JSON.stringify(dolma.errors)).toBe(true);
    }
    expect(dolma({ id: "x", attributes: { r__datarater__keep: [[0, 3, 2]] } })).toBe(false);
  });
});

describe("real clients agree on the kept set", () => {
  it("DuckDB joins the Parquet manifest with its Parquet shard and gets exactly keptRecords' ids", async () => {
    const v1 = `file://${tmp}/m/b.manifest.jsonl`;
    const pq = `${tmp}/m/b.manifest.parquet`;
    await writeParquetManifest(storage, v1, `file://${pq}`);
    const shard = `${tmp}/data/documents/cc/b.parquet`;
    const want = (await Array.fromAsync(keptRecords(storage, v1))).map((r) => r.id);
    expect(want.length).toBeGreaterThan(3);
    const db = await DuckDBInstance.create(":memory:");
    const conn = await db.connect();
    try {
      const joined = await conn.runAndReadAll(
        `SELECT s.id, s.text FROM read_parquet('${pq}') m
         JOIN read_parquet('${shard}', file_row_number = true) s
           ON s.file_row_number + 1 = m.line AND s.id = m.id
         WHERE m.keep ORDER BY m.line`,
      );
      expect(joined.getRowObjectsJS().map((r) => r.id)).toEqual(want);
      const kv = await conn.runAndReadAll(
        `SELECT decode(value) AS v FROM parquet_kv_metadata('${pq}')
         WHERE decode(key) = '${PARQUET_HEADER_KEY}'`,
      );
      const header = JSON.parse(String(kv.getRowObjectsJS()[0].v));
      expect(header.counts.kept).toBe(want.length);
    } finally {
      conn.closeSync();
      db.closeSync();
    }
  });

  it("DuckDB reads the Parquet spans column as list<struct<start, end, score>> equal to the v1 spans", async () => {
    const v1 = `file://${tmp}/m/a.manifest.jsonl`;
    const pq = `${tmp}/m/a-spans.manifest.parquet`;
    await writeParquetManifest(storage, v1, `file://${pq}`, { rowGroupSize: 5 });
    const entries = await Array.fromAsync(readManifestEntries(storage, v1));
    expect(entries.some((e) => e.spans!.length > 1)).toBe(true);
    const db = await DuckDBInstance.create(":memory:");
    const conn = await db.connect();
    try {
      const types = await conn.runAndReadAll(
        `SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('${pq}'))`,
      );
      expect(Object.fromEntries(
        types.getRowObjectsJS().map((r) => [r.column_name, r.column_type]),
      )).toMatchObject({
        spans: 'STRUCT("start" BIGINT, "end" BIGINT, score DOUBLE)[]',
        truncated: "BOOLEAN",
      });
      const rows = await conn.runAndReadAll(
        `SELECT line, [[s.start, s.end] FOR s IN spans] AS bounds,
                [s.score FOR s IN spans] AS scores, truncated
         FROM read_parquet('${pq}') ORDER BY line`,
      );
      const got = rows.getRowObjectsJS().map((r) => ({
        line: Number(r.line),
        spans: (r.bounds as bigint[][]).map(([a, b], j) => [
          Number(a),
          Number(b),
          (r.scores as number[])[j],
        ]),
        truncated: r.truncated,
      }));
      expect(got).toEqual(
        entries.map((e) => ({ line: e.line, spans: e.spans, truncated: e.truncated === true })),
      );
    } finally {
      conn.closeSync();
      db.closeSync();
    }
  });

  it("the Python reader, DuckDB and the TypeScript reader find the same kept ids for the same manifest", async () => {
    const v1 = `${tmp}/m/a.manifest.jsonl`;
    const pq = `${tmp}/m/a.manifest.parquet`;
    await writeParquetManifest(storage, `file://${v1}`, `file://${pq}`);
    const ts = await Array.fromAsync(keptIds(storage, `file://${v1}`));
    const tsJoined = (await Array.fromAsync(keptRecords(storage, `file://${v1}`))).map((r) => r.id);
    expect(tsJoined).toEqual(ts);
    const db = await DuckDBInstance.create(":memory:");
    const conn = await db.connect();
    let duck: string[];
    try {
      const r = await conn.runAndReadAll(
        `SELECT id FROM read_parquet('${pq}') WHERE keep ORDER BY line`,
      );
      duck = r.getRowObjectsJS().map((x) => String(x.id));
    } finally {
      conn.closeSync();
      db.closeSync();
    }
    const py = await new Deno.Command("python3", {
      args: [
        "-c",
        "import json,sys\nfrom datarater_manifest import iter_kept\n" +
        "print(json.dumps([r['id'] for r in iter_kept(sys.argv[1], sys.argv[2])]))",
        `${tmp}/data/documents/cc/a.jsonl.gz`,
        v1,
      ],
      env: { PYTHONPATH: CLIENT_DIR, PYTHONDONTWRITEBYTECODE: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    expect(py.code, new TextDecoder().decode(py.stderr)).toBe(0);
    const python = JSON.parse(new TextDecoder().decode(py.stdout));
    expect(ts.length).toBeGreaterThan(3);
    expect(duck).toEqual(ts);
    expect(python).toEqual(ts);
  });
});
