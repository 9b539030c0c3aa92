import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  keptIds,
  keptRecords,
  MANIFEST_KIND,
  type ManifestEntry,
  ManifestError,
  type ManifestHeader,
  ManifestMismatchError,
  ManifestSpool,
  parseManifestHeader,
  PolicySchema,
  readManifest,
  readManifestEntries,
  readManifestHeader,
  readManifestHeaderIfExists,
  ScoreSummaryBuilder,
  SPOOL_PREFIX,
  verifyManifest,
} from "../../lib/manifest.ts";
import { gzip } from "../../lib/records.ts";
import { hostTag, tempFileOwner } from "../../lib/tempfiles.ts";
import { FileStorage, MemoryStorage, NotFoundError } from "../../lib/storage.ts";
import { createHash } from "node:crypto";

const storage = new FileStorage();
let dir: string;
beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "manifest-test-" });
});
afterAll(async () => {
  await Deno.remove(dir, { recursive: true });
});

const sha = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

function header(overrides: Partial<ManifestHeader> = {}): ManifestHeader {
  return {
    kind: MANIFEST_KIND,
    version: 1,
    createdAt: "2026-01-01T00:00:00.000Z",
    model: { uri: "s3://m/rater.onnx", sha256: "a".repeat(64), format: "1", maxLength: 64 },
    input: { uri: "file:///x", etag: null, sha256: "b".repeat(64), size: 0 },
    fields: { id: "id", text: "text" },
    onInvalid: "fail",
    policy: { kind: "threshold", threshold: 0 },
    threshold: 0,
    counts: { records: 0, kept: 0, dropped: 0, skippedInvalid: 0 },
    invalid: [],
    scores: { min: null, max: null, mean: null, deciles: null, sampleSize: 0 },
    ...overrides,
  };
}

/** Writes a shard and its manifest (entries given per shard line) to `dir`. */
async function writeShardAndManifest(
  name: string,
  shardText: string | Uint8Array,
  entries: ManifestEntry[],
  extra: Partial<ManifestHeader> = {},
) {
  const shard = `file://${dir}/${name}.jsonl`;
  const manifest = `file://${dir}/${name}.manifest.jsonl`;
  await storage.write(shard, shardText);
  const info = await storage.stat(shard);
  const bytes = typeof shardText === "string" ? new TextEncoder().encode(shardText) : shardText;
  const h = header({
    input: { uri: shard, etag: info!.etag, sha256: sha(bytes), size: bytes.length },
    counts: {
      records: entries.length,
      kept: entries.filter((e) => e.keep).length,
      dropped: entries.filter((e) => !e.keep).length,
      skippedInvalid: 0,
    },
    ...extra,
  });
  const spool = await ManifestSpool.create();
  try {
    for (const e of entries) await spool.add(e);
    await storage.write(manifest, spool.stream(h), { ifNoneMatch: "*" });
  } finally {
    await spool.dispose();
  }
  return { shard, manifest, header: h };
}

