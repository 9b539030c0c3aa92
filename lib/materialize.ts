/**
 * Materialising a filtered dataset: each shard joined with its manifest v1 (see `manifest.ts`),
 * the kept records written as a new shard (and optionally the dropped ones beside it, what
 * datatrove calls an exclusion writer), in the input's format:
 *
 * - JSON Lines (gzip or not): the kept lines are copied byte for byte (the line's bytes without its
 *   `\n`, and without a trailing `\r`, as `records.ts` splits them), gzip-compressed again when the
 *   input was gzip. Each entry's id is checked against its line (found verbatim, else by parsing).
 * - Parquet: the kept rows are written with hyparquet-writer under the input's own schema and
 *   key-value metadata, one output row group per input row group at most.
 *
 * The shard must be the one the manifest was written for: its size is checked first (a truncated
 * shard fails before anything is read), then its ETag, else the sha256 of its bytes as they stream
 * (a mismatch fails at the end). An output becomes visible, create-only (`ifNoneMatch: "*"`), only
 * after the whole shard joined and verified: S3 outputs are spooled to a local file and then put in
 * one streaming PUT, local outputs stream into FileStorage's hidden temporary file that is linked
 * into place at the end (see `LineSink`), so an error leaves nothing under the output. Memory stays
 * bounded by one input chunk of lines (one row group for Parquet).
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
import { Duplex } from "node:stream";
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
} from "./manifest.ts";
import { rangedFile, startsWithParquetMagic } from "./parquet.ts";
import { parseRecordLine, peekStream, readRecords, RecordError } from "./records.ts";
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

/**
 * Where one output's lines go: through an optional gzip stage, in ~256 KiB writes (one stream
 * write per line would cost more than the copy), and made visible only by {@link commit}.
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
  #batch: Uint8Array[] = [];
  #batchBytes = 0;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #path: string | null = null;
  count = 0;
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
    gzip: boolean,
    tmpDir?: string,
  ): Promise<LineSink> {
    if (!wanted) return new LineSink("discard", storage, uri);
    const direct = parseUri(uri).scheme === "file";
    const sink = new LineSink(direct ? "direct" : "spool", storage, uri);
    // zlib at level 1 rather than CompressionStream (level 6, not settable): recompressing kept
    // lines at level 6 made gzip shards materialise at a tenth of the plain ones' rate.
    const stage = gzip
      ? Duplex.toWeb(createGzip({ level: 1 })) as unknown as TransformStream<
        Uint8Array,
        Uint8Array
      >
      : new TransformStream<Uint8Array, Uint8Array>();
    const counted = stage.readable.pipeThrough(
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

  /** Adds a line (without its newline); held by reference until {@link settle}. */
  push(bytes: Uint8Array): void {
    this.count++;
    if (!this.#writer) return;
    this.#batch.push(bytes, NEWLINE);
    this.#batchBytes += bytes.length + 1;
  }

  /**
   * Copies the lines pushed since the last call into one buffer (so the input chunk they point
   * into can go), and writes once ~256 KiB are pending.
   */
  async settle(): Promise<void> {
    if (this.#batch.length) {
      this.#pending.push(concatBytes(this.#batch, this.#batchBytes));
      this.#pendingBytes += this.#batchBytes;
      this.#batch = [];
      this.#batchBytes = 0;
    }
    if (this.#pendingBytes >= 256 * 1024) await this.#flush();
  }

  async #flush(): Promise<void> {
    if (!this.#pending.length || !this.#writer) return;
    const out = this.#pending.length === 1
      ? this.#pending[0]
      : concatBytes(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    await this.#writer.ready;
    await this.#writer.write(out);
  }

  /** Makes the output visible (create-only); an existing object (a concurrent run's) stands. */
  async commit(): Promise<void> {
    if (!this.#writer) return;
    await this.settle();
    await this.#flush();
    await this.#writer.close();
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
  const { header, entries } = await readManifest(storage, options.manifest);
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
    await entries.return(undefined);
    return base;
  }
  const mismatch = (why: string) =>
    new ManifestMismatchError(
      `manifest ${options.manifest} does not match shard ${shard}: ${why}`,
      options.manifest,
    );
  const info = await storage.stat(shard);
  if (!info) {
    await entries.return(undefined);
    throw new MaterializeError(
      `shard ${shard} named by manifest ${options.manifest} does not exist`,
      options.manifest,
      { cause: new NotFoundError(shard) },
    );
  }
  if (info.size !== header.input.size) {
    await entries.return(undefined);
    throw mismatch(
      `the shard has ${info.size} bytes, the manifest was written for ${header.input.size} ` +
        "(truncated or replaced?)",
    );
  }
  const byEtag = info.etag != null && info.etag === header.input.etag;
  // One pass-through stage hashes (unless the ETag vouches for the bytes) and counts: every extra
  // stream stage costs measurably against a plain copy.
  const hash = byEtag ? null : createHash("sha256");
  let digest: string | null = null;
  let read = 0;
  const tapped = (await storage.read(shard)).pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        hash?.update(chunk);
        read += chunk.length;
        options.onBytes?.(read);
        controller.enqueue(chunk);
      },
    }),
  );
  const peeked = await peekStream(tapped, 4);
  const isParquet = startsWithParquetMagic(peeked.head);
  const isGzip = peeked.head[0] === 0x1f && peeked.head[1] === 0x8b;
  const format: MaterializeFormat = isParquet ? "parquet" : "jsonl";
  if (options.format && options.format !== format) {
    await peeked.stream.cancel().catch(() => {});
    await entries.return(undefined);
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
      const counts = await joinParquet(
        storage,
        header,
        entries,
        peeked.stream,
        keptPath,
        droppedPath,
        info.etag,
        mismatch,
      );
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
      const kept = await LineSink.open(
        storage,
        options.output,
        targets.kept,
        isGzip,
        options.tmpDir,
      );
      sinks.push(kept);
      const dropped = options.dropped
        ? await LineSink.open(storage, options.dropped, targets.dropped, isGzip, options.tmpDir)
        : null;
      if (dropped) sinks.push(dropped);
      const stream = isGzip
        ? peeked.stream.pipeThrough(
          new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
        )
        : peeked.stream;
      await joinJsonl(header, entries, stream, kept, dropped, mismatch);
      verify();
      // Verified: only now does anything become visible under the output.
      for (const sink of sinks) await sink.commit();
      result.kept = kept.count;
      result.droppedRecords = dropped?.count ?? 0;
      result.bytesWritten = sinks.reduce((n, x) => n + x.bytes, 0);
    }
    result.bytesRead = read;
    return result;
  } catch (e) {
    for (const sink of sinks) await sink.abort(e);
    await peeked.stream.cancel().catch(() => {});
    await entries.return(undefined).catch(() => {});
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
 * Matches the manifest's entries to the shard's lines and routes each entry's line to the kept or
 * dropped sink. Lines are found chunk by chunk in a synchronous loop (an async step per line
 * costs more than copying the line), and entries are pulled ahead in blocks.
 */
async function joinJsonl(
  header: ManifestHeader,
  entries: AsyncGenerator<ManifestEntry>,
  stream: ReadableStream<Uint8Array>,
  kept: LineSink,
  dropped: LineSink | null,
  mismatch: (why: string) => Error,
): Promise<void> {
  const idKey = JSON.stringify(header.fields.id) + ":";
  let block: ManifestEntry[] = [];
  let cursor = 0;
  let entriesDone = false;
  const refill = async () => {
    block = [];
    cursor = 0;
    while (block.length < 4096) {
      const n = await entries.next();
      if (n.done) {
        entriesDone = true;
        break;
      }
      block.push(n.value);
    }
  };
  await refill();
  let line = 0;
  let carry: Uint8Array[] = [];
  let carryLength = 0;
  // Returns false once the manifest has no more entries (the rest of the shard is only read).
  const onLine = (bytes: Uint8Array): boolean => {
    line++;
    const entry = block[cursor];
    if (!entry || entry.line !== line) return true; // a line the scorer skipped
    if (bytes.length && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, -1);
    // Most lines hold `"<idField>":<the id as JSON>` verbatim: finding it is a cheap id check.
    // Any other spelling (spaces, escapes, numeric ids) falls back to parsing the line. The
    // bytes themselves are vouched for by the ETag or sha256 check.
    const needle = encoder.encode(idKey + JSON.stringify(entry.id));
    if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(needle) < 0) {
      const record = parseRecordLine(line, bytes, header.fields.id, header.fields.text);
      if (record.id !== entry.id) {
        throw mismatch(
          `entry for id ${JSON.stringify(entry.id)} at line ${entry.line}, shard has id ` +
            `${JSON.stringify(record.id)} there`,
        );
      }
    }
    if (entry.keep) kept.push(bytes);
    else dropped?.push(bytes);
    cursor++;
    return true;
  };
  for await (const chunk of stream) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      let bytes = chunk.subarray(start, nl);
      if (carryLength) {
        carry.push(bytes);
        bytes = concatBytes(carry, carryLength + bytes.length);
        carry = [];
        carryLength = 0;
      }
      onLine(bytes);
      start = nl + 1;
      if (cursor >= block.length && !entriesDone) {
        // Sinks copy what they hold before the chunk is let go (see LineSink.push).
        await kept.settle();
        await dropped?.settle();
        await refill();
      }
    }
    if (start < chunk.length) {
      carry.push(chunk.slice(start));
      carryLength += chunk.length - start;
    }
    await kept.settle();
    await dropped?.settle();
  }
  if (carryLength) onLine(concatBytes(carry, carryLength));
  if (cursor < block.length) throw mismatch(`the shard ends before line ${block[cursor].line}`);
  if (!entriesDone) {
    const n = await entries.next();
    if (!n.done) throw mismatch(`the shard ends before line ${n.value.line}`);
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
      const { header, entries } = await readManifest(storage, manifest);
      await entries.return(undefined);
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
