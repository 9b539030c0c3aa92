/**
 * The storage operations the scoring function uses, as an interface so tests can wrap the real
 * storage (`lib/storage.ts`) with fault injection, e.g. to honour `If-None-Match` where s3rver
 * ignores it, or to fail a read half-way through a shard.
 */
import * as storage from "../lib/storage.ts";
import type { ObjectInfo, WriteOptions } from "../lib/storage.ts";

/** What the scoring function needs from storage. */
export interface ScoringStorage {
  stat(uri: string): Promise<ObjectInfo | null>;
  readObject(uri: string): Promise<ReadableStream<Uint8Array>>;
  /** Bytes `[start, end)` of an object, for Parquet shards (default: the real storage's). */
  readRange?(
    uri: string,
    start: number,
    end: number,
    options?: { etag?: string | null },
  ): Promise<Uint8Array>;
  readBytes(uri: string): Promise<Uint8Array>;
  writeObject(
    uri: string,
    body: Uint8Array | string | ReadableStream<Uint8Array>,
    options?: WriteOptions,
  ): Promise<{ etag: string | null }>;
}

/** The real storage: S3 (from the environment or `configureS3`) and local files. */
export const defaultStorage: ScoringStorage = {
  stat: storage.stat,
  readObject: storage.readObject,
  readRange: storage.readRange,
  readBytes: storage.readBytes,
  writeObject: storage.writeObject,
};
