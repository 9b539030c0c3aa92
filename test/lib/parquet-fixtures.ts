/**
 * Parquet test shards, written with hyparquet-writer (a different code path from the reader under
 * test), with real gzip / zstd / brotli compression from node:zlib.
 */
import { type ColumnSource, parquetWriteBuffer } from "hyparquet-writer";
import zlib from "node:zlib";

/** Codecs the fixtures can write (snappy is built into the writer). */
export type FixtureCodec = "UNCOMPRESSED" | "SNAPPY" | "GZIP" | "ZSTD" | "BROTLI";

const compressors = {
  GZIP: (b: Uint8Array) => new Uint8Array(zlib.gzipSync(b)),
  ZSTD: (b: Uint8Array) => new Uint8Array(zlib.zstdCompressSync(b)),
  BROTLI: (b: Uint8Array) => new Uint8Array(zlib.brotliCompressSync(b)),
};

/** A Parquet file of the given columns, `rowGroupSize` rows per row group. */
export function parquetBytes(
  columnData: ColumnSource[],
  options: { codec?: FixtureCodec; rowGroupSize?: number } = {},
): Uint8Array {
  return new Uint8Array(parquetWriteBuffer({
    columnData,
    codec: options.codec ?? "SNAPPY",
    compressors,
    rowGroupSize: options.rowGroupSize,
  }));
}

/** A Parquet shard of `{id, text}` records (plus any extra string columns). */
export function recordsParquet(
  records: { id: string; text: string; [k: string]: string }[],
  options: { codec?: FixtureCodec; rowGroupSize?: number; idField?: string; textField?: string } =
    {},
): Uint8Array {
  const extra = Object.keys(records[0] ?? {}).filter((k) => k !== "id" && k !== "text");
  return parquetBytes([
    { name: options.idField ?? "id", data: records.map((r) => r.id), type: "STRING" },
    { name: options.textField ?? "text", data: records.map((r) => r.text), type: "STRING" },
    ...extra.map((k): ColumnSource => ({
      name: k,
      data: records.map((r) => r[k]),
      type: "STRING",
    })),
  ], options);
}
