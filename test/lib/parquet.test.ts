/**
 * Parquet shards through readRecords: detection by content, row group by row group ranged reads,
 * every codec hyparquet-compressors adds, row numbers as lines, the same RecordError kinds and
 * fail/skip policy as JSON Lines, and the stream-without-URI error. Also storage.readRange on
 * files and over the real S3 protocol (s3rver).
 */
import { parquetMetadata } from "hyparquet";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ParquetError, rangedFile } from "../../lib/parquet.ts";
import { readRecords, type RecordEntry, RecordError } from "../../lib/records.ts";
import { loadDataset } from "../../training/data.ts";
import {
  NotFoundError,
  ObjectChangedError,
  type Storage,
  type UriStorage,
} from "../../lib/storage.ts";
import { startTempS3, stopTempS3, type TempS3 } from "../support/temp-s3.ts";
import { type FixtureCodec, parquetBytes, recordsParquet } from "./parquet-fixtures.ts";

let temp: TempS3;
let tmp: string;
let storage: UriStorage;

beforeAll(async () => {
  temp = await startTempS3("parquet-test-", ["pq-bucket"]);
  ({ tmp, storage } = temp);
});

afterAll(() => stopTempS3(temp));

let fileCounter = 0;
async function writeTemp(bytes: Uint8Array): Promise<string> {
  const path = `${tmp}/shard-${fileCounter++}.parquet`;
  await Deno.writeFile(path, bytes);
  return path;
}

function sampleRecords(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `doc-${i}`,
    text: i % 3 ? `record ${i}: ${"été ".repeat(i % 7)}text` : "",
    source: i % 2 ? "web" : "books",
  }));
}

/** Deterministic text that does not compress, so byte ranges are as large as the data. */
function noisyText(seed: number, length: number): string {
  let x = seed * 2654435761 + 1;
  let out = "";
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out += String.fromCharCode(33 + (x >>> 16) % 90);
  }
  return out;
}

