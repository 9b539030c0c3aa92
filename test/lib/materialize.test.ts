/**
 * Materialisation (lib/materialize.ts) against manifests the scoring function wrote: the kept
 * shards hold exactly the records keptRecords yields, byte for byte for JSON Lines (plain and
 * gzip), row for row under the same schema for Parquet; the dropped shards hold the rest; reruns
 * skip; and a shard that is not the manifest's, a truncated shard, a manifest with a missing line
 * or an unknown version each fail clearly with nothing written under the outputs.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parquetMetadataAsync } from "hyparquet";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import {
  keptRecords,
  ManifestError,
  ManifestMismatchError,
  readManifestEntries,
} from "../../lib/manifest.ts";
import { materialize, materializeShard } from "../../lib/materialize.ts";
import { rangedFile } from "../../lib/parquet.ts";
import { encodeJsonlGz, gzip, readRecords } from "../../lib/records.ts";
import { type S3Server, startS3Server } from "../../lib/s3-server.ts";
import { createStorage, type UriStorage } from "../../lib/storage.ts";
import { recordsParquet } from "./parquet-fixtures.ts";
import { buildTestModel, postScore, referenceTexts } from "../functions/fixtures.ts";

let tmp: string;
let app: ScoringApp;
let storage: UriStorage;
let modelUri: string;
let s3: S3Server;

const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function gunzip(b: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([b as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** Lines of a JSON Lines shard with blank lines, a CRLF line, lines the scorer skips, Unicode. */
function plainShard(texts: string[]): string {
  const lines: string[] = [];
  texts.forEach((t, i) => {
    lines.push(JSON.stringify({ id: `p-${i}`, text: t, extra: { n: i }, z: "naïve 😀" }));
    if (i === 3) lines.push("");
    if (i === 6) lines.push("{not json");
  });
  lines.push('{"text":"no id here"}');
  lines.push('{"id":"crlf","text":"a line ending in CR LF",  "spacing" : 1 }\r');
  return lines.join("\n") + "\n";
}

