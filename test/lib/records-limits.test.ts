/**
 * The record reader's bounds: ids, lines and decompressed bytes are limited with errors that say
 * which limit, an over-long line can be skipped without being buffered, and a truncated gzip
 * stream is told apart from a failing store.
 */
import { expect, test } from "vitest";
import {
  encodeJsonl,
  gzip,
  readRecords,
  RecordError,
  ShardError,
  splitLines,
  textHeadOf,
  truncateForMessage,
  WORKER_LINE_BYTES,
} from "../../lib/records.ts";
import { MemoryStorage } from "../../lib/storage.ts";

const storage = new MemoryStorage();
const enc = new TextEncoder();

function streamOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(typeof ch === "string" ? enc.encode(ch) : ch);
      c.close();
    },
  });
}

test("an id over maxIdBytes fails as id-too-long with a short message", async () => {
  const long = "i".repeat(100_000);
  const err = await Array.fromAsync(
    readRecords(storage, streamOf(encodeJsonl([{ id: long, text: "t" }])), { maxIdBytes: 1024 }),
  ).catch((e) => e);
  expect(err).toBeInstanceOf(RecordError);
  expect(err.kind).toBe("id-too-long");
  expect(err.line).toBe(1);
  expect(err.message).toBe(
    'line 1: field "id" is at least 100000 bytes, over the 1024-byte limit for ids',
  );
});

test("the id limit counts UTF-8 bytes, and skip mode skips and reports such lines", async () => {
  // 400 × "é" is 400 characters but 800 bytes.
  const shard = encodeJsonl([
    { id: "é".repeat(400), text: "a" },
    { id: "é".repeat(300), text: "b" },
  ]);
  const skipped: RecordError[] = [];
  const got = await Array.fromAsync(
    readRecords(storage, streamOf(shard), {
      maxIdBytes: 700,
      onInvalid: "skip",
      onSkip: (e) => skipped.push(e),
    }),
  );
  expect(got.map((r) => r.line)).toEqual([2]);
  expect(skipped.map((e) => [e.line, e.kind, e.message])).toEqual([
    [1, "id-too-long", 'line 1: field "id" is 800 bytes, over the 700-byte limit for ids'],
  ]);
});

test("with onInvalid skip an over-long line is skipped and counted, and reading goes on", async () => {
  const long = JSON.stringify({ id: "long", text: "x".repeat(5000) });
  const skipped: RecordError[] = [];
  const got = await Array.fromAsync(
    readRecords(
      storage,
      // The long line arrives in pieces, none holding its newline until the last.
      streamOf(
        '{"id":"a","text":"1"}\n',
        long.slice(0, 2000),
        long.slice(2000, 4000),
        long.slice(4000) + '\n{"id":"b","text":"2"}\n',
      ),
      { maxLineBytes: 1000, onInvalid: "skip", onSkip: (e) => skipped.push(e) },
    ),
  );
  expect(got.map((r) => [r.line, r.id])).toEqual([[1, "a"], [3, "b"]]);
  expect(skipped.map((e) => [e.line, e.kind])).toEqual([[2, "line-too-long"]]);
});

test("splitLines skips an over-long line whose newline is in the same chunk", async () => {
  const reported: number[] = [];
  const lines = await Array.fromAsync(
    splitLines(streamOf("ok\n" + "y".repeat(50) + "\nlast"), 10, {
      onTooLong: (e) => reported.push(e.line),
    }),
  );
  expect(lines.map(([n, b]) => [n, new TextDecoder().decode(b)])).toEqual([[1, "ok"], [3, "last"]]);
  expect(reported).toEqual([2]);
});

test("a gzip shard expanding past maxDecompressedBytes stops with too-many-bytes", async () => {
  const bomb = await gzip(new Uint8Array(4 << 20).fill(0x0a)); // 4 MiB of newlines
  expect(bomb.length).toBeLessThan(64 * 1024);
  const err = await Array.fromAsync(
    readRecords(storage, streamOf(bomb), { maxDecompressedBytes: 1 << 20 }),
  ).catch((e) => e);
  expect(err).toBeInstanceOf(ShardError);
  expect(err.kind).toBe("too-many-bytes");
  expect(err.limit).toBe(1 << 20);
  expect(err.message).toBe(
    "the shard expands to more than 1048576 bytes after decompression",
  );
});

