import process from "node:process";
import { expect, test } from "vitest";
import {
  encodeJsonl,
  encodeJsonlGz,
  gunzipStream,
  readRecords,
  RecordError,
  splitLines,
} from "../../lib/records.ts";
import { MemoryStorage } from "../../lib/storage.ts";

// Streams need no store; one is passed because a Parquet stream would be read through it.
const storage = new MemoryStorage();

function streamOf(
  ...chunks: (string | Uint8Array)[]
): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) {
        c.enqueue(typeof ch === "string" ? enc.encode(ch) : ch);
      }
      c.close();
    },
  });
}

test("reads plain and gzip JSON Lines alike (gzip detected by magic bytes)", async () => {
  const records = [{ id: "a", text: "one" }, {
    id: 2,
    text: "two",
    source: "x",
  }];
  const plain = await Array.fromAsync(
    readRecords(storage, streamOf(encodeJsonl(records))),
  );
  const gz = await Array.fromAsync(
    readRecords(storage, streamOf(await encodeJsonlGz(records))),
  );
  expect(plain.map((r) => [r.line, r.id, r.text])).toEqual([[1, "a", "one"], [
    2,
    "2",
    "two",
  ]]);
  expect(gz.map((r) => [r.line, r.id, r.text])).toEqual([[1, "a", "one"], [
    2,
    "2",
    "two",
  ]]);
  expect(gz[1].record.source).toBe("x");
});

test("a gzip shard of several members (cat a.gz b.gz) reads as one, cut anywhere", async () => {
  const a = await encodeJsonlGz([{ id: "a", text: "one" }]);
  const b = await encodeJsonlGz([{ id: "b", text: "two" }, { id: "c", text: "three" }]);
  const both = Uint8Array.of(...a, ...b);
  // One byte per chunk: member boundaries and headers straddle chunks.
  const got = await Array.fromAsync(
    readRecords(storage, streamOf(...Array.from(both, (x) => Uint8Array.of(x)))),
  );
  expect(got.map((r) => [r.line, r.id, r.text])).toEqual([
    [1, "a", "one"],
    [2, "b", "two"],
    [3, "c", "three"],
  ]);
});

/** `n` random bytes in hex: text that gzip does not shrink below half. */
const hex = (n: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(n)), (x) => x.toString(16)).join("");

test("a gzip stream read only in part stops its decompressor and cancels its source", async () => {
  // ~3 MB of gzip read for one chunk: the source is still open and zlib still holds output when
  // it is cancelled.
  const gz = await encodeJsonlGz(
    Array.from({ length: 4000 }, (_, i) => ({ id: i, text: hex(500) })),
  );
  let cancelled = false;
  let offset = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      if (offset >= gz.length) return c.close();
      c.enqueue(gz.slice(offset, offset += 4096));
    },
    cancel() {
      cancelled = true;
    },
  });
  const reader = gunzipStream(source, 1 << 16).getReader();
  const first = await reader.read();
  expect(first.value?.length).toBeGreaterThan(0);
  await reader.cancel();
  // Anything zlib emitted after the cancel would surface here as an unhandled error.
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(cancelled).toBe(true);
});

test("a gzip stream under backpressure leaves no listeners behind on its decompressor", async () => {
  // Thousands of 1 KiB writes into zlib with a 4 KiB output buffer: many have to wait for room,
  // and no wait may leave a listener behind (Node warns past 10 on one emitter).
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on("warning", onWarning);
  try {
    const gz = await encodeJsonlGz(
      Array.from({ length: 2000 }, (_, i) => ({ id: i, text: hex(500) })),
    );
    const source = streamOf(
      ...Array.from(
        { length: Math.ceil(gz.length / 1024) },
        (_, i) => gz.slice(i * 1024, (i + 1) * 1024),
      ),
    );
    let bytes = 0;
    for await (const chunk of gunzipStream(source, 4096)) bytes += chunk.length;
    expect(bytes).toBeGreaterThan(2000 * 500);
    await new Promise((resolve) => setTimeout(resolve, 10));
  } finally {
    process.off("warning", onWarning);
  }
  expect(warnings).toEqual([]);
});

