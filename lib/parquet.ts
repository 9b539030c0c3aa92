/**
 * Reading Parquet record shards, row group by row group, through ranged reads of the stored object
 * (a ranged GET on S3, a seek and read on a local file): memory stays bounded by one row group's
 * columns, not the file. {@link readRecords} in `records.ts` uses this when a shard starts with
 * Parquet's magic bytes; most code should call that, not this module.
 *
 * Decoding is hyparquet's (with hyparquet-compressors for gzip, zstd, brotli and lz4; snappy is
 * built in). Strings are decoded strictly so that a row whose bytes are not valid UTF-8 is reported,
 * as a JSON line with invalid bytes is.
 *
 * @example
 * ```ts
 * const file = await rangedFile(storage, "s3://bucket/shards/part-0.parquet");
 * for await (const r of readParquetRows(file, "s3://bucket/shards/part-0.parquet")) {
 *   console.log(r.row, r.values.id);
 * }
 * ```
 */
import {
  type AsyncBuffer,
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
} from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { NotFoundError, type Storage, StorageError } from "./storage.ts";

/** `PAR1`: the first and last four bytes of every Parquet file. */
export const PARQUET_MAGIC: Uint8Array = new Uint8Array([0x50, 0x41, 0x52, 0x31]);

/** True if `bytes` starts with {@link PARQUET_MAGIC}. */
export function startsWithParquetMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x41 && bytes[2] === 0x52 &&
    bytes[3] === 0x31;
}

/** Why a Parquet shard cannot be read. */
export type ParquetErrorKind =
  /** Only a byte stream was given: Parquet's index is at the end, so it needs random access. */
  | "needs-random-access"
  /** Not a readable Parquet file: truncated, corrupt, or an unsupported encoding or codec. */
  | "corrupt"
  /** A row group is larger than the memory bound (`maxRowGroupBytes`). */
  | "row-group-too-large";

/** A Parquet shard that cannot be read; the message says why and what to do. */
export class ParquetError extends Error {
  constructor(
    readonly uri: string | null,
    readonly kind: ParquetErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ParquetError";
  }
}

/** Options for {@link rangedFile}. */
export interface RangedFileOptions {
  /** The object's size in bytes, if known (saves a HEAD request). */
  size?: number;
  /**
   * The version every read is pinned to (default: the ETag `stat` reports when `size` is not
   * given), so a file replaced mid-read fails instead of mixing two versions.
   */
  etag?: string | null;
}

/**
 * A stored object as hyparquet's random-access file, each slice a ranged read of `storage`.
 *
 * @example
 * ```ts
 * const file = await rangedFile(new FileStorage(), "/data/part-0.parquet");
 * console.log(file.byteLength);
 * ```
 */
export async function rangedFile(
  storage: Storage,
  uri: string,
  options: RangedFileOptions = {},
): Promise<AsyncBuffer> {
  let { size, etag = null } = options;
  if (size === undefined) {
    const info = await storage.stat(uri);
    if (!info) throw new NotFoundError(uri);
    size = info.size;
    etag = options.etag ?? info.etag;
  }
  const byteLength = size;
  return {
    byteLength,
    async slice(start: number, end = byteLength): Promise<ArrayBuffer> {
      const bytes = await storage.readRange(uri, start, end, { etag });
      if (bytes.length !== end - start) {
        throw new ParquetError(
          uri,
          "corrupt",
          `${uri}: read ${bytes.length} bytes at ${start} where ${end - start} were expected ` +
            `(the object is shorter than its ${size} bytes: was it replaced while being read?)`,
        );
      }
      return (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
        ? bytes.buffer
        : bytes.slice().buffer) as ArrayBuffer;
    },
  };
}

/** One row as read, with its 1-based row number in the file. */
export interface ParquetRow {
  row: number;
  /** The row's columns (those read), as hyparquet decodes them: INT64 as bigint, etc. */
  values: Record<string, unknown>;
  /** A string in the row was not valid UTF-8 (it has U+FFFD where bytes were invalid). */
  invalidUtf8: boolean;
}

/** Options for {@link readParquetRows}. */
export interface ReadParquetRowsOptions {
  /**
   * Top-level columns to read (default: all). Names the file lacks are left out: its rows simply
   * have no such field.
   */
  columns?: string[];
  /**
   * Largest row group accepted, in uncompressed bytes of the columns read (default 512 MiB): the
   * memory bound. A larger one throws {@link ParquetError} (`row-group-too-large`).
   */
  maxRowGroupBytes?: number;
  /** Called before each row group is read; throwing stops the read (e.g. a failed side read). */
  beforeRowGroup?: () => void;
}

