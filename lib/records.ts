/**
 * Streaming reader and writer of record shards: JSON Lines, optionally gzip, one object per line
 * with an id field and a text field; or Parquet, one row per record with an id column and a text
 * column. The format is detected by magic bytes (gzip's, Parquet's `PAR1`), not by the file name.
 *
 * Memory stays bounded by the longest line (JSON Lines) or one row group (Parquet, read through
 * ranged reads: see `parquet.ts`), whatever the shard's size.
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * for await (const r of readRecords(storage, "s3://bucket/train/part-0000.jsonl.gz")) {
 *   console.log(r.line, r.id, r.text.length);
 * }
 * ```
 */
import { concatBytes } from "./bytes.ts";
import { isUtf8 } from "node:buffer";
import type { Transform } from "node:stream";
import { createGunzip } from "node:zlib";
import { LineParser } from "./line-parser.ts";
import { ParquetError, rangedFile, readParquetRows, startsWithParquetMagic } from "./parquet.ts";
import type { Storage } from "./storage.ts";

export { ParquetError } from "./parquet.ts";

/** One record as read, with its 1-based line number in the shard (its row number, for Parquet). */
export interface RecordEntry {
  line: number;
  id: string;
  text: string;
  /**
   * The whole parsed object (extra fields such as `source` are kept for analysis); for Parquet the
   * row's columns (those read: see {@link ReadRecordsOptions.columns}) as hyparquet decodes them.
   */
  record: Record<string, unknown>;
  /** The line (row) was not valid UTF-8; `text` has U+FFFD where bytes were invalid. */
  invalidUtf8: boolean;
}

/** Why a line is not a usable record. */
export type RecordErrorKind =
  | "bad-json"
  | "not-object"
  | "missing-id"
  | "missing-text"
  | "line-too-long"
  | "id-too-long";

/** A line that is not a usable record; says which line and why. */
export class RecordError extends Error {
  constructor(
    readonly line: number,
    readonly kind: RecordErrorKind,
    detail: string,
  ) {
    super(`line ${line}: ${detail}`);
    this.name = "RecordError";
  }
}

/**
 * The shard as a whole cannot be read: it is not a complete gzip stream, or it expands past a
 * limit (decompressed bytes, lines). Unlike {@link RecordError} no line can be skipped past it.
 */
export class ShardError extends Error {
  constructor(
    readonly kind: "corrupt-gzip" | "too-many-bytes" | "too-many-lines",
    message: string,
    /** The limit that was reached (for the `too-many-*` kinds). */
    readonly limit?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ShardError";
  }
}

/**
 * `text` cut to at most `max` characters, with a marker saying how long it was: for messages and
 * headers that quote values from a shard, whose size the caller controls.
 *
 * @example
 * ```ts
 * truncateForMessage("x".repeat(1000), 10); // "xxxxxxxxxx…(1000 chars)"
 * ```
 */