test("joins lines split across chunks and strips CRLF", async () => {
  const lines = await Array.fromAsync(
    splitLines(streamOf('{"id":1,', '"text":"a"}\r\n{"id"', ':2,"text":"b"}')),
  );
  expect(lines.map(([n, b]) => [n, new TextDecoder().decode(b)])).toEqual([
    [1, '{"id":1,"text":"a"}'],
    [2, '{"id":2,"text":"b"}'],
  ]);
});

test("malformed lines fail with their line number and kind", async () => {
  const cases: [string, string][] = [
    ['{"id":1,"text":"ok"}\n{bad json\n', "bad-json"],
    ['{"id":1,"text":"ok"}\n[1,2]\n', "not-object"],
    ['{"id":1,"text":"ok"}\n{"text":"no id"}\n', "missing-id"],
    ['{"id":1,"text":"ok"}\n{"id":3}\n', "missing-text"],
  ];
  for (const [body, kind] of cases) {
    const err = await Array.fromAsync(readRecords(storage, streamOf(body))).catch((e) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect(err.kind).toBe(kind);
    expect(err.line).toBe(2);
    expect(err.message).toMatch(/^line 2: /);
  }
});

test("skip mode reports each bad line and yields the good ones", async () => {
  const skipped: RecordError[] = [];
  const body = '{"id":1,"text":"a"}\nnope\n\n{"id":2,"text":"b"}\n{"id":3}\n';
  const got = await Array.fromAsync(
    readRecords(storage, streamOf(body), {
      onInvalid: "skip",
      onSkip: (e) => skipped.push(e),
    }),
  );
  expect(got.map((r) => r.id)).toEqual(["1", "2"]);
  expect(skipped.map((e) => [e.line, e.kind])).toEqual([[2, "bad-json"], [
    5,
    "missing-text",
  ]]);
});

test("invalid UTF-8 is flagged, not fatal, and custom field names work", async () => {
  const bad = new Uint8Array([
    ...new TextEncoder().encode('{"key":"k","body":"a'),
    0xff,
    ...new TextEncoder().encode('b"}\n'),
  ]);
  const [r] = await Array.fromAsync(
    readRecords(storage, streamOf(bad), { idField: "key", textField: "body" }),
  );
  expect(r.id).toBe("k");
  expect(r.invalidUtf8).toBe(true);
  expect(r.text).toBe("a\uFFFDb");
});

test("an over-long line is refused rather than buffered without bound", async () => {
  const err = await Array.fromAsync(
    readRecords(storage, streamOf('{"id":1,"text":"' + "x".repeat(1000) + '"}\n'), {
      maxLineBytes: 100,
    }),
  ).catch((e) => e);
  expect(err).toBeInstanceOf(RecordError);
  expect(err.kind).toBe("line-too-long");
});

test("an empty shard yields no records", async () => {
  expect(await Array.fromAsync(readRecords(storage, streamOf("")))).toEqual([]);
  expect(await Array.fromAsync(readRecords(storage, streamOf(await encodeJsonlGz([])))))
    .toEqual([]);
});

test("a line that is not JSON is reported by its reason and position, never by its content", async () => {
  const secret = "SECRET-CONTENT of a file the caller may not read";
  const messages: string[] = [];
  for (const line of [secret, `{"id": ${secret}}`, '{"id": "a", "text": "cut']) {
    const error = await Array.fromAsync(readRecords(storage, streamOf(line + "\n"))).then(
      () => null,
      (e: RecordError) => e,
    );
    expect(error).toBeInstanceOf(RecordError);
    expect(error!.kind).toBe("bad-json");
    messages.push(error!.message);
  }
  expect(messages).toEqual([
    "line 1: not valid JSON (Unexpected character)",
    "line 1: not valid JSON (Unexpected character)",
    "line 1: not valid JSON (Unterminated string in JSON at position 24 (line 1 column 25))",
  ]);
});