describe("manifest v1 format", () => {
  it("a spooled manifest is the header line then one entry per record, in order", async () => {
    const entries = Array.from({ length: 5000 }, (_, i) => ({
      id: `r${i}`,
      line: i + 1,
      score: i / 10,
      keep: i % 3 === 0,
    }));
    const shardText = entries.map((e) => JSON.stringify({ id: e.id, text: "x" })).join("\n");
    const { manifest, header: h } = await writeShardAndManifest("spool", shardText, entries);
    const text = await Deno.readTextFile(new URL(manifest));
    const lines = text.trimEnd().split("\n");
    expect(lines.length).toBe(5001);
    expect(JSON.parse(lines[0])).toEqual(h);
    expect(JSON.parse(lines[1])).toEqual({ id: "r0", line: 1, score: 0, keep: true });
    expect(JSON.parse(lines[5000])).toEqual({ id: "r4999", line: 5000, score: 499.9, keep: false });
    expect(await readManifestHeader(storage, manifest)).toEqual(h);
    const read = await Array.fromAsync(readManifestEntries(storage, manifest));
    expect(read).toEqual(entries);
  });

  it("byteLength is the exact length of the streamed manifest, even while a flush is pending", async () => {
    const spool = await ManifestSpool.create();
    try {
      for (let i = 0; i < 300; i++) {
        await spool.add({ id: `r${i}`, line: i + 1, score: 1, keep: true });
      }
      const h = header({ counts: { records: 300, kept: 300, dropped: 0, skippedInvalid: 0 } });
      const stream = spool.stream(h); // starts a flush of the buffered entries
      const length = await spool.byteLength(h);
      expect((await new Response(stream).arrayBuffer()).byteLength).toBe(length);
    } finally {
      await spool.dispose();
    }
  });

  it("the spool file is deleted on dispose", async () => {
    const spool = await ManifestSpool.create();
    await spool.add({ id: "a", line: 1, score: 1, keep: true });
    await spool.dispose();
    await expect(Deno.stat(spool.path)).rejects.toThrow();
  });

  it("a spool file is named after the writing process (pid), so a sweep can find stale ones", async () => {
    const spool = await ManifestSpool.create();
    try {
      const name = spool.path.split("/").pop()!;
      expect(name.startsWith(`${SPOOL_PREFIX}.`)).toBe(true);
      expect(tempFileOwner(name)).toEqual({ pid: Deno.pid, host: hostTag() });
    } finally {
      await spool.dispose();
    }
  });

  it("header validation names the wrong fields", () => {
    expect(() => parseManifestHeader({ ...header(), version: 2 }, "s3://b/m")).toThrowError(
      /s3:\/\/b\/m does not start with a manifest v1 header: version/,
    );
    expect(() => parseManifestHeader({ kind: "other" })).toThrowError(ManifestError);
  });

  it("policies are validated: fraction in [0,1], k <= b, no unknown keys", () => {
    expect(PolicySchema.parse({ kind: "topK", k: 3, b: 4 })).toEqual({
      kind: "topK",
      k: 3,
      b: 4,
      seed: 0,
    });
    expect(PolicySchema.safeParse({ kind: "topK", k: 5, b: 4 }).success).toBe(false);
    expect(PolicySchema.safeParse({ kind: "keepFraction", fraction: 1.5 }).success).toBe(false);
    expect(PolicySchema.safeParse({ kind: "threshold", threshold: 1, x: 1 }).success).toBe(false);
    expect(PolicySchema.safeParse({ kind: "nope" }).success).toBe(false);
  });

  it("score summary is exact for small shards and reproducible from a sample for large", () => {
    const small = new ScoreSummaryBuilder(100);
    for (let i = 0; i <= 10; i++) small.add(i);
    expect(small.summary()).toEqual({
      min: 0,
      max: 10,
      mean: 5,
      deciles: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      sampleSize: 11,
    });
    const a = new ScoreSummaryBuilder(1000);
    const b = new ScoreSummaryBuilder(1000);
    for (let i = 0; i < 100_000; i++) {
      a.add(i / 100_000);
      b.add(i / 100_000);
    }
    const s = a.summary();
    expect(s).toEqual(b.summary());
    expect(s.sampleSize).toBe(1000);
    expect(s.min).toBe(0);
    expect(s.max).toBeCloseTo(0.99999, 10);
    expect(s.mean).toBeCloseTo(0.499995, 10);
    for (let i = 0; i <= 10; i++) expect(Math.abs(s.deciles![i] - i / 10)).toBeLessThan(0.06);
    expect(new ScoreSummaryBuilder().summary().deciles).toBeNull();
  });
});