export function truncateForMessage(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length} chars)`;
}

/** Options for {@link readRecords}. */
export interface ReadRecordsOptions {
  idField?: string;
  textField?: string;
  /** `fail` (default): throw {@link RecordError}; `skip`: report it to `onSkip` and go on. */
  onInvalid?: "fail" | "skip";
  onSkip?: (error: RecordError) => void;
  /**
   * Longest line accepted, in bytes (default 64 MiB). A longer line is a `line-too-long`
   * {@link RecordError}; with `onInvalid: "skip"` it is skipped without being buffered.
   */
  maxLineBytes?: number;
  /** Longest id accepted, in UTF-8 bytes (default: no limit); longer is an `id-too-long` error. */
  maxIdBytes?: number;
  /**
   * JSON Lines: most bytes read after decompression (default: no limit); past it a
   * {@link ShardError} `too-many-bytes` is thrown. Bounds the work a small gzip bomb can cause.
   */
  maxDecompressedBytes?: number;
  /** Most lines (blank ones included) or Parquet rows read (default: no limit): `too-many-lines`. */
  maxLines?: number;
  /**
   * JSON Lines: keep only the head of each text, at least this many UTF-8 bytes (whole
   * characters), for callers that look no further (scoring looks at the model's `seqLen`). A long
   * line's text then never crosses from the parsing worker to the main thread whole.
   * `invalidUtf8` still describes the whole line.
   */
  textHead?: number;
  /**
   * For a stream source: the URI it was opened from. Parquet keeps its index at the end, so it
   * cannot be parsed from a stream; given `uri`, a Parquet stream's rows are read by ranged reads
   * of `uri` while the stream itself is still read to its end, concurrently, so a wrapper around it
   * (a hash, a byte count, an abort signal) sees every byte and its errors stop the read. Without
   * it a Parquet stream throws {@link ParquetError} (`needs-random-access`).
   */
  uri?: string;
  /** Parquet: the object's size in bytes, if known (saves a HEAD request). */
  size?: number;
  /** Parquet: the version (ETag) every ranged read is pinned to (default: the one `stat` reports). */
  etag?: string | null;
  /**
   * Parquet: the columns to read into `record` besides the id and text columns (default: all).
   * `[]` reads only those two, which is all that scoring needs.
   */
  columns?: string[];
  /** Parquet: largest row group accepted, in uncompressed bytes of the columns read (default 512 MiB). */
  maxRowGroupBytes?: number;
}

/**
 * Object names listed as record shards under a prefix: `.jsonl` or `.ndjson` (each optionally
 * `.gz`) and `.parquet`. Every lister uses this one pattern so that scoring, training and the
 * evaluation see the same shards. The name only selects objects; {@link readRecords} still detects
 * the format by content.
 */
export const SHARD_PATTERN = /\.(jsonl|ndjson)(\.gz)?$|\.parquet$/;

/** The shard names {@link SHARD_PATTERN} accepts, for messages. */
export const SHARD_NAMES = ".jsonl, .ndjson (each optionally .gz) or .parquet";

/**
 * Whether an object's name (URI or path) is a record shard's.
 *
 * @example
 * ```ts
 * isShardName("s3://b/train/part-0.ndjson.gz"); // true
 * isShardName("s3://b/train/_done.json"); // false
 * ```
 */
export function isShardName(name: string): boolean {
  return SHARD_PATTERN.test(name);
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** Undoes gzip if the stream starts with gzip's magic bytes; passes other bytes through. */
export async function maybeGunzip(
  stream: ReadableStream<Uint8Array>,
): Promise<ReadableStream<Uint8Array>> {
  return gunzipPeeked(await peekStream(stream, 2));
}

/**
 * Reads the first `n` bytes of a stream (fewer if it is shorter; possibly more: whole chunks) and
 * returns them with a stream of all the bytes, those included.
 */
export async function peekStream(
  stream: ReadableStream<Uint8Array>,
  n: number,
): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const head: Uint8Array[] = [];
  let headLength = 0;
  while (headLength < n) {
    const { value, done } = await reader.read();
    if (done) break;
    head.push(value);
    headLength += value.length;
  }
  const first = head.length === 1 ? head[0] : concatBytes(head, headLength);
  const rest = new ReadableStream<Uint8Array>({
    start(controller) {
      if (first.length) controller.enqueue(first);
    },
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { head: first, stream: rest };
}

function isGzipHead(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1];
}

function gunzipPeeked(
  { head, stream }: { head: Uint8Array; stream: ReadableStream<Uint8Array> },
): ReadableStream<Uint8Array> {
  return isGzipHead(head) ? gunzipStream(stream) : stream;
}

/**
 * Inflates a gzip stream (several members in a row, as `cat a.gz b.gz` makes, included) in chunks
 * of up to `chunkSize` bytes; a truncated or corrupt stream errors. node:zlib rather than
 * DecompressionStream: measured here on JSON Lines text, node:zlib inflated 280-310 MB/s,
 * DecompressionStream 95-115 MB/s.
 */
export function gunzipStream(
  stream: ReadableStream<Uint8Array>,
  chunkSize = 1 << 20,
): ReadableStream<Uint8Array> {
  return zlibStream(stream, createGunzip({ chunkSize }));
}

/**
 * `stream` through a node:zlib transform (`createGunzip`, `createGzip`, ...). Not
 * `Duplex.toWeb`: Deno's adapter enqueues zlib's output after its stream was cancelled or errored
 * (a consumer that stops at a size limit, a truncated input), which throws outside any caller as an
 * uncaught TypeError. Here the source is pumped into zlib with its backpressure, the output is read
 * with zlib's own, and stopping early destroys zlib and cancels the source.
 */
export function zlibStream(
  stream: ReadableStream<Uint8Array>,
  zlib: Transform,
): ReadableStream<Uint8Array> {
  return ReadableStream.from(pumpThrough(stream, zlib));
}

async function* pumpThrough(
  stream: ReadableStream<Uint8Array>,
  zlib: Transform,
): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  const pump = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || zlib.destroyed) break;
        if (!zlib.write(value)) {
          // Room again, or zlib gone: whichever comes first removes both listeners.
          await new Promise<void>((resolve) => {
            const go = () => {
              zlib.off("drain", go);
              zlib.off("close", go);
              resolve();
            };
            zlib.on("drain", go);
            zlib.on("close", go);
          });
        }
      }
      if (!zlib.destroyed) zlib.end();
    } catch (e) {
      // The source failed: zlib's reader below gets the source's own error.
      zlib.destroy(e as Error);
    }
  })();
  try {
    for await (const chunk of zlib as AsyncIterable<Uint8Array>) {
      yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
  } finally {
    zlib.destroy();
    await reader.cancel().catch(() => {});
    await pump;
  }
}

/** Options for {@link splitLines}. */
export interface SplitLinesOptions {
  /**
   * Called for a line over `maxLineBytes` instead of throwing: the line is then skipped, and its
   * bytes are discarded as they arrive (never buffered), up to the next newline.
   */
  onTooLong?: (error: RecordError) => void;
}

const trimCr = (bytes: Uint8Array): Uint8Array =>
  bytes.length && bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, bytes.length - 1) : bytes;

/**
 * Splits a byte stream into lines (without the `\n`, and without a trailing `\r`), as bytes.
 * Yields `[lineNumber, bytes]`; a line over `maxLineBytes` throws a `line-too-long`
 * {@link RecordError}, or is reported to `options.onTooLong` and skipped.
 */
export async function* splitLines(
  stream: ReadableStream<Uint8Array>,
  maxLineBytes = 64 << 20,
  options: SplitLinesOptions = {},
): AsyncGenerator<[number, Uint8Array]> {
  for await (const block of splitLineBlocks(stream, maxLineBytes, options)) yield* block;
}

/**
 * {@link splitLines} a chunk at a time: the lines each chunk of the stream completes, in one array
 * (one async step per chunk instead of one per line, which costs more than parsing a short line).
 */
export async function* splitLineBlocks(
  stream: ReadableStream<Uint8Array>,
  maxLineBytes = 64 << 20,
  options: SplitLinesOptions = {},
): AsyncGenerator<[number, Uint8Array][]> {
  for await (const block of splitLinePartBlocks(stream, maxLineBytes)) {
    let lines: [number, Uint8Array][] = [];
    for (const item of block) {
      if (item instanceof RecordError) {
        // The lines before it first, so a caller sees lines and skips in input order.
        if (lines.length) yield lines;
        lines = [];
        tooLong(item, options);
      } else {
        const [line, parts, length] = item;
        lines.push([line, trimCr(parts.length === 1 ? parts[0] : concatBytes(parts, length))]);
      }
    }
    if (lines.length) yield lines;
  }
}

function tooLong(error: RecordError, options: SplitLinesOptions): void {
  if (!options.onTooLong) throw error;
  options.onTooLong(error);
}

/**
 * {@link splitLines} without joining a line's pieces: yields `[lineNumber, parts, length]`, the
 * line being the parts' bytes in order (a trailing `\r` included). Every part but the last is a
 * copy the caller owns; the last may be a view of the stream's chunk. Joining a long line is left
 * to the consumer (the worker of `line-parser.ts`: copying 60 MB holds a thread for a while).
 */
async function* splitLineParts(
  stream: ReadableStream<Uint8Array>,
  maxLineBytes: number,
  options: SplitLinesOptions,
): AsyncGenerator<[number, Uint8Array[], number]> {
  for await (const block of splitLinePartBlocks(stream, maxLineBytes)) {
    for (const item of block) {
      if (item instanceof RecordError) tooLong(item, options);
      else yield item;
    }
  }
}

/**
 * {@link splitLineParts}, the lines each chunk completes in one array; a line over `maxLineBytes`
 * is an error in its place (its bytes are discarded as they arrive, never buffered), for the
 * caller to throw or skip.
 */
async function* splitLinePartBlocks(
  stream: ReadableStream<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<([number, Uint8Array[], number] | RecordError)[]> {
  let carry: Uint8Array[] = [];
  let carryLength = 0;
  let line = 0;
  // True while the rest of an over-long line is being discarded.
  let skipping = false;
  for await (const chunk of stream) {
    const block: ([number, Uint8Array[], number] | RecordError)[] = [];
    const tooLong = (n: number) => {
      block.push(new RecordError(n, "line-too-long", `line longer than ${maxLineBytes} bytes`));
      carry = [];
      carryLength = 0;
    };
    let start = 0;
    for (
      let nl = chunk.indexOf(0x0a, start);
      nl >= 0;
      nl = chunk.indexOf(0x0a, start)
    ) {
      line++;
      if (skipping) {
        skipping = false;
        start = nl + 1;
        continue;
      }
      if (carryLength + (nl - start) > maxLineBytes) {
        tooLong(line);
        start = nl + 1;
        continue;
      }
      const last = chunk.subarray(start, nl);
      if (carryLength) {
        carry.push(last);
        const parts = carry;
        const length = carryLength + last.length;
        carry = [];
        carryLength = 0;
        block.push([line, parts, length]);
      } else {
        block.push([line, [last], last.length]);
      }
      start = nl + 1;
    }
    if (start < chunk.length && !skipping) {
      if (carryLength + chunk.length - start > maxLineBytes) {
        tooLong(line + 1);
        skipping = true;
      } else {
        // Copy: the stream may reuse its buffer.
        carry.push(chunk.slice(start));
        carryLength += chunk.length - start;
      }
    }
    if (block.length) yield block;
  }
  if (carryLength) yield [[line + 1, carry, carryLength]];
}

const decoder = new TextDecoder("utf-8");

/** Parses one JSON line into a record, or explains why it is not one. */
export function parseRecordLine(
  line: number,
  bytes: Uint8Array,
  idField = "id",
  textField = "text",
  maxIdBytes = Infinity,
): RecordEntry {
  // node's isUtf8 (simdutf) and a lenient decode take a third of the time of a fatal decoder on
  // large lines, which run on the main thread (see `readRecords` on yielding).
  const invalidUtf8 = !isUtf8(bytes);
  const source = decoder.decode(bytes);
  let value: unknown;
  try {
    value = JSON.parse(source);
  } catch (e) {
    throw new RecordError(line, "bad-json", notValidJson((e as Error).message));
  }
  return toParsedRecord(line, value, idField, textField, invalidUtf8, maxIdBytes);
}

function toParsedRecord(
  line: number,
  value: unknown,
  idField: string,
  textField: string,
  invalidUtf8: boolean,
  maxIdBytes?: number,
): RecordEntry {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RecordError(
      line,
      "not-object",
      "expected a JSON object per line",
    );
  }
  return toRecordEntry(
    line,
    value as Record<string, unknown>,
    idField,
    textField,
    invalidUtf8,
    maxIdBytes,
  );
}

const encoder = new TextEncoder();

/** UTF-8 length of `text`, without encoding it when its length alone settles `text > max`. */
function utf8LengthOver(text: string, max: number): number | null {
  if (text.length * 3 <= max) return null;
  if (text.length > max) return text.length; // at least this many bytes
  const bytes = encoder.encode(text).length;
  return bytes > max ? bytes : null;
}

/**
 * Checks one parsed record (a JSON line's object, a Parquet row) for its id and text fields, or
 * explains why it is not a record. Ids may be strings or finite numbers (bigints from Parquet's
 * INT64 too); they are returned as strings, of at most `maxIdBytes` UTF-8 bytes.
 */
export function toRecordEntry(
  line: number,
  record: Record<string, unknown>,
  idField = "id",
  textField = "text",
  invalidUtf8 = false,
  maxIdBytes = Infinity,
): RecordEntry {
  const id = record[idField];
  if (
    typeof id !== "string" && typeof id !== "bigint" &&
    !(typeof id === "number" && Number.isFinite(id))
  ) {
    throw new RecordError(
      line,
      "missing-id",
      `field "${idField}" must be a string or number`,
    );
  }
  if (typeof id === "string" && id.length === 0) {
    throw new RecordError(line, "missing-id", `field "${idField}" is empty`);
  }
  if (typeof id === "string") {
    const over = utf8LengthOver(id, maxIdBytes);
    if (over !== null) {
      throw new RecordError(
        line,
        "id-too-long",
        `field "${idField}" is ${over === id.length ? "at least " : ""}${over} bytes, ` +
          `over the ${maxIdBytes}-byte limit for ids`,
      );
    }
  }
  const text = record[textField];
  if (typeof text !== "string") {
    throw new RecordError(
      line,
      "missing-text",
      `field "${textField}" must be a string`,
    );
  }
  // JSON's \uXXXX escapes can carry lone surrogates: count those as invalid UTF-8 too.
  if (!invalidUtf8 && !text.isWellFormed()) invalidUtf8 = true;
  return { line, id: String(id), text, record, invalidUtf8 };
}

/**
 * Streams the records of a shard (a URI or a byte stream): JSON Lines (gzip or not) or Parquet,
 * told apart by their first bytes. Blank lines are ignored. Invalid lines (Parquet: rows) throw
 * {@link RecordError} with the line (row) number, or are skipped and reported with
 * `onInvalid: "skip"`. Parquet needs random access: from a stream it is read only when
 * `options.uri` says where the stream came from, else {@link ParquetError} is thrown.
 * `storage` opens a URI source and serves Parquet's ranged reads.
 *
 * @example
 * ```ts
 * for await (const r of readRecords(new MemoryStorage(), stream, { onInvalid: "skip" })) {
 *   console.log(r.id);
 * }
 * ```
 */
export async function* readRecords(
  storage: Storage,
  source: string | ReadableStream<Uint8Array>,
  options: ReadRecordsOptions = {},
): AsyncGenerator<RecordEntry> {
  const { idField = "id", textField = "text", onInvalid = "fail", onSkip } = options;
  const raw = typeof source === "string" ? await storage.read(source) : source;
  const peeked = await peekStream(raw, 4);
  if (startsWithParquetMagic(peeked.head)) {
    const uri = typeof source === "string" ? source : options.uri;
    if (uri === undefined) {
      await peeked.stream.cancel().catch(() => {});
      throw new ParquetError(
        null,
        "needs-random-access",
        "the shard is Parquet, which needs random access (its index is at the end of the file): " +
          "pass its URI to readRecords, or the URI the stream was opened from as options.uri",
      );
    }
    // From a URI the stream was only opened to sniff the format; a caller's stream is drained.
    if (typeof source === "string") await peeked.stream.cancel().catch(() => {});
    yield* readParquetRecords(
      storage,
      uri,
      typeof source === "string" ? null : peeked.stream,
      options,
    );
    return;
  }
  const isGzip = isGzipHead(peeked.head);
  // A failure of the source (the store) is told apart from one of the decompressor (the bytes).
  let sourceFailed = false;
  const tapped = isGzip ? tapErrors(peeked.stream, () => sourceFailed = true) : peeked.stream;
  const stream = isGzip ? gunzipStream(tapped) : tapped;
  const { maxDecompressedBytes = Infinity, maxLines = Infinity } = options;
  let bytesRead = 0;
  const counted = stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytesRead += chunk.length;
        if (bytesRead > maxDecompressedBytes) {
          throw new ShardError(
            "too-many-bytes",
            `the shard expands to more than ${maxDecompressedBytes} bytes` +
              (isGzip ? " after decompression" : ""),
            maxDecompressedBytes,
          );
        }
        controller.enqueue(chunk);
      },
    }),
  );
  const lines = splitLineParts(counted, options.maxLineBytes ?? 64 << 20, {
    onTooLong: onInvalid === "skip" ? (e) => onSkip?.(e) : undefined,
  });
  let lastYield = performance.now();
  let parser: LineParser | undefined;
  try {
    for await (const [line, parts, length] of lines) {
      if (line > maxLines) {
        throw new ShardError(
          "too-many-lines",
          `the shard has more than ${maxLines} lines`,
          maxLines,
        );
      }
      try {
        if (length >= WORKER_LINE_BYTES) {
          if (parts.every(isBlank)) continue;
          parser ??= new LineParser();
          yield await parseRecordLineInWorker(parser, line, parts, idField, textField, options);
        } else {
          const bytes = trimCr(parts.length === 1 ? parts[0] : concatBytes(parts, length));
          if (bytes.length === 0 || isBlank(bytes)) continue;
          const entry = parseRecordLine(line, bytes, idField, textField, options.maxIdBytes);
          if (options.textHead !== undefined) entry.text = textHeadOf(entry.text, options.textHead);
          yield entry;
        }
      } catch (e) {
        if (!(e instanceof RecordError) || onInvalid === "fail") throw e;
        onSkip?.(e);
      }
      // Many short lines parse synchronously one after another: give the event loop a turn once
      // a while has passed, so health checks are answered.
      if (performance.now() - lastYield > YIELD_EVERY_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        lastYield = performance.now();
      }
    }
  } catch (e) {
    if (isGzip && !sourceFailed && !(e instanceof RecordError) && !(e instanceof ShardError)) {
      throw new ShardError(
        "corrupt-gzip",
        `the shard is not a complete gzip stream (${(e as Error).message})`,
        undefined,
        { cause: e },
      );
    }
    throw e;
  } finally {
    parser?.close();
    await lines.return(undefined);
  }
}

/**
 * The first `bytes` UTF-16 units of `text`, and one more where the cut would split a surrogate
 * pair: at least `bytes` UTF-8 bytes (every character is at least one), or all of a shorter text.
 */
export function textHeadOf(text: string, bytes: number): string {
  if (text.length <= bytes) return text;
  const code = text.charCodeAt(bytes - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? bytes + 1 : bytes);
}

/** Longest stretch of line parsing between two turns of the event loop. */
const YIELD_EVERY_MS = 20;

/**
 * Lines from this length on are parsed in a worker ({@link LineParser}): parsing a line near the
 * 64 MiB limit on the main thread would hold it for most of a second.
 */
export const WORKER_LINE_BYTES = 1 << 20;

/**
 * "not valid JSON", with JSON.parse's reason and position but none of the line's content: V8
 * quotes the line's first bytes, and the line may come from a file the caller may not read.
 */
export function notValidJson(parseMessage: string): string {
  const reason = parseMessage
    .replace(/,\s*".*$/s, "") // V8: `Unexpected token 'S', "SECRET-CON"... is not valid JSON`
    .replace(/token '.*?'/, "character");
  return reason && !reason.includes('"') ? `not valid JSON (${reason})` : "not valid JSON";
}

/** {@link parseRecordLine}, with the UTF-8 check, decoding and JSON.parse in `parser`'s worker. */
async function parseRecordLineInWorker(
  parser: LineParser,
  line: number,
  parts: Uint8Array[],
  idField: string,
  textField: string,
  options: ReadRecordsOptions,
): Promise<RecordEntry> {
  const reply = await parser.parse(parts, { textField, textHead: options.textHead });
  if (!reply.ok) throw new RecordError(line, "bad-json", notValidJson(reply.message));
  return toParsedRecord(
    line,
    reply.value,
    idField,
    textField,
    reply.invalidUtf8,
    options.maxIdBytes,
  );
}

/** Passes a stream through, calling `onError` if reading it fails. */
function tapErrors(
  stream: ReadableStream<Uint8Array>,
  onError: () => void,
): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (e) {
        onError();
        throw e;
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/**
 * The records of a Parquet shard, row group by row group through ranged reads of `uri`. If `side`
 * (the caller's stream of the same object) is given, it is read to its end concurrently, and its
 * failure stops the read: see {@link ReadRecordsOptions.uri}.
 */
async function* readParquetRecords(
  storage: Storage,
  uri: string,
  side: ReadableStream<Uint8Array> | null,
  options: ReadRecordsOptions,
): AsyncGenerator<RecordEntry> {
  const { idField = "id", textField = "text", onInvalid = "fail", onSkip } = options;
  const reader = side?.getReader();
  let sideFailed = false;
  let sideError: unknown;
  const drained = reader
    ? (async () => {
      for (;;) if ((await reader.read()).done) return;
    })().catch((e) => {
      sideFailed = true;
      sideError = e;
    })
    : Promise.resolve();
  const checkSide = () => {
    if (sideFailed) throw sideError;
  };
  try {
    const file = await rangedFile(storage, uri, { size: options.size, etag: options.etag });
    const columns = options.columns && [idField, textField, ...options.columns];
    const rows = readParquetRows(file, uri, {
      columns,
      maxRowGroupBytes: options.maxRowGroupBytes,
      beforeRowGroup: checkSide,
    });
    const maxLines = options.maxLines ?? Infinity;
    for await (const row of rows) {
      checkSide(); // an abort or a failed read of the stream stops mid-row-group too
      if (row.row > maxLines) {
        throw new ShardError(
          "too-many-lines",
          `the shard has more than ${maxLines} rows`,
          maxLines,
        );
      }
      try {
        yield toRecordEntry(
          row.row,
          row.values,
          idField,
          textField,
          row.invalidUtf8,
          options.maxIdBytes,
        );
      } catch (e) {
        if (!(e instanceof RecordError) || onInvalid === "fail") throw e;
        onSkip?.(e);
      }
    }
    // The caller may rely on the side stream being fully read (a hash of every byte) when done.
    await drained;
    checkSide();
  } finally {
    await reader?.cancel().catch(() => {});
  }
}

function isBlank(bytes: Uint8Array): boolean {
  for (const b of bytes) {
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  }
  return true;
}

/** Records as JSON Lines text (one object per line, trailing newline). */
export function encodeJsonl(records: Iterable<unknown>): string {
  let out = "";
  for (const r of records) out += JSON.stringify(r) + "\n";
  return out;
}

/** Gzip-compresses bytes or text. */
export async function gzip(data: Uint8Array | string): Promise<Uint8Array> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Records as gzip-compressed JSON Lines. */
export function encodeJsonlGz(records: Iterable<unknown>): Promise<Uint8Array> {
  return gzip(encodeJsonl(records));
}