async function score(input: string, output: string) {
  const r = await postScore(app, {
    model: modelUri,
    input,
    output,
    onInvalid: "skip",
    policy: { kind: "keepFraction", fraction: 0.5 },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}

/** The kept records' original lines, as keptRecords finds them (by line number in the shard). */
async function expectedLines(manifest: string, shardText: string, keep: boolean) {
  const lines = shardText.split("\n").map((l) => l.replace(/\r$/, ""));
  if (keep) {
    const kept = await Array.fromAsync(keptRecords(storage, manifest));
    return kept.map((r) => lines[r.line - 1] + "\n").join("");
  }
  const entries = await Array.fromAsync(readManifestEntries(storage, manifest));
  return entries.filter((e) => !e.keep).map((e) => lines[e.line - 1] + "\n").join("");
}

async function listed(prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.uri);
  return out;
}

const texts = referenceTexts(60, 11);
let plainText: string;
let parquetRecords: { id: string; text: string; lang: string }[];

beforeAll(async () => {
  tmp = await Deno.makeTempDir({ prefix: "materialize-" });
  s3 = await startS3Server({ dir: `${tmp}/s3`, buckets: ["out"] });
  storage = createStorage({ s3: s3.settings });
  const model = await buildTestModel({ kind: "mlp", seqLen: 32 });
  modelUri = `file://${tmp}/rater.onnx`;
  await storage.write(modelUri, model.bytes);
  app = createApp({ storage, allowedRoots: [`file://${tmp}/`], batchSize: 16 });
  plainText = plainShard(texts.slice(0, 30));
  parquetRecords = texts.slice(30).map((t, i) => ({ id: `q-${i}`, text: t, lang: `l${i % 3}` }));
  await storage.write(`file://${tmp}/shards/a/plain.jsonl`, plainText);
  await storage.write(`file://${tmp}/shards/b.jsonl.gz`, await gzip(plainText));
  await storage.write(
    `file://${tmp}/shards/c.parquet`,
    recordsParquet(parquetRecords, { rowGroupSize: 7 }),
  );
  await score(`file://${tmp}/shards/a/plain.jsonl`, `file://${tmp}/m/a/plain.manifest.jsonl`);
  await score(`file://${tmp}/shards/b.jsonl.gz`, `file://${tmp}/m/b.manifest.jsonl`);
  await score(`file://${tmp}/shards/c.parquet`, `file://${tmp}/m/c.manifest.jsonl`);
}, 120_000);

afterAll(async () => {
  await app?.close();
  storage?.close();
  await s3?.stop();
  await Deno.remove(tmp, { recursive: true });
});

describe("materialize", () => {
  it("writes exactly the kept records (byte for byte for JSON Lines, gzip again for .gz) and the dropped ones beside", async () => {
    const progress: number[] = [];
    const summary = await materialize(storage, {
      manifests: `file://${tmp}/m/`,
      output: `file://${tmp}/out/`,
      dropped: `file://${tmp}/dropped/`,
      onProgress: (p) => progress.push(p.shardsDone),
    });
    expect(summary.shards).toBe(3);
    expect(summary.created).toBe(3);
    expect(progress[0]).toBe(0);
    expect(progress.at(-1)).toBe(3);
    expect((await listed(`file://${tmp}/out/`)).sort()).toEqual([
      `file://${tmp}/out/a/plain.jsonl`,
      `file://${tmp}/out/b.jsonl.gz`,
      `file://${tmp}/out/c.parquet`,
    ]);

    const a = `file://${tmp}/m/a/plain.manifest.jsonl`;
    const keptA = await expectedLines(a, plainText, true);
    expect(keptA.split("\n").length - 1).toBeGreaterThan(5);
    expect(await storage.readText(`file://${tmp}/out/a/plain.jsonl`)).toBe(keptA);
    expect(await storage.readText(`file://${tmp}/dropped/a/plain.jsonl`)).toBe(
      await expectedLines(a, plainText, false),
    );

    const b = `file://${tmp}/m/b.manifest.jsonl`;
    const gz = await storage.readBytes(`file://${tmp}/out/b.jsonl.gz`);
    expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
    expect(text(await gunzip(gz))).toBe(await expectedLines(b, plainText, true));
    expect(text(await gunzip(await storage.readBytes(`file://${tmp}/dropped/b.jsonl.gz`)))).toBe(
      await expectedLines(b, plainText, false),
    );

    const c = `file://${tmp}/m/c.manifest.jsonl`;
    const kept = await Array.fromAsync(keptRecords(storage, c));
    const out = await Array.fromAsync(readRecords(storage, `file://${tmp}/out/c.parquet`));
    expect(out.map((r) => r.record)).toEqual(kept.map((r) => r.record));
    expect(out.length).toBeGreaterThan(3);
    const dropped = await Array.fromAsync(readRecords(storage, `file://${tmp}/dropped/c.parquet`));
    expect(dropped.length + out.length).toBe(parquetRecords.length);
    const inMeta = await parquetMetadataAsync(
      await rangedFile(storage, `file://${tmp}/shards/c.parquet`),
    );
    const outMeta = await parquetMetadataAsync(
      await rangedFile(storage, `file://${tmp}/out/c.parquet`),
    );
    expect(outMeta.schema).toEqual(inMeta.schema);

    const again = await materialize(storage, {
      manifests: `file://${tmp}/m/`,
      output: `file://${tmp}/out/`,
      dropped: `file://${tmp}/dropped/`,
    });
    expect(again.skipped).toBe(3);
    expect(again.bytesRead).toBe(0);
  });

  it("to S3 (spooled, then one create-only PUT): the same objects as on local files", async () => {
    const summary = await materialize(storage, {
      manifests: `file://${tmp}/m/`,
      output: "s3://out/kept/",
      dropped: "s3://out/dropped/",
    });
    expect(summary.created).toBe(3);
    for (const name of ["a/plain.jsonl", "b.jsonl.gz", "c.parquet"]) {
      expect(await storage.readBytes(`s3://out/kept/${name}`)).toEqual(
        await storage.readBytes(`file://${tmp}/out/${name}`),
      );
    }
    expect(await storage.readText("s3://out/dropped/a/plain.jsonl")).toBe(
      await expectedLines(`file://${tmp}/m/a/plain.manifest.jsonl`, plainText, false),
    );
    // A shard whose bytes changed: nothing reaches S3.
    await storage.write(`file://${tmp}/s3case/shard.jsonl`, plainText);
    const lines = (await storage.readText(`file://${tmp}/m/a/plain.manifest.jsonl`)).split("\n");
    const h = JSON.parse(lines[0]);
    h.input.uri = `file://${tmp}/s3case/shard.jsonl`;
    lines[0] = JSON.stringify(h);
    await storage.write(`file://${tmp}/s3case/m.manifest.jsonl`, lines.join("\n"));
    await storage.write(`file://${tmp}/s3case/shard.jsonl`, plainText.replace("naïve", "naïvf"));
    await expect(materializeShard(storage, {
      manifest: `file://${tmp}/s3case/m.manifest.jsonl`,
      output: "s3://out/bad/kept.jsonl",
      dropped: "s3://out/bad/dropped.jsonl",
    })).rejects.toThrow(/sha256 [0-9a-f]{64} differs from the manifest's/);
    expect(await listed("s3://out/bad/")).toEqual([]);
  });

  it("refuses a format other than the input's", async () => {
    await expect(materializeShard(storage, {
      manifest: `file://${tmp}/m/c.manifest.jsonl`,
      output: `file://${tmp}/fmt/c.jsonl`,
      format: "jsonl",
    })).rejects.toThrow(/is parquet; materialising it as jsonl is not supported/);
    expect(await listed(`file://${tmp}/fmt/`)).toEqual([]);
  });
});

describe("materialize: bad input leaves nothing under the output", () => {
  /** A copy of shard `a` and its manifest in `dir`, with the manifest's header pointing at it. */
  async function copyCase(dir: string, editManifest?: (lines: string[]) => string[]) {
    const shard = `file://${tmp}/${dir}/shard.jsonl`;
    await storage.write(shard, plainText);
    const lines = (await storage.readText(`file://${tmp}/m/a/plain.manifest.jsonl`)).trimEnd()
      .split("\n");
    const header = JSON.parse(lines[0]);
    header.input.uri = shard;
    lines[0] = JSON.stringify(header);
    const manifest = `file://${tmp}/${dir}/shard.manifest.jsonl`;
    await storage.write(manifest, (editManifest ? editManifest(lines) : lines).join("\n") + "\n");
    return { shard, manifest };
  }

  function run(manifest: string, dir: string) {
    return materializeShard(storage, {
      manifest,
      output: `file://${tmp}/${dir}/out/kept.jsonl`,
      dropped: `file://${tmp}/${dir}/out/dropped.jsonl`,
    });
  }

  it("a manifest whose shard now holds another shard's bytes: a mismatch naming both", async () => {
    const { shard, manifest } = await copyCase("bad-other");
    await storage.write(shard, await encodeJsonlGz([{ id: "x", text: "another shard" }]));
    const err = await run(manifest, "bad-other").catch((e) => e);
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toContain(manifest);
    expect(err.message).toContain(shard);
    expect(await listed(`file://${tmp}/bad-other/out/`)).toEqual([]);
  });

  it("a shard of the same size with other bytes: the sha256 mismatch fails before anything is written", async () => {
    const { shard, manifest } = await copyCase("bad-tampered");
    await storage.write(shard, plainText.replace("p-2", "p-Z"));
    const err = await run(manifest, "bad-tampered").catch((e) => e);
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toMatch(/id "p-2" at line 3, shard has id "p-Z"|sha256/);
    expect(await listed(`file://${tmp}/bad-tampered/out/`)).toEqual([]);
  });

  it("a truncated shard: a mismatch naming both", async () => {
    const { shard, manifest } = await copyCase("bad-truncated");
    await storage.write(shard, plainText.slice(0, plainText.length / 2));
    const err = await run(manifest, "bad-truncated").catch((e) => e);
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toMatch(/has \d+ bytes, the manifest was written for \d+/);
    expect(err.message).toContain(shard);
    expect(await listed(`file://${tmp}/bad-truncated/out/`)).toEqual([]);
  });

  it("a truncated Parquet shard: a mismatch naming both, nothing written", async () => {
    const shard = `file://${tmp}/bad-parquet/shard.parquet`;
    const bytes = await storage.readBytes(`file://${tmp}/shards/c.parquet`);
    const lines = (await storage.readText(`file://${tmp}/m/c.manifest.jsonl`)).split("\n");
    const h = JSON.parse(lines[0]);
    h.input.uri = shard;
    lines[0] = JSON.stringify(h);
    const manifest = `file://${tmp}/bad-parquet/shard.manifest.jsonl`;
    await storage.write(manifest, lines.join("\n"));
    await storage.write(shard, bytes.subarray(0, bytes.length - 100));
    const err = await materializeShard(storage, {
      manifest,
      output: `file://${tmp}/bad-parquet/out/kept.parquet`,
      dropped: `file://${tmp}/bad-parquet/out/dropped.parquet`,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toContain(manifest);
    expect(err.message).toContain(shard);
    expect(await listed(`file://${tmp}/bad-parquet/out/`)).toEqual([]);
  });

  it("a manifest with a missing line: a ManifestError, nothing written", async () => {
    const { manifest } = await copyCase("bad-missing", (l) => [...l.slice(0, 5), ...l.slice(6)]);
    const err = await run(manifest, "bad-missing").catch((e) => e);
    expect(err).toBeInstanceOf(ManifestError);
    expect(err.message).toMatch(/truncated or corrupt: \d+ entries but the header counts \d+/);
    expect(await listed(`file://${tmp}/bad-missing/out/`)).toEqual([]);
  });

  it("an unknown format version: a ManifestError, nothing written", async () => {
    const { manifest } = await copyCase("bad-version", (l) => {
      const h = JSON.parse(l[0]);
      h.version = 2;
      return [JSON.stringify(h), ...l.slice(1)];
    });
    const err = await run(manifest, "bad-version").catch((e) => e);
    expect(err).toBeInstanceOf(ManifestError);
    expect(err.message).toMatch(/does not start with a manifest v1 header: version/);
    expect(await listed(`file://${tmp}/bad-version/out/`)).toEqual([]);
  });
});

describe("materialize: JSON Lines byte for byte, whatever the lines look like", () => {
  const enc = new TextEncoder();
  /** The shard's lines (without `\n`) and whether each has a manifest entry that keeps it. */
  const lines: { text: string; id?: string; keep?: boolean }[] = [
    { text: '{"id":"a","text":"ends in CR LF"}\r', id: "a", keep: true },
    {
      text: '{"id":"b","text":"an escaped \\n inside a string, and \\"quotes\\""}',
      id: "b",
      keep: true,
    },
    { text: '{"text":"the id comes last","id":"c"}', id: "c", keep: true },
    { text: `{"id":"d","text":"${"long ".repeat(40_000)}"}`, id: "d", keep: true },
    { text: '{"id":"é-ü\\u00e9","text":"a non-ASCII id with an escape"}', id: "é-üé", keep: false },
    { text: "" },
    { text: '{ "id" : "g" , "text":"spaced"}', id: "g", keep: true },
    { text: '{"id":"h","text":"dropped"}', id: "h", keep: false },
    { text: '{"id":"i","text":"kept, after a dropped one"}', id: "i", keep: true },
    { text: '{"id":"j","text":"the last line has no newline"}', id: "j", keep: true },
  ];
  const shardText = lines.map((l) => l.text).join("\n");
  const expected = (keep: boolean) =>
    lines.filter((l) => l.id !== undefined && l.keep === keep)
      .map((l) => l.text.replace(/\r$/, "") + "\n").join("");

  /** A manifest for `bytes` at `shard`, entries written by `spell`, fields in the writer's order by default. */
  async function handManifest(
    dir: string,
    shard: string,
    bytes: Uint8Array,
    entries: { id: string; line: number; keep: boolean }[],
    spell: (e: { id: string; line: number; keep: boolean }, i: number) => string = (e) =>
      JSON.stringify({ id: e.id, line: e.line, score: e.keep ? 0.75 : 0.25, keep: e.keep }),
  ) {
    await storage.write(shard, bytes);
    const kept = entries.filter((e) => e.keep).length;
    const header = {
      kind: "datarater.manifest",
      version: 1,
      createdAt: new Date(0).toISOString(),
      model: { uri: "hand", sha256: "0".repeat(64), format: "hand", maxLength: 1 },
      input: {
        uri: shard,
        etag: null,
        sha256: createHash("sha256").update(bytes).digest("hex"),
        size: bytes.length,
      },
      fields: { id: "id", text: "text" },
      onInvalid: "skip",
      policy: { kind: "threshold", threshold: 0.5 },
      threshold: 0.5,
      counts: {
        records: entries.length,
        kept,
        dropped: entries.length - kept,
        skippedInvalid: 0,
      },
      invalid: [],
      scores: { min: 0, max: 1, mean: 0.5, deciles: null, sampleSize: 0 },
    };
    const manifest = `file://${tmp}/${dir}/m.manifest.jsonl`;
    await storage.write(
      manifest,
      [JSON.stringify(header), ...entries.map(spell)].join("\n") + "\n",
    );
    return manifest;
  }

  const entriesOf = () =>
    lines.flatMap((l, i) => l.id === undefined ? [] : [{ id: l.id, line: i + 1, keep: l.keep! }]);

  for (const gz of [false, true]) {
    for (const spelling of ["the writer's", "another"] as const) {
      it(`${gz ? "gzip" : "plain"}, manifest in ${spelling} spelling: CR LF, escapes, long lines, no final newline`, async () => {
        const dir = `bytes-${gz ? "gz" : "plain"}-${spelling === "another" ? "other" : "writer"}`;
        const bytes = gz ? await gzip(shardText) : enc.encode(shardText);
        const manifest = await handManifest(
          dir,
          `file://${tmp}/${dir}/shard.jsonl${gz ? ".gz" : ""}`,
          bytes,
          entriesOf(),
          spelling === "another"
            ? (e) =>
              `{"keep": ${e.keep}, "score": 0.5, "line": ${e.line}, "id": ${JSON.stringify(e.id)}}`
            : undefined,
        );
        const r = await materializeShard(storage, {
          manifest,
          output: `file://${tmp}/${dir}/out/kept.jsonl${gz ? ".gz" : ""}`,
          dropped: `file://${tmp}/${dir}/out/dropped.jsonl${gz ? ".gz" : ""}`,
        });
        expect([r.kept, r.droppedRecords]).toEqual([7, 2]);
        const read = async (name: string) => {
          const b = await storage.readBytes(`file://${tmp}/${dir}/out/${name}${gz ? ".gz" : ""}`);
          return text(gz ? await gunzip(b) : b);
        };
        expect(await read("kept.jsonl")).toBe(expected(true));
        expect(await read("dropped.jsonl")).toBe(expected(false));
      });
    }
  }

  it("a shard of several read buffers (lines across buffer boundaries, one line longer than a buffer): byte for byte, plain and gzip", async () => {
    // Reads are 1 MiB where the stream allows (a recycled buffer): lines that straddle reads, and
    // one that spans two, must come out whole.
    const big: string[] = [];
    for (let i = 0; big.join("\n").length < 3_500_000; i++) {
      const pad = i === 7 ? "x".repeat(1_500_000) : "y".repeat((i * 7919) % 20_000);
      big.push(JSON.stringify({ id: `big-${i}`, text: pad, n: i }));
    }
    const entries = big.map((_, i) => ({ id: `big-${i}`, line: i + 1, keep: i % 3 !== 1 }));
    const want = (keep: boolean) =>
      big.filter((_, i) => entries[i].keep === keep).map((l) => l + "\n").join("");
    for (const gz of [false, true]) {
      const dir = `big-${gz ? "gz" : "plain"}`;
      const body = big.join("\n") + "\n";
      const manifest = await handManifest(
        dir,
        `file://${tmp}/${dir}/shard.jsonl${gz ? ".gz" : ""}`,
        gz ? await gzip(body) : enc.encode(body),
        entries,
      );
      const ext = gz ? ".jsonl.gz" : ".jsonl";
      await materializeShard(storage, {
        manifest,
        output: `file://${tmp}/${dir}/out/kept${ext}`,
        dropped: `file://${tmp}/${dir}/out/dropped${ext}`,
      });
      const read = async (name: string) => {
        const b = await storage.readBytes(`file://${tmp}/${dir}/out/${name}${ext}`);
        return text(gz ? await gunzip(b) : b);
      };
      expect(await read("kept")).toBe(want(true));
      expect(await read("dropped")).toBe(want(false));
    }
  });

  it("a manifest entry in another spelling (an extra field) past the first read block is read as readManifest reads it: same output", async () => {
    const n = 6000;
    const shard = Array.from({ length: n }, (_, i) => `{"id":"r-${i}","text":"t${i}"}`).join("\n") +
      "\n";
    const entries = Array.from(
      { length: n },
      (_, i) => ({ id: `r-${i}`, line: i + 1, keep: i % 3 !== 0 }),
    );
    const manifest = await handManifest(
      "handover",
      `file://${tmp}/handover/shard.jsonl`,
      enc.encode(shard),
      entries,
      (e, i) =>
        i === 5900
          ? JSON.stringify({ keep: e.keep, id: e.id, line: e.line, score: 0.5, note: "extra" })
          : JSON.stringify({ id: e.id, line: e.line, score: 0.5, keep: e.keep }),
    );
    const r = await materializeShard(storage, {
      manifest,
      output: `file://${tmp}/handover/out/kept.jsonl`,
    });
    expect(r.kept).toBe(entries.filter((e) => e.keep).length);
    expect(await storage.readText(`file://${tmp}/handover/out/kept.jsonl`)).toBe(
      entries.filter((e) => e.keep).map((e) => `{"id":"${e.id}","text":"t${e.line - 1}"}\n`).join(
        "",
      ),
    );
  });

  it("an entry naming another id than its line holds (the shard's bytes unchanged): a mismatch naming both, nothing written", async () => {
    const bytes = enc.encode(shardText);
    const entries = entriesOf().map((e) => e.id === "i" ? { ...e, id: "not-i" } : e);
    const shard = `file://${tmp}/wrong-id/shard.jsonl`;
    const manifest = await handManifest("wrong-id", shard, bytes, entries);
    const err = await materializeShard(storage, {
      manifest,
      output: `file://${tmp}/wrong-id/out/kept.jsonl`,
      dropped: `file://${tmp}/wrong-id/out/dropped.jsonl`,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ManifestMismatchError);
    expect(err.message).toContain(manifest);
    expect(err.message).toContain(shard);
    expect(err.message).toContain('entry for id "not-i" at line 9, shard has id "i" there');
    expect(await listed(`file://${tmp}/wrong-id/out/`)).toEqual([]);
  });
});