describe("manifest reader", () => {
  const shardRecords = [
    { id: "a", text: "alpha" },
    { id: "b", text: "beta" },
    { id: "c", text: "gamma" },
    { id: "d", text: "delta" },
  ];
  const shardText = shardRecords.map((r) => JSON.stringify(r)).join("\n") + "\n";
  const entries: ManifestEntry[] = [
    { id: "a", line: 1, score: 0.9, keep: true },
    { id: "b", line: 2, score: 0.1, keep: false },
    { id: "c", line: 3, score: 0.5, keep: true },
    { id: "d", line: 4, score: 0.2, keep: false },
  ];

  it("keptIds streams the kept ids in input order", async () => {
    const { manifest } = await writeShardAndManifest("ids", shardText, entries);
    expect(await Array.fromAsync(keptIds(storage, manifest))).toEqual(["a", "c"]);
  });

  it("keptRecords joins manifest and shard, yielding kept records with their scores", async () => {
    const { manifest } = await writeShardAndManifest("join", shardText, entries);
    const kept = await Array.fromAsync(keptRecords(storage, manifest));
    expect(kept.map((r) => [r.id, r.text, r.line, r.score])).toEqual([
      ["a", "alpha", 1, 0.9],
      ["c", "gamma", 3, 0.5],
    ]);
  });

  it("keptRecords passes on each kept entry's spans and truncation, and nothing for entries without", async () => {
    const spans: [number, number, number][] = [[0, 3, 0.75], [3, 5, -0.5]];
    const { manifest } = await writeShardAndManifest("spans", shardText, [
      { ...entries[0], spans, truncated: true },
      ...entries.slice(1),
    ]);
    const kept = await Array.fromAsync(keptRecords(storage, manifest));
    expect(kept.map((r) => [r.id, r.spans, r.truncated])).toEqual([
      ["a", spans, true],
      ["c", undefined, undefined],
    ]);
    expect("spans" in kept[1]).toBe(false);
  });

  it("keptRecords reads gzip shards and skips lines the scorer skipped", async () => {
    const text = [
      JSON.stringify({ id: "a", text: "alpha" }),
      "{not json",
      JSON.stringify({ id: "a", text: "duplicate" }),
      "",
      JSON.stringify({ id: "b", text: "beta" }),
    ].join("\n");
    const { manifest } = await writeShardAndManifest("gz", await gzip(text), [
      { id: "a", line: 1, score: 1, keep: true },
      { id: "b", line: 5, score: 2, keep: true },
    ], { onInvalid: "skip" });
    const kept = await Array.fromAsync(keptRecords(storage, manifest));
    expect(kept.map((r) => [r.id, r.text])).toEqual([["a", "alpha"], ["b", "beta"]]);
  });

  it("keptRecords throws ManifestMismatchError when ids differ from the shard's", async () => {
    const { manifest } = await writeShardAndManifest("mismatch", shardText, [
      entries[0],
      { id: "zz", line: 2, score: 0, keep: true },
    ]);
    await expect(Array.fromAsync(keptRecords(storage, manifest))).rejects.toThrowError(
      /does not match shard .*entry for id "zz" at line 2, shard has id "b" at line 2/,
    );
  });

  it("keptRecords detects changed shard bytes by sha256 when the ETag changed", async () => {
    const { manifest, shard } = await writeShardAndManifest("changed", shardText, entries);
    // Same ids and lines, different text (and size, so the ETag surely differs): the hash tells.
    await storage.write(shard, shardText.replace("alpha", "ALPHA!"));
    await expect(Array.fromAsync(keptRecords(storage, manifest))).rejects.toThrowError(
      ManifestMismatchError,
    );
    const v = await verifyManifest(storage, manifest);
    expect(v.ok).toBe(false);
    expect(v.method).toBe("sha256");
    expect(v.reason).toMatch(/differs from the header's/);
  });

  it("verifyManifest accepts by ETag, and by sha256 for a byte-identical copy", async () => {
    const { manifest } = await writeShardAndManifest("verify", shardText, entries);
    expect(await verifyManifest(storage, manifest)).toMatchObject({ ok: true, method: "etag" });
    const copy = `file://${dir}/verify-copy.jsonl`;
    await storage.write(copy, shardText);
    expect(await verifyManifest(storage, manifest, { shard: copy })).toEqual({
      ok: true,
      method: "sha256",
      shard: copy,
    });
  });

  it("a truncated manifest is an error, not a short read", async () => {
    const { manifest } = await writeShardAndManifest("trunc", shardText, entries);
    const text = await Deno.readTextFile(new URL(manifest));
    const cut = `file://${dir}/trunc-cut.manifest.jsonl`;
    await storage.write(cut, text.split("\n").slice(0, 3).join("\n") + "\n");
    await expect(Array.fromAsync(readManifestEntries(storage, cut))).rejects.toThrowError(
      /truncated or corrupt: 2 entries but the header counts 4/,
    );
  });

  it("entries out of input order or malformed are reported with their line", async () => {
    const bad = `file://${dir}/bad.manifest.jsonl`;
    const h = header({ counts: { records: 2, kept: 0, dropped: 2, skippedInvalid: 0 } });
    await storage.write(
      bad,
      [h, { id: "a", line: 2, score: 0, keep: false }, { id: "b", line: 1, score: 0, keep: false }]
        .map((x) => JSON.stringify(x)).join("\n"),
    );
    await expect(Array.fromAsync(readManifestEntries(storage, bad))).rejects.toThrowError(
      /line 3: entries are out of input order/,
    );
    const bad2 = `file://${dir}/bad2.manifest.jsonl`;
    await storage.write(bad2, JSON.stringify(h) + "\n" + '{"id":"a","score":"x"}\n');
    await expect(Array.fromAsync(readManifestEntries(storage, bad2))).rejects.toThrowError(
      /line 2: not a manifest entry/,
    );
    const { header: readHeader } = await readManifest(storage, bad2);
    expect(readHeader.counts.records).toBe(2);
  });

  it("lines are read the same however the stream cuts them: CRLF, blank lines, UTF-8 across chunks, no final newline", async () => {
    // Every chunk 5 bytes: lines, `\r\n` pairs and multi-byte characters all straddle chunks.
    class Chunked extends MemoryStorage {
      override async read(uri: string): Promise<ReadableStream<Uint8Array>> {
        const bytes = await this.readBytes(uri);
        let at = 0;
        return new ReadableStream({
          pull(controller) {
            if (at >= bytes.length) return controller.close();
            controller.enqueue(bytes.slice(at, at += 5));
          },
        });
      }
    }
    const chunked = new Chunked();
    const uni: ManifestEntry[] = [
      { id: "é-1", line: 1, score: 0.5, keep: true },
      { id: "日本-2", line: 3, score: 0.25, keep: false },
      { id: "🙂-3", line: 4, score: 0.75, keep: true },
    ];
    const h = header({ counts: { records: 3, kept: 2, dropped: 1, skippedInvalid: 0 } });
    const text = [h, ...uni].map((x) => JSON.stringify(x)).join("\r\n\n");
    await chunked.write("s3://bkt/m.manifest.jsonl", text);
    const read = await readManifest(chunked, "s3://bkt/m.manifest.jsonl");
    expect(read.header).toEqual(h);
    expect(await Array.fromAsync(read.entries)).toEqual(uni);
    // A line that is not UTF-8 is named by its line number (blank lines count), wherever it sits.
    const bad = new TextEncoder().encode(text);
    const at = bad.indexOf(0xe6); // the first byte of 日
    await chunked.write(
      "s3://bkt/bad.manifest.jsonl",
      Uint8Array.of(...bad.subarray(0, at), 0xff, ...bad.subarray(at + 1)),
    );
    await expect(Array.fromAsync(readManifestEntries(chunked, "s3://bkt/bad.manifest.jsonl")))
      .rejects.toThrowError(/line 5 is not valid UTF-8/);
  });

  it("an empty object is not a manifest", async () => {
    const empty = `file://${dir}/empty.manifest.jsonl`;
    await storage.write(empty, "");
    await expect(readManifestHeader(storage, empty)).rejects.toThrowError(
      /is empty: expected a manifest/,
    );
  });
});

describe("readManifestHeaderIfExists", () => {
  it("is null where there is no object, the header where there is a manifest, and throws for anything else", async () => {
    const store = new MemoryStorage();
    const uri = "s3://bucket/out/part-0.manifest.jsonl";
    expect(await readManifestHeaderIfExists(store, uri)).toBeNull();
    await expect(readManifestHeader(store, uri)).rejects.toBeInstanceOf(NotFoundError);
    const h = header();
    await store.write(uri, JSON.stringify(h) + "\n");
    expect(await readManifestHeaderIfExists(store, uri)).toEqual(h);
    const other = "s3://bucket/out/notes.txt";
    await store.write(other, "not json\n");
    await expect(readManifestHeaderIfExists(store, other)).rejects.toBeInstanceOf(ManifestError);
  });
});