/** The test's storage, recording every range asked for. */
function recordingStorage(): { calls: [number, number][]; storage: Storage } {
  const calls: [number, number][] = [];
  const base = storage;
  const recording = new Proxy(base, {
    get(target, prop) {
      if (prop === "readRange") {
        return (uri: string, start: number, end: number, options?: { etag?: string | null }) => {
          calls.push([start, end]);
          return target.readRange(uri, start, end, options);
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { calls, storage: recording };
}

/** Byte span [start, end) of each row group's column chunks (optionally only some columns). */
function groupSpans(bytes: Uint8Array, only?: string[]): [number, number][] {
  return parquetMetadata(bytes).row_groups.map((g) => {
    let start = Infinity;
    let end = 0;
    for (const c of g.columns) {
      const m = c.meta_data!;
      if (only && !only.includes(m.path_in_schema[0])) continue;
      const s = Number(m.dictionary_page_offset ?? m.data_page_offset);
      start = Math.min(start, s);
      end = Math.max(end, s + Number(m.total_compressed_size));
    }
    return [start, end];
  });
}

describe("readRecords on Parquet shards", () => {
  const codecs: FixtureCodec[] = ["SNAPPY", "GZIP", "ZSTD", "BROTLI", "UNCOMPRESSED"];
  for (const codec of codecs) {
    test(`${codec}: every row of 3 row groups in order, row numbers as 1-based lines`, async () => {
      const records = sampleRecords(20);
      const bytes = recordsParquet(records, { codec, rowGroupSize: 7 });
      const meta = parquetMetadata(bytes);
      expect(meta.row_groups.map((g) => Number(g.num_rows))).toEqual([7, 7, 6]);
      expect(meta.row_groups[0].columns[1].meta_data!.codec).toBe(codec);
      const got = await Array.fromAsync(readRecords(storage, await writeTemp(bytes)));
      expect(got).toEqual(records.map((r, i): RecordEntry => ({
        line: i + 1,
        id: r.id,
        text: r.text,
        record: r,
        invalidUtf8: false,
      })));
    });
  }

  test("detected by content, not by name: a Parquet file named .jsonl reads as Parquet", async () => {
    const path = `${tmp}/misnamed.jsonl`;
    await Deno.writeFile(path, recordsParquet(sampleRecords(5)));
    const got = await Array.fromAsync(readRecords(storage, path));
    expect(got.map((r) => r.id)).toEqual(["doc-0", "doc-1", "doc-2", "doc-3", "doc-4"]);
  });

  test("reads one row group at a time: the first record comes after only the footer and group 0 are read", async () => {
    // 4 row groups of ~250 KB: bigger than the 512 KiB footer read is of the whole file.
    const records = Array.from({ length: 400 }, (_, i) => ({
      id: `r${i}`,
      text: noisyText(i, 2500),
    }));
    const bytes = recordsParquet(records, { codec: "UNCOMPRESSED", rowGroupSize: 100 });
    const spans = groupSpans(bytes);
    expect(spans.length).toBe(4);
    const uri = await writeTemp(bytes);
    const { calls, storage: rs } = recordingStorage();
    const it = readRecords(rs, uri);
    const first = await it.next();
    expect(first.value?.line).toBe(1);
    // The footer (the file's last bytes), then ranges inside row group 0 only.
    expect(calls[0][1]).toBe(bytes.length);
    for (const [s, e] of calls.slice(1)) {
      expect(s).toBeGreaterThanOrEqual(spans[0][0]);
      expect(e).toBeLessThanOrEqual(spans[0][1]);
    }
    const rest = await Array.fromAsync(it);
    expect(rest.length).toBe(399);
    expect(rest[398]).toMatchObject({ line: 400, id: "r399", text: records[399].text });
    // Every data range lies within a single row group.
    for (const [s, e] of calls.slice(1)) {
      expect(spans.some(([gs, ge]) => s >= gs && e <= ge)).toBe(true);
    }
  });

  test("columns: [] reads only the id and text columns' bytes; record holds just those", async () => {
    const records = Array.from({ length: 300 }, (_, i) => ({
      id: `r${i}`,
      text: `text ${i}`,
      big: noisyText(i, 3000),
    }));
    const bytes = recordsParquet(records, { codec: "UNCOMPRESSED", rowGroupSize: 100 });
    const bigSpans = groupSpans(bytes, ["big"]);
    const { calls, storage: rs } = recordingStorage();
    const got = await Array.fromAsync(
      readRecords(rs, await writeTemp(bytes), { columns: [] }),
    );
    expect(got.map((r) => r.record)).toEqual(records.map((r) => ({ id: r.id, text: r.text })));
    for (const [s, e] of calls.slice(1)) { // after the footer read
      for (const [bs, be] of bigSpans) expect(e <= bs || s >= be).toBe(true);
    }
  });

  test("custom field names; INT64 ids come back as decimal strings", async () => {
    const bytes = parquetBytes([
      { name: "doc_id", data: [7n, 8n, 9007199254740993n], type: "INT64" },
      { name: "content", data: ["a", "b", "c"], type: "STRING" },
    ]);
    const got = await Array.fromAsync(
      readRecords(storage, await writeTemp(bytes), { idField: "doc_id", textField: "content" }),
    );
    expect(got.map((r) => [r.line, r.id, r.text])).toEqual([
      [1, "7", "a"],
      [2, "8", "b"],
      [3, "9007199254740993", "c"],
    ]);
    expect(got[0].record).toEqual({ doc_id: 7n, content: "a" });
  });

  const withNulls = () =>
    parquetBytes([
      { name: "id", data: ["a", null, "c", "d", "e"], type: "STRING" },
      { name: "text", data: ["x", "y", "z", null, "w"], type: "STRING" },
    ], { rowGroupSize: 2 });

  test("skip: rows with a null id or text are reported as RecordErrors with their row numbers", async () => {
    const skipped: RecordError[] = [];
    const got = await Array.fromAsync(readRecords(storage, await writeTemp(withNulls()), {
      onInvalid: "skip",
      onSkip: (e) => skipped.push(e),
    }));
    expect(got.map((r) => [r.line, r.id])).toEqual([[1, "a"], [3, "c"], [5, "e"]]);
    expect(skipped.map((e) => [e.line, e.kind, e.message])).toEqual([
      [2, "missing-id", 'line 2: field "id" must be a string or number'],
      [4, "missing-text", 'line 4: field "text" must be a string'],
    ]);
  });

  test("fail (the default): the first bad row throws its RecordError", async () => {
    const it = readRecords(storage, await writeTemp(withNulls()));
    expect((await it.next()).value?.id).toBe("a");
    const err = await it.next().catch((e) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect(err).toMatchObject({ line: 2, kind: "missing-id" });
  });

  test("a text column that is not strings fails each row as missing-text", async () => {
    const bytes = parquetBytes([
      { name: "id", data: ["a", "b"], type: "STRING" },
      { name: "text", data: [1, 2], type: "INT32" },
    ]);
    const skipped: RecordError[] = [];
    const got = await Array.fromAsync(readRecords(storage, await writeTemp(bytes), {
      onInvalid: "skip",
      onSkip: (e) => skipped.push(e),
    }));
    expect(got).toEqual([]);
    expect(skipped.map((e) => [e.line, e.kind])).toEqual([[1, "missing-text"], [
      2,
      "missing-text",
    ]]);
  });

  test("a file without the id column reports missing-id per row rather than failing to open", async () => {
    const bytes = parquetBytes([{ name: "text", data: ["x", "y"], type: "STRING" }]);
    const err = await Array.fromAsync(readRecords(storage, await writeTemp(bytes))).catch((e) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect(err).toMatchObject({ line: 1, kind: "missing-id" });
  });

  test("invalid UTF-8 in a string column is flagged on that row, with U+FFFD", async () => {
    const enc = new TextEncoder();
    const bytes = parquetBytes([
      { name: "id", data: ["a", "b"], type: "STRING" },
      {
        name: "text",
        data: [enc.encode("fine"), new Uint8Array([0x6f, 0x6b, 0xff, 0x21])],
        type: "BYTE_ARRAY",
      },
    ]);
    const got = await Array.fromAsync(readRecords(storage, await writeTemp(bytes)));
    expect(got.map((r) => [r.text, r.invalidUtf8])).toEqual([["fine", false], ["ok\uFFFD!", true]]);
    expect(got[1].record.text).toBe("ok\uFFFD!");
  });

  test("a Parquet byte stream without its URI throws ParquetError saying a URI is needed", async () => {
    const bytes = recordsParquet(sampleRecords(3));
    const stream = new Blob([bytes as BlobPart]).stream();
    const err = await Array.fromAsync(readRecords(storage, stream)).catch((e) => e);
    expect(err).toBeInstanceOf(ParquetError);
    expect(err.kind).toBe("needs-random-access");
    expect(err.message).toContain("pass its URI");
  });

  test("a Parquet stream with options.uri: rows by ranged reads, and the stream is read to its end", async () => {
    const records = sampleRecords(30);
    const bytes = recordsParquet(records, { rowGroupSize: 8 });
    const uri = await writeTemp(bytes);
    let seen = 0;
    const counted = (await Deno.open(uri)).readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          seen += chunk.length;
          c.enqueue(chunk);
        },
      }),
    );
    const got = await Array.fromAsync(readRecords(storage, counted, { uri }));
    expect(got.map((r) => r.id)).toEqual(records.map((r) => r.id));
    expect(seen).toBe(bytes.length);
  });

  test("a failing stream given with options.uri stops the Parquet read with its error", async () => {
    const bytes = recordsParquet(sampleRecords(30), { rowGroupSize: 8 });
    const uri = await writeTemp(bytes);
    const failing = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, 16));
        c.error(new Error("connection reset"));
      },
    });
    const err = await Array.fromAsync(readRecords(storage, failing, { uri })).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe("connection reset");
  });

  test("a file that starts with PAR1 but is cut short is a corrupt ParquetError", async () => {
    const bytes = recordsParquet(sampleRecords(10));
    const err = await Array.fromAsync(readRecords(storage, await writeTemp(bytes.slice(0, -10))))
      .catch((e) => e);
    expect(err).toBeInstanceOf(ParquetError);
    expect(err.kind).toBe("corrupt");
    expect(err.message).toContain("footer cannot be read");
  });

  test("a row group over maxRowGroupBytes is refused before it is read", async () => {
    const bytes = recordsParquet(sampleRecords(10));
    const { calls, storage: rs } = recordingStorage();
    const err = await Array.fromAsync(
      readRecords(rs, await writeTemp(bytes), { maxRowGroupBytes: 50 }),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(ParquetError);
    expect(err.kind).toBe("row-group-too-large");
    expect(err.message).toContain("smaller row groups");
    expect(calls.length).toBe(1); // the footer only
  });

  test("JSON Lines streams are unaffected by options.uri", async () => {
    const stream = new Blob(['{"id":"a","text":"x"}\n{"id":"b","text":"y"}\n']).stream();
    const got = await Array.fromAsync(readRecords(storage, stream, { uri: "file:///nonexistent" }));
    expect(got.map((r) => r.id)).toEqual(["a", "b"]);
  });

  test("over S3 (s3rver): a Parquet shard reads through ranged GETs", async () => {
    const records = sampleRecords(25);
    await storage.write(
      "s3://pq-bucket/shards/a.parquet",
      recordsParquet(records, { rowGroupSize: 10 }),
    );
    const got = await Array.fromAsync(readRecords(storage, "s3://pq-bucket/shards/a.parquet"));
    expect(got.map((r) => [r.line, r.id, r.text])).toEqual(
      records.map((r, i) => [i + 1, r.id, r.text]),
    );
  });
});

