/**
 * Materialising a filtered dataset: each shard joined with its manifest v1 (see `manifest.ts`),
 * the kept records written as a new shard (and optionally the dropped ones beside it, what
 * datatrove calls an exclusion writer), in the input's format:
 *
 * - JSON Lines (gzip or not): the kept lines are copied byte for byte (the line's bytes without its
 *   `\n`, and without a trailing `\r`, as `records.ts` splits them), gzip-compressed again when the
 *   input was gzip (zlib level {@link DEFAULT_GZIP_LEVEL} unless `gzipLevel` says otherwise). Each
 *   entry's id is checked against its line (in place, else found verbatim, else by parsing).
 * - Parquet: the kept rows are written with hyparquet-writer under the input's own schema and
 *   key-value metadata, one output row group per input row group at most.
 *
 * The shard must be the one the manifest was written for: its size is checked first (a truncated
 * shard fails before anything is read), then its ETag, else the sha256 of its bytes as they stream
 * (a mismatch fails at the end). An output becomes visible, create-only (`ifNoneMatch: "*"`), only
 * after the whole shard joined and verified: S3 outputs are spooled to a local file and then put in
 * one streaming PUT, local outputs stream into FileStorage's hidden temporary file that is linked
 * into place at the end (see `LineSink`), so an error leaves nothing under the output. Memory stays
 * bounded by one input chunk (1 MiB where the stream lets us choose), one 1 MiB output buffer per
 * output and a block of manifest entries (one row group for Parquet).
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * const summary = await materialize(storage, {
 *   manifests: "s3://b/manifests/run1/",
 *   output: "s3://b/filtered/run1/",
 * });
 * console.log(summary.kept, "records kept");
 * ```
 */
import { concatBytes } from "./bytes.ts";
import { createGzip } from "node:zlib";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { type ColumnSource, fileWriter, ParquetWriter } from "hyparquet-writer";
import { parquetMetadataAsync, type SchemaElement } from "hyparquet";
import {
  joinEntries,
  type ManifestEntry,
  ManifestError,
  type ManifestHeader,
  ManifestMismatchError,
  readManifest,
  readManifestBlocks,
  readManifestHeader,
} from "./manifest.ts";
import { rangedFile, startsWithParquetMagic } from "./parquet.ts";
import { gunzipStream, parseRecordLine, readRecords, RecordError, zlibStream } from "./records.ts";
import { NotFoundError, parseUri, PreconditionFailedError, type Storage } from "./storage.ts";

/** Suffix of manifest v1 objects under a manifests prefix. */
export const MANIFEST_SUFFIX = ".manifest.jsonl";

/** Output format: the input's (default); a different one is refused. */
export type MaterializeFormat = "jsonl" | "parquet";

/** Options of {@link materializeShard}. */
export interface MaterializeShardOptions {
  /** The manifest v1 URI; its header names the shard. */
  manifest: string;
  /** Where the kept records go (written create-only). */
  output: string;
  /** Where the dropped records go, if wanted (written create-only). */
  dropped?: string;
  /** Asserted output format (must be the input's). */
  format?: MaterializeFormat;
  /** Folder for the spool files (default: the system's temporary folder). */
  tmpDir?: string;
  /** zlib level of gzip outputs (default {@link DEFAULT_GZIP_LEVEL}). */
  gzipLevel?: number;
  /** Called with the number of shard bytes read so far (for a progress bar). */
  onBytes?: (bytes: number) => void;
}

/** What happened to one shard. */
export interface MaterializedShard {
  manifest: string;
  shard: string;
  output: string;
  dropped?: string;
  /** `skipped`: every output already existed, nothing was read. */
  result: "created" | "skipped";
  format: MaterializeFormat;
  gzip: boolean;
  kept: number;
  droppedRecords: number;
  /** Bytes of the stored shard read (0 when skipped). */
  bytesRead: number;
  /** Bytes written (kept + dropped objects). */
  bytesWritten: number;
}