test("a shard with more than maxLines lines stops with too-many-lines", async () => {
  const err = await Array.fromAsync(
    readRecords(storage, streamOf("\n".repeat(1000) + '{"id":"a","text":"b"}\n'), {
      maxLines: 1000,
    }),
  ).catch((e) => e);
  expect(err).toBeInstanceOf(ShardError);
  expect(err.kind).toBe("too-many-lines");
  expect(err.message).toBe("the shard has more than 1000 lines");
});

test("a truncated gzip stream is a corrupt-gzip ShardError; a failing source keeps its error", async () => {
  const gz = await gzip(
    encodeJsonl(Array.from({ length: 200 }, (_, i) => ({ id: i, text: `r${i}` }))),
  );
  const err = await Array.fromAsync(readRecords(storage, streamOf(gz.subarray(0, gz.length - 20))))
    .catch((e) => e);
  expect(err).toBeInstanceOf(ShardError);
  expect(err.kind).toBe("corrupt-gzip");
  expect(err.message).toMatch(/^the shard is not a complete gzip stream \(/);

  const failure = new Error("connection reset");
  let sent = false;
  const failing = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(gz.subarray(0, 40));
      } else c.error(failure);
    },
  });
  expect(await Array.fromAsync(readRecords(storage, failing)).catch((e) => e)).toBe(failure);
});

test("truncateForMessage keeps short text and marks a cut with the original length", () => {
  expect(truncateForMessage("short", 10)).toBe("short");
  expect(truncateForMessage("x".repeat(25), 10)).toBe("xxxxxxxxxx…(25 chars)");
});

test("lines of a MiB and more are parsed in a worker with the same results and errors", async () => {
  const big = "é".repeat(WORKER_LINE_BYTES); // 2 MiB of UTF-8
  const bad = new Uint8Array(WORKER_LINE_BYTES + 20);
  bad.set(enc.encode('{"id":"u","text":"'));
  bad.fill(0x61, 18);
  bad[100] = 0xff; // invalid UTF-8 inside the text
  bad.set(enc.encode('"}'), bad.length - 2);
  const skipped: RecordError[] = [];
  const got = await Array.fromAsync(
    readRecords(
      storage,
      streamOf(
        JSON.stringify({ id: "big", text: big, source: "s" }) + "\n",
        bad,
        "\n" + '{"id":"broken","text":"' + "x".repeat(WORKER_LINE_BYTES) + "\n",
        JSON.stringify([1, "x".repeat(WORKER_LINE_BYTES)]) + "\n",
        '{"id":"small","text":"s"}\n',
      ),
      { onInvalid: "skip", onSkip: (e) => skipped.push(e) },
    ),
  );
  expect(got.map((r) => [r.line, r.id, r.text.length, r.invalidUtf8])).toEqual([
    [1, "big", WORKER_LINE_BYTES, false],
    [2, "u", WORKER_LINE_BYTES, true],
    [5, "small", 1, false],
  ]);
  expect(got[0].text).toBe(big);
  expect(got[0].record.source).toBe("s");
  expect(got[1].text[100 - 18]).toBe("\uFFFD");
  expect(skipped.map((e) => [e.line, e.kind])).toEqual([[3, "bad-json"], [4, "not-object"]]);
});

test("textHead keeps a text's head, whole characters, in both paths; invalidUtf8 sees the whole line", async () => {
  const long = "😀".repeat(WORKER_LINE_BYTES); // 4 MiB of UTF-8: parsed in the worker
  const got = await Array.fromAsync(
    readRecords(
      storage,
      streamOf(
        JSON.stringify({ id: "w", text: long }) + "\n",
        JSON.stringify({ id: "s", text: "abcdefghij" }) + "\n",
        // A lone surrogate far past the head, in a line for the worker.
        `{"id":"lone","text":"${"a".repeat(WORKER_LINE_BYTES)}\\ud800"}\n`,
        `{"id":"lone-short","text":"abcdefghij\\ud800"}\n`,
      ),
      { textHead: 5 },
    ),
  );
  expect(got.map((r) => [r.id, r.text, r.invalidUtf8])).toEqual([
    ["w", "😀😀😀", false], // 5 units would split the third pair: 6 units, 12 bytes
    ["s", "abcde", false],
    ["lone", "aaaaa", true],
    ["lone-short", "abcde", true],
  ]);
});

test("textHeadOf never splits a surrogate pair", () => {
  expect(textHeadOf("ab😀c", 3)).toBe("ab😀");
  expect(textHeadOf("ab😀c", 2)).toBe("ab");
  expect(textHeadOf("abc", 5)).toBe("abc");
});