describe("training data", () => {
  test("loadDataset lists .parquet shards under a prefix beside JSON Lines ones and loads them", async () => {
    const dir = `${tmp}/train/`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(
      `${dir}a.parquet`,
      parquetBytes([
        { name: "id", data: ["a1", "a2", "a3"], type: "STRING" },
        { name: "text", data: ["alpha", null, "gamma"], type: "STRING" },
      ], { rowGroupSize: 2 }),
    );
    await Deno.writeTextFile(`${dir}b.jsonl`, '{"id":"b1","text":"beta"}\n');
    const ds = await loadDataset(storage, dir, { seqLen: 8, name: "train" });
    expect(ds.stats).toMatchObject({ shards: 2, records: 3, skipped: { "missing-text": 1 } });
    const text = (i: number) =>
      new TextDecoder().decode(ds.bytes.subarray(ds.offsets[i], ds.offsets[i + 1]));
    expect([0, 1, 2].map(text)).toEqual(["alpha", "gamma", "beta"]);
  });
});

describe("readRange", () => {
  const data = new Uint8Array(Array.from({ length: 1000 }, (_, i) => i % 251));

  test("file: returns bytes [start, end), cut at the end of the file", async () => {
    const path = `${tmp}/range.bin`;
    await Deno.writeFile(path, data);
    expect(await storage.readRange(path, 10, 20)).toEqual(data.slice(10, 20));
    expect(await storage.readRange(`file://${path}`, 0, 1000)).toEqual(data);
    expect(await storage.readRange(path, 990, 2000)).toEqual(data.slice(990));
    expect(await storage.readRange(path, 5, 5)).toEqual(new Uint8Array(0));
    await expect(storage.readRange(`${tmp}/missing.bin`, 0, 4)).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test("S3 (s3rver): a ranged GET returns exactly bytes [start, end)", async () => {
    await storage.write("s3://pq-bucket/range.bin", data);
    expect(await storage.readRange("s3://pq-bucket/range.bin", 10, 20)).toEqual(data.slice(10, 20));
    expect(await storage.readRange("s3://pq-bucket/range.bin", 996, 1000)).toEqual(data.slice(996));
    expect(await storage.readRange("s3://pq-bucket/range.bin", 990, 2000)).toEqual(data.slice(990));
    await expect(storage.readRange("s3://pq-bucket/missing.bin", 0, 4)).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test("file: a read pinned to an ETag fails once the file is replaced", async () => {
    const path = `${tmp}/pinned.bin`;
    await Deno.writeFile(path, data);
    const { etag } = (await storage.stat(path))!;
    expect(await storage.readRange(path, 0, 10, { etag })).toEqual(data.slice(0, 10));
    await Deno.writeFile(path, data.slice(0, 500)); // another version (another size)
    const err = await storage.readRange(path, 0, 10, { etag }).catch((e) => e);
    expect(err).toBeInstanceOf(ObjectChangedError);
    expect(err.message).toMatch(/changed while being read/);
  });

  test("S3 (s3rver): a read pinned to an ETag fails once the object is replaced", async () => {
    const uri = "s3://pq-bucket/pinned.bin";
    await storage.write(uri, data);
    const { etag } = (await storage.stat(uri))!;
    expect(await storage.readRange(uri, 0, 10, { etag })).toEqual(data.slice(0, 10));
    await storage.delete(uri);
    await storage.write(uri, data.slice(0, 500));
    await expect(storage.readRange(uri, 0, 10, { etag })).rejects.toBeInstanceOf(
      ObjectChangedError,
    );
    // Unpinned, the new version is read.
    expect(await storage.readRange(uri, 0, 10)).toEqual(data.slice(0, 10));
  });

  test("a Parquet file replaced after it was opened fails instead of mixing versions", async () => {
    const uri = "s3://pq-bucket/replaced.parquet";
    await storage.write(uri, data);
    const file = await rangedFile(storage, uri); // pinned to the ETag stat reports now
    await storage.delete(uri);
    await storage.write(uri, data.slice().reverse());
    await expect(file.slice(0, 8)).rejects.toBeInstanceOf(ObjectChangedError);
  });
});