/** A materialisation failed for a reason that concerns the manifest and its shard. */
export class MaterializeError extends ManifestError {
  constructor(message: string, uri: string, options?: ErrorOptions) {
    super(message, uri);
    this.name = "MaterializeError";
    if (options?.cause) this.cause = options.cause;
  }
}

/** Bytes per output write: big writes make a stream's per-chunk cost vanish against the copy. */
const OUT_CHUNK = 1 << 20;
/** Bytes per read where the shard's stream lets us choose (a byte stream: local files). */
const READ_CHUNK = 1 << 20;

/**
 * Default gzip level of materialised `.jsonl.gz` shards: 1. Recompressing is most of the cost of
 * materialising a gzip shard; measured here on the bench's text (scripts/bench/materialize.ts),
 * level 1 compresses about twice as fast as level 2 and four times as fast as level 6, for
 * outputs ~30% larger than level 6's. Pass `gzipLevel` for smaller outputs.
 */
export const DEFAULT_GZIP_LEVEL = 1;

/**
 * Where one output's bytes go: copied into 1 MiB buffers (runs of kept lines arrive as single
 * slices of the input chunk), through an optional gzip stage, made visible only by
 * {@link commit}.
 *
 * - `direct` (local files): streamed into `storage.write` create-only; FileStorage writes a hidden
 *   temporary file beside the target and links it into place only when the stream closes, so the
 *   stream itself is the spool, and {@link abort} makes the write fail and remove it.
 * - `spool` (S3 and other stores): a local temporary file, uploaded create-only with its length
 *   (one streaming PUT) once complete: S3 needs the length up front to stream.
 * - `discard`: the output exists already (or was not asked for); lines are only counted.
 */
class LineSink {
  #writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #done: Promise<void> = Promise.resolve();
  #error: unknown = null;
  #buf: Uint8Array | null = null;
  #pos = 0;
  #full: Uint8Array[] = [];
  #path: string | null = null;
  /** Records routed here. */
  count = 0;
  /** Bytes written to the output (compressed, for gzip). */
  bytes = 0;

  private constructor(
    readonly mode: "direct" | "spool" | "discard",
    readonly storage: Storage,
    readonly uri: string,
  ) {}