/** Default {@link ReadParquetRowsOptions.maxRowGroupBytes}. */
export const DEFAULT_MAX_ROW_GROUP_BYTES = 512 * 2 ** 20;

/** A string column value whose bytes were not valid UTF-8 (unwrapped before rows are yielded). */
class InvalidUtf8Text {
  constructor(readonly text: string) {}
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const lenientDecoder = new TextDecoder("utf-8");

// hyparquet decodes strings leniently; decode strictly instead so invalid bytes can be reported
// per row (the decoded columns are only assembled into rows later, hence the marker object).
const parsers = {
  stringFromBytes(bytes: Uint8Array | undefined): unknown {
    if (!bytes) return bytes;
    try {
      return strictDecoder.decode(bytes);
    } catch {
      return new InvalidUtf8Text(lenientDecoder.decode(bytes));
    }
  },
};

/** Replaces invalid-UTF-8 markers (also inside lists and structs); true if there were any. */
function unwrapInvalid(container: Record<string, unknown> | unknown[]): boolean {
  let found = false;
  for (const [key, value] of Object.entries(container)) {
    if (value instanceof InvalidUtf8Text) {
      (container as Record<string, unknown>)[key] = value.text;
      found = true;
    } else if (
      Array.isArray(value) ||
      (value !== null && typeof value === "object" &&
        Object.getPrototypeOf(value) === Object.prototype)
    ) {
      if (unwrapInvalid(value as Record<string, unknown>)) found = true;
    }
  }
  return found;
}

function passThrough(e: unknown): boolean {
  return e instanceof StorageError || e instanceof ParquetError;
}

/**
 * Streams the rows of a Parquet file, one row group at a time (only the requested columns of that
 * group are fetched and decoded). Throws {@link ParquetError} for a file that is not readable
 * Parquet, and the storage's errors for failed reads.
 */
export async function* readParquetRows(
  file: AsyncBuffer,
  uri: string,
  options: ReadParquetRowsOptions = {},
): AsyncGenerator<ParquetRow> {
  const maxBytes = options.maxRowGroupBytes ?? DEFAULT_MAX_ROW_GROUP_BYTES;
  let metadata;
  try {
    metadata = await parquetMetadataAsync(file);
  } catch (e) {
    if (passThrough(e)) throw e;
    throw new ParquetError(
      uri,
      "corrupt",
      `${uri} starts with Parquet's magic bytes but its footer cannot be read ` +
        `(${(e as Error).message}): is the file truncated or still being written?`,
      { cause: e },
    );
  }
  const names = parquetSchema(metadata).children.map((c) => c.element.name);
  const wanted = options.columns ? new Set(options.columns) : null;
  const columns = wanted ? names.filter((n) => wanted.has(n)) : names;
  const read = new Set(columns);
  let groupStart = 0;
  for (const [index, group] of metadata.row_groups.entries()) {
    const rows = Number(group.num_rows);
    const groupEnd = groupStart + rows;
    if (rows === 0) continue;
    let bytes = 0;
    for (const chunk of group.columns) {
      const meta = chunk.meta_data;
      if (meta && read.has(meta.path_in_schema[0])) bytes += Number(meta.total_uncompressed_size);
    }
    if (bytes > maxBytes) {
      throw new ParquetError(
        uri,
        "row-group-too-large",
        `${uri}: row group ${index} (rows ${groupStart + 1}-${groupEnd}) holds ${bytes} bytes ` +
          `uncompressed in the columns read, over the ${maxBytes}-byte limit that bounds memory: ` +
          "rewrite the file with smaller row groups",
      );
    }
    options.beforeRowGroup?.();
    let objects: Record<string, unknown>[];
    if (columns.length === 0) {
      objects = Array.from({ length: rows }, () => ({}));
    } else {
      try {
        objects = await parquetReadObjects({
          file,
          metadata,
          columns,
          rowStart: groupStart,
          rowEnd: groupEnd,
          compressors,
          parsers,
        });
      } catch (e) {
        if (passThrough(e)) throw e;
        throw new ParquetError(
          uri,
          "corrupt",
          `${uri}: cannot decode row group ${index} (rows ${groupStart + 1}-${groupEnd}): ` +
            `${(e as Error).message}`,
          { cause: e },
        );
      }
    }
    for (let i = 0; i < objects.length; i++) {
      const values = objects[i];
      yield { row: groupStart + i + 1, values, invalidUtf8: unwrapInvalid(values) };
    }
    groupStart = groupEnd;
  }
}