  static async open(
    storage: Storage,
    uri: string,
    wanted: boolean,
    gzipLevel: number | null,
    tmpDir?: string,
  ): Promise<LineSink> {
    if (!wanted) return new LineSink("discard", storage, uri);
    const direct = parseUri(uri).scheme === "file";
    const sink = new LineSink(direct ? "direct" : "spool", storage, uri);
    // node:zlib rather than CompressionStream (level 6, not settable, and slower per byte here).
    const stage = new TransformStream<Uint8Array, Uint8Array>();
    const out = gzipLevel !== null
      ? zlibStream(stage.readable, createGzip({ level: gzipLevel, chunkSize: OUT_CHUNK }))
      : stage.readable;
    const counted = out.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          sink.bytes += chunk.length;
          controller.enqueue(chunk);
        },
      }),
    );
    if (direct) {
      sink.#done = storage.write(uri, counted, { ifNoneMatch: "*" }).then(() => {}, (e) => {
        sink.#error = e;
      });
    } else {
      sink.#path = await Deno.makeTempFile({ dir: tmpDir, prefix: "datarater-materialize-" });
      const file = await Deno.open(sink.#path, { write: true });
      sink.#done = counted.pipeTo(file.writable).catch((e) => {
        sink.#error = e;
      });
    }
    sink.#writer = stage.writable.getWriter();
    return sink;
  }

  /** Copies `src[start, end)` into the output (synchronously: the caller's chunk can go after). */
  append(src: Uint8Array, start: number, end: number): void {
    if (!this.#writer) return;
    while (start < end) {
      this.#buf ??= new Uint8Array(OUT_CHUNK);
      const n = Math.min(end - start, OUT_CHUNK - this.#pos);
      this.#buf.set(src.subarray(start, start + n), this.#pos);
      this.#pos += n;
      start += n;
      if (this.#pos === OUT_CHUNK) {
        this.#full.push(this.#buf);
        this.#buf = null;
        this.#pos = 0;
      }
    }
  }

  /** Writes the filled buffers (called once per input chunk, so memory stays bounded). */
  async drain(): Promise<void> {
    const full = this.#full;
    this.#full = [];
    for (const out of full) await this.#write(out);
  }

  async #write(out: Uint8Array): Promise<void> {
    if (!this.#writer) return;
    await this.#writer.ready;
    // Not awaited: the next buffer fills while this one is written; a failure surfaces in commit.
    this.#writer.write(out).catch(() => {});
  }

  /** Makes the output visible (create-only); an existing object (a concurrent run's) stands. */
  async commit(): Promise<void> {
    if (!this.#writer) return;
    await this.drain();
    if (this.#pos) await this.#write(this.#buf!.subarray(0, this.#pos));
    this.#buf = null;
    this.#pos = 0;
    await this.#writer.close().catch((e) => {
      this.#error ??= e;
    });
    await this.#done;
    if (this.#error) {
      if (this.#error instanceof PreconditionFailedError) return;
      throw this.#error;
    }
    if (this.#path) {
      const size = (await Deno.stat(this.#path)).size;
      const file = await Deno.open(this.#path, { read: true });
      try {
        await this.storage.write(this.uri, file.readable, {
          ifNoneMatch: "*",
          contentLength: size,
        });
      } catch (e) {
        if (!(e instanceof PreconditionFailedError)) throw e;
      }
    }
  }

  /** Abandons the output: nothing becomes visible. */
  async abort(reason: unknown): Promise<void> {
    this.#full = [];
    this.#buf = null;
    await this.#writer?.abort(reason).catch(() => {});
    await this.#done;
  }

  async dispose(): Promise<void> {
    if (this.#path) await Deno.remove(this.#path).catch(() => {});
  }
}

const NEWLINE = new Uint8Array([0x0a]);
const encoder = new TextEncoder();

/** Output objects that do not exist yet: `[uri, which]`. */
async function missingTargets(
  storage: Storage,
  options: MaterializeShardOptions,
): Promise<{ kept: boolean; dropped: boolean }> {
  const kept = (await storage.stat(options.output)) === null;
  const dropped = options.dropped !== undefined && (await storage.stat(options.dropped)) === null;
  return { kept, dropped };
}

/**
 * Joins one shard with its manifest and writes its kept (and optionally dropped) records; outputs
 * that already exist are left alone (and the shard is not read at all if every output exists).
 * Throws {@link ManifestMismatchError} naming the manifest and the shard when the shard is not the
 * one the manifest describes, {@link ManifestError} for a malformed or truncated manifest; nothing
 * is written then.
 */
export async function materializeShard(
  storage: Storage,
  options: MaterializeShardOptions,
): Promise<MaterializedShard> {
  // Only the header: a manifest stream left half read would hold its connection (S3) open.
  const header = await readManifestHeader(storage, options.manifest);
  const shard = header.input.uri;
  const base: MaterializedShard = {
    manifest: options.manifest,
    shard,
    output: options.output,
    dropped: options.dropped,
    result: "skipped",
    format: /\.parquet$/.test(shard) ? "parquet" : "jsonl",
    gzip: /\.gz$/.test(shard),
    kept: 0,
    droppedRecords: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };
  const targets = await missingTargets(storage, options);
  if (!targets.kept && !targets.dropped) {
    return base;
  }
  const mismatch = (why: string) =>
    new ManifestMismatchError(
      `manifest ${options.manifest} does not match shard ${shard}: ${why}`,
      options.manifest,
    );
  const info = await storage.stat(shard);
  if (!info) {
    throw new MaterializeError(
      `shard ${shard} named by manifest ${options.manifest} does not exist`,
      options.manifest,
      { cause: new NotFoundError(shard) },
    );
  }
  if (info.size !== header.input.size) {
    throw mismatch(
      `the shard has ${info.size} bytes, the manifest was written for ${header.input.size} ` +
        "(truncated or replaced?)",
    );
  }
  const byEtag = info.etag != null && info.etag === header.input.etag;
  // The chunks are hashed (unless the ETag vouches for the bytes) and counted where they are read:
  // no extra stream stage, no second pass.
  const hash = byEtag ? null : createHash("sha256");
  let digest: string | null = null;
  let read = 0;
  const body = await storage.read(shard);
  // A byte stream (local files) is read into buffers of our size, and for plain JSON Lines into
  // the same buffer again and again: a fresh 64 KiB chunk per read cost more in allocation and GC
  // than the join itself. Other streams (S3's) give their own chunks.
  let byob: ReadableStreamBYOBReader | null = null;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream
  }
  const reader = byob ?? body.getReader();
  const nextChunk = async (into: Uint8Array | null): Promise<Uint8Array | null> => {
    const { value, done } = byob
      ? await byob.read(into ? new Uint8Array(into.buffer) : new Uint8Array(READ_CHUNK))
      : await (reader as ReadableStreamDefaultReader<Uint8Array>).read();
    if (done || !value) return null;
    hash?.update(value);
    read += value.length;
    options.onBytes?.(read);
    return value;
  };
  const headParts: Uint8Array[] = [];
  let headLength = 0;
  while (headLength < 4) {
    const chunk = await nextChunk(null);
    if (!chunk) break;
    headParts.push(chunk);
    headLength += chunk.length;
  }
  const head = headParts.length === 1 ? headParts[0] : concatBytes(headParts, headLength);
  /**
   * The shard's chunks; with `recycle`, each read reuses the previous chunk's buffer, so a
   * consumer must be done with a chunk (copied what it keeps) before asking for the next.
   */
  async function* shardChunks(recycle: boolean): AsyncGenerator<Uint8Array> {
    if (head.length) yield head;
    // One read ahead: the next chunk is read (into the other of two buffers when recycling)
    // while the consumer works on this one.
    let spare: Uint8Array | null = null;
    let next = ahead(nextChunk(null));
    for (;;) {
      const chunk: Uint8Array | null = await next;
      if (!chunk) return;
      next = ahead(nextChunk(recycle ? spare : null));
      spare = chunk;
      yield chunk;
    }
  }
  const isParquet = startsWithParquetMagic(head);
  const isGzip = head[0] === 0x1f && head[1] === 0x8b;
  const format: MaterializeFormat = isParquet ? "parquet" : "jsonl";
  if (options.format && options.format !== format) {
    await reader.cancel().catch(() => {});
    throw new MaterializeError(
      `shard ${shard} is ${format}; materialising it as ${options.format} is not supported ` +
        "(the output keeps the input's format)",
      options.manifest,
    );
  }
  const result: MaterializedShard = { ...base, result: "created", format, gzip: isGzip };
  const verify = () => {
    if (!hash) return;
    digest ??= hash.digest("hex");
    if (digest !== header.input.sha256) {
      throw mismatch(`sha256 ${digest} differs from the manifest's ${header.input.sha256}`);
    }
  };
  const sinks: LineSink[] = [];
  const tmpPaths: string[] = [];
  try {
    if (isParquet) {
      const keptPath = await Deno.makeTempFile({ dir: options.tmpDir, prefix: "datarater-mat-" });
      tmpPaths.push(keptPath);
      let droppedPath: string | null = null;
      if (options.dropped) {
        droppedPath = await Deno.makeTempFile({ dir: options.tmpDir, prefix: "datarater-mat-" });
        tmpPaths.push(droppedPath);
      }
      const { entries } = await readManifest(storage, options.manifest);
      const counts = await joinParquet(
        storage,
        header,
        entries,
        ReadableStream.from(shardChunks(false)),
        keptPath,
        droppedPath,
        info.etag,
        mismatch,
      ).finally(async () => {
        // A generator never started ignores return(): one step in, so that its cleanup runs.
        await entries.next().catch(() => {});
        await entries.return(undefined).catch(() => {});
      });
      result.kept = counts.kept;
      result.droppedRecords = counts.dropped;
      verify();
      // Verified: only now does anything become visible under the output.
      const uploads: [string, string][] = [];
      if (targets.kept) uploads.push([keptPath, options.output]);
      if (targets.dropped && droppedPath && options.dropped) {
        uploads.push([droppedPath, options.dropped]);
      }
      for (const [path, uri] of uploads) {
        const size = (await Deno.stat(path)).size;
        const file = await Deno.open(path, { read: true });
        try {
          await storage.write(uri, file.readable, { ifNoneMatch: "*", contentLength: size });
        } catch (e) {
          // Written meanwhile by another run: create-only means theirs stands.
          if (!(e instanceof PreconditionFailedError)) throw e;
        }
        result.bytesWritten += size;
      }
    } else {
      const level = isGzip ? options.gzipLevel ?? DEFAULT_GZIP_LEVEL : null;
      const kept = await LineSink.open(
        storage,
        options.output,
        targets.kept,
        level,
        options.tmpDir,
      );
      sinks.push(kept);
      // Without a dropped output the dropped lines are only counted.
      const dropped = await LineSink.open(
        storage,
        options.dropped ?? "",
        options.dropped !== undefined && targets.dropped,
        level,
        options.tmpDir,
      );
      sinks.push(dropped);
      // zlib may hold an input chunk after write() returns: no recycling under gzip.
      const chunks = isGzip
        ? gunzipStream(ReadableStream.from(shardChunks(false)), OUT_CHUNK)
        : shardChunks(true);
      await joinJsonl(
        header,
        (await readManifestBlocks(storage, options.manifest)).blocks,
        chunks,
        kept,
        dropped,
        mismatch,
      );
      verify();
      // Verified: only now does anything become visible under the output.
      for (const sink of sinks) await sink.commit();
      result.kept = kept.count;
      result.droppedRecords = options.dropped !== undefined ? dropped.count : 0;
      result.bytesWritten = sinks.reduce((n, x) => n + x.bytes, 0);
    }
    result.bytesRead = read;
    return result;
  } catch (e) {
    for (const sink of sinks) await sink.abort(e);
    await reader.cancel().catch(() => {});
    if (e instanceof RecordError) {
      throw mismatch(`${e.message} (a line the manifest has an entry for is not a record)`);
    }
    throw e;
  } finally {
    for (const sink of sinks) await sink.dispose();
    for (const p of tmpPaths) await Deno.remove(p).catch(() => {});
  }
}

/**
 * `work` started ahead of its use: a failure while nobody awaits it yet (the consumer busy, or
 * gone) is no unhandled rejection; it is thrown where the promise is awaited.
 */
function ahead<T>(work: Promise<T>): Promise<T> {
  work.catch(() => {});
  return work;
}

/**
 * Matches the manifest's entries to the shard's lines and copies each entry's line to the kept or
 * dropped sink. Lines are found chunk by chunk in a synchronous loop (an async step per line
 * costs more than copying the line), and consecutive lines bound for the same sink are copied as
 * one slice of the chunk. A line keeps its bytes, less a trailing `\r` (as `records.ts` splits
 * lines), and ends with `\n` in the output, the last line too.
 */
async function joinJsonl(
  header: ManifestHeader,
  blocks: AsyncGenerator<ManifestEntry[]>,
  chunks: AsyncIterable<Uint8Array>,
  kept: LineSink,
  dropped: LineSink,
  mismatch: (why: string) => Error,
): Promise<void> {
  const idField = header.fields.id;
  // `{"<idField>":"` : where most lines spell their id, first thing.
  const idPrefix = encoder.encode(`{${JSON.stringify(idField)}:"`);
  const idKey = JSON.stringify(idField) + ":";
  let block: ManifestEntry[] = [];
  let cursor = 0;
  let entriesDone = false;
  // One block parsed ahead: it is read and parsed while the join waits for the shard's reads.
  let nextBlock = ahead(blocks.next());
  const refill = async () => {
    const n = await nextBlock;
    if (!n.done) nextBlock = ahead(blocks.next());
    block = n.done ? [] : n.value;
    cursor = 0;
    entriesDone = !!n.done;
  };
  await refill();
  // The common spelling, checked in place: the line starts `{"id":"<id>"` and the id is printable
  // ASCII without `"` or `\` (so JSON spells it as itself). Anything else: the id is looked for
  // verbatim, else the line is parsed. The bytes themselves are vouched for by the ETag or sha256.
  const checkId = (entry: ManifestEntry, data: Uint8Array, start: number, end: number) => {
    const id = entry.id;
    let p = start;
    const after = start + idPrefix.length + id.length;
    if (after < end && data[after] === 0x22) {
      let ok = true;
      for (let i = 0; i < idPrefix.length; i++) {
        if (data[p++] !== idPrefix[i]) {
          ok = false;
          break;
        }
      }
      for (let i = 0; ok && i < id.length; i++) {
        const c = id.charCodeAt(i);
        if (c !== data[p++] || c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) ok = false;
      }
      if (ok) return;
    }
    const bytes = data.subarray(start, end);
    const needle = encoder.encode(idKey + JSON.stringify(id));
    if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(needle) >= 0) return;
    const record = parseRecordLine(entry.line, bytes, header.fields.id, header.fields.text);
    if (record.id !== id) {
      throw mismatch(
        `entry for id ${JSON.stringify(id)} at line ${entry.line}, shard has id ` +
          `${JSON.stringify(record.id)} there`,
      );
    }
  };
  let line = 0;
  // The pending run: `data[runStart, runEnd)` (whole lines with their `\n`) bound for `runSink`.
  let runSink: LineSink | null = null;
  let runStart = 0;
  let runEnd = 0;
  let runData: Uint8Array | null = null;
  const flushRun = () => {
    if (runSink && runData) runSink.append(runData, runStart, runEnd);
    runSink = null;
    runData = null;
  };
  // One line `data[start, nl)`, `nl` its `\n` (or the end of the last line, which has none).
  const onLine = (data: Uint8Array, start: number, nl: number) => {
    line++;
    const entry = block[cursor];
    if (!entry || entry.line !== line) return; // a line the scorer skipped
    const end = nl > start && data[nl - 1] === 0x0d ? nl - 1 : nl;
    checkId(entry, data, start, end);
    cursor++;
    const sink = entry.keep ? kept : dropped;
    sink.count++;
    if (
      end === nl && nl < data.length && runSink === sink && runData === data && runEnd === start
    ) {
      runEnd = nl + 1;
      return;
    }
    flushRun();
    if (end === nl && nl < data.length) {
      runSink = sink;
      runData = data;
      runStart = start;
      runEnd = nl + 1;
    } else {
      sink.append(data, start, end);
      sink.append(NEWLINE, 0, 1);
    }
  };
  let carry: Uint8Array[] = [];
  let carryLength = 0;
  try {
    for await (const chunk of chunks) {
      let start = 0;
      if (!entriesDone || cursor < block.length) {
        for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
          if (carryLength) {
            carry.push(chunk.subarray(0, nl + 1));
            const whole = concatBytes(carry, carryLength + nl + 1);
            carry = [];
            carryLength = 0;
            onLine(whole, 0, whole.length - 1);
          } else {
            onLine(chunk, start, nl);
          }
          start = nl + 1;
          if (cursor >= block.length && !entriesDone) await refill();
          if (entriesDone && cursor >= block.length) break; // the rest is only read (and hashed)
        }
        if (start < chunk.length && (!entriesDone || cursor < block.length)) {
          carry.push(chunk.slice(start));
          carryLength += chunk.length - start;
        }
      }
      flushRun();
      await kept.drain();
      await dropped.drain();
    }
    if (carryLength) {
      const whole = concatBytes(carry, carryLength);
      onLine(whole, 0, whole.length);
      flushRun();
    }
    if (cursor < block.length) throw mismatch(`the shard ends before line ${block[cursor].line}`);
    if (!entriesDone) {
      const n = await blocks.next();
      if (!n.done && n.value.length) {
        throw mismatch(`the shard ends before line ${n.value[0].line}`);
      }
    }
  } finally {
    await blocks.return(undefined);
  }
}

/** Rows per output row group when the input's are larger (bounds the rows held). */
const MAX_ROWS_PER_GROUP = 10_000;

async function joinParquet(
  storage: Storage,
  header: ManifestHeader,
  entries: AsyncGenerator<ManifestEntry>,
  side: ReadableStream<Uint8Array>,
  keptPath: string,
  droppedPath: string | null,
  etag: string | null,
  mismatch: (why: string) => Error,
): Promise<{ kept: number; dropped: number }> {
  const shard = header.input.uri;
  const file = await rangedFile(storage, shard, { etag });
  const metadata = await parquetMetadataAsync(file);
  const schema = metadata.schema as SchemaElement[];
  // Only flat schemas (top-level leaf columns) are written back as they were read.
  if (topLevelNames(schema).length !== schema.length - 1) {
    throw new MaterializeError(
      `shard ${shard} has nested columns; materialising nested Parquet is not supported`,
      shard,
    );
  }
  const groupRows = Math.min(
    MAX_ROWS_PER_GROUP,
    Math.max(1, ...metadata.row_groups.map((g) => Number(g.num_rows))),
  );
  const sinks = [keptPath, droppedPath].map((path) =>
    path === null ? null : new RowSink(path, schema, metadata.key_value_metadata, groupRows)
  );
  const records = readRecords(storage, side, {
    uri: shard,
    etag,
    size: header.input.size,
    idField: header.fields.id,
    textField: header.fields.text,
    onInvalid: "skip",
  });
  try {
    for await (const [entry, record] of joinEntries(entries, records, mismatch, "row")) {
      const sink = entry.keep ? sinks[0] : sinks[1];
      if (sink) await sink.add(record.record);
    }
    for await (const _ of records) { /* hash every byte */ }
  } finally {
    await records.return(undefined);
  }
  for (const s of sinks) await s?.finish();
  return { kept: sinks[0]!.rows, dropped: sinks[1]?.rows ?? 0 };
}

function topLevelNames(schema: SchemaElement[]): string[] {
  const root = schema[0];
  const out: string[] = [];
  let i = 1;
  for (let c = 0; c < (root.num_children ?? 0); c++) {
    const el = schema[i];
    out.push(el.name);
    if (el.num_children) return []; // nested: caller refuses
    i++;
  }
  return out;
}

/** Rows buffered into one row group at a time, written through hyparquet-writer to a file. */
class RowSink {
  #writer: ParquetWriter;
  #names: string[];
  #buffer: Record<string, unknown>[] = [];
  rows = 0;

  constructor(
    path: string,
    schema: SchemaElement[],
    kv: { key: string; value?: string }[] | undefined,
    readonly groupRows: number,
  ) {
    this.#names = schema.slice(1).map((s) => s.name);
    this.#writer = new ParquetWriter({ writer: fileWriter(path), schema, kvMetadata: kv });
  }

  async add(row: Record<string, unknown>): Promise<void> {
    this.#buffer.push(row);
    this.rows++;
    if (this.#buffer.length >= this.groupRows) await this.#flush();
  }

  async #flush(): Promise<void> {
    if (!this.#buffer.length) return;
    const columnData: ColumnSource[] = this.#names.map((name) => ({
      name,
      data: this.#buffer.map((r) => r[name] ?? null),
    }));
    this.#buffer = [];
    await this.#writer.write({ columnData, rowGroupSize: this.groupRows });
  }

  async finish(): Promise<void> {
    await this.#flush();
    await this.#writer.finish();
  }
}

// ---------------------------------------------------------------------------------------------
// A prefix of manifests

/** Options of {@link materialize}. */
export interface MaterializeOptions {
  /** Prefix holding `NAME.manifest.jsonl` objects (listed recursively). */
  manifests: string;
  /** Prefix the kept shards go under (`NAME` + the input shard's extension). */
  output: string;
  /** Prefix the dropped records go under, if wanted. */
  dropped?: string;
  format?: MaterializeFormat;
  /** Shards materialised at once (default 2). */
  concurrency?: number;
  tmpDir?: string;
  /** zlib level of gzip outputs (default {@link DEFAULT_GZIP_LEVEL}). */
  gzipLevel?: number;
  /** Called once the manifests are listed (done 0), then as shards progress. */
  onProgress?: (progress: { shardsDone: number; shards: number; bytesRead: number }) => void;
}

/** Totals of a {@link materialize} run. */
export interface MaterializeSummary {
  shards: number;
  created: number;
  skipped: number;
  kept: number;
  dropped: number;
  bytesRead: number;
  bytesWritten: number;
  seconds: number;
  results: MaterializedShard[];
}

function withSlash(prefix: string): string {
  return prefix.endsWith("/") ? prefix : prefix + "/";
}

/**
 * The shard's name under an output prefix: the manifest's path below the manifests prefix, with
 * `.manifest.jsonl` replaced by the input shard's extension.
 */
export function materializedUriFor(
  manifest: string,
  manifests: string,
  output: string,
  shard: string,
): string {
  const rel = manifest.slice(withSlash(manifests).length, -MANIFEST_SUFFIX.length);
  const ext = /(\.(?:jsonl|ndjson)(?:\.gz)?|\.parquet)$/.exec(shard)?.[1] ?? ".jsonl";
  return withSlash(output) + rel + ext;
}

/**
 * Materialises every manifest under a prefix (see {@link materializeShard}), a few shards at a
 * time. Stops at the first failure (already written shards stay: each is complete).
 */
export async function materialize(
  storage: Storage,
  options: MaterializeOptions,
): Promise<MaterializeSummary> {
  const started = performance.now();
  const manifests: string[] = [];
  for await (const obj of storage.list(withSlash(options.manifests))) {
    if (obj.uri.endsWith(MANIFEST_SUFFIX)) manifests.push(obj.uri);
  }
  const results: MaterializedShard[] = [];
  const inFlight = new Map<string, number>();
  let doneBytes = 0;
  const report = () =>
    options.onProgress?.({
      shardsDone: results.length,
      shards: manifests.length,
      bytesRead: doneBytes + [...inFlight.values()].reduce((a, b) => a + b, 0),
    });
  report();
  let next = 0;
  const worker = async () => {
    while (next < manifests.length) {
      const manifest = manifests[next++];
      // The header names the shard, which decides the output's extension.
      const header = await readManifestHeader(storage, manifest);
      const shard = header.input.uri;
      const out = materializedUriFor(manifest, options.manifests, options.output, shard);
      const dropped = options.dropped
        ? materializedUriFor(manifest, options.manifests, options.dropped, shard)
        : undefined;
      const r = await materializeShard(storage, {
        manifest,
        output: out,
        dropped,
        format: options.format,
        tmpDir: options.tmpDir,
        gzipLevel: options.gzipLevel,
        onBytes: (b) => {
          inFlight.set(manifest, b);
        },
      });
      inFlight.delete(manifest);
      doneBytes += r.bytesRead;
      results.push(r);
      report();
    }
  };
  await Promise.all(
    Array.from({ length: Math.max(1, options.concurrency ?? 2) }, () => worker()),
  );
  const seconds = (performance.now() - started) / 1000;
  return {
    shards: manifests.length,
    created: results.filter((r) => r.result === "created").length,
    skipped: results.filter((r) => r.result === "skipped").length,
    kept: results.reduce((n, r) => n + r.kept, 0),
    dropped: results.reduce((n, r) => n + r.droppedRecords, 0),
    bytesRead: results.reduce((n, r) => n + r.bytesRead, 0),
    bytesWritten: results.reduce((n, r) => n + r.bytesWritten, 0),
    seconds,
    results: results.sort((a, b) => a.manifest.localeCompare(b.manifest)),
  };
}
