/**
 * A fault-injecting wrapper around the real storage, for the behaviours a test server can't
 * produce on demand: S3's atomic `If-None-Match: *` (s3rver ignores it), a read that fails or
 * stalls half-way through a shard, a write that waits for a signal.
 */
import { PreconditionFailedError, StorageError } from "../../lib/storage.ts";
import { defaultStorage, type ScoringStorage } from "../../functions/storage.ts";

/** Faults to inject; each applies to URIs matching `match` (default: every URI). */
export interface Faults {
  /**
   * Emulate S3's conditional create: `ifNoneMatch: "*"` writes are serialized and refused with
   * PreconditionFailedError when the object exists (over a store that ignores the header).
   */
  conditionalWrites?: boolean;
  /** Reads of matching URIs error after this many bytes. */
  failReadAfterBytes?: { match: (uri: string) => boolean; bytes: number };
  /** Reads of matching URIs deliver this many bytes and then never finish. */
  stallReadAfterBytes?: { match: (uri: string) => boolean; bytes: number };
  /** Awaited before every write (lets a test line two requests up at the write). */
  beforeWrite?: (uri: string) => Promise<void>;
}

function limitStream(
  stream: ReadableStream<Uint8Array>,
  bytes: number,
  onLimit: (controller: ReadableStreamDefaultController<Uint8Array>) => Promise<void> | void,
): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= bytes) return onLimit(controller);
      const { value, done } = await reader.read();
      if (done) return controller.close();
      const part = value.subarray(0, Math.max(0, bytes - sent));
      sent += part.length;
      controller.enqueue(part);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/** Wraps `base` (default: the real storage) with the given faults. */
export function faultStorage(
  faults: Faults,
  base: ScoringStorage = defaultStorage,
): ScoringStorage {
  let writeLock = Promise.resolve();
  return {
    stat: (uri) => base.stat(uri),
    readBytes: (uri) => base.readBytes(uri),
    async readObject(uri) {
      const stream = await base.readObject(uri);
      const fail = faults.failReadAfterBytes;
      if (fail?.match(uri)) {
        return limitStream(
          stream,
          fail.bytes,
          (c) => c.error(new StorageError(`injected fault: connection reset reading ${uri}`, uri)),
        );
      }
      const stall = faults.stallReadAfterBytes;
      if (stall?.match(uri)) {
        return limitStream(stream, stall.bytes, () => new Promise(() => {}));
      }
      return stream;
    },
    async writeObject(uri, body, options = {}) {
      await faults.beforeWrite?.(uri);
      if (!faults.conditionalWrites || options.ifNoneMatch !== "*") {
        return base.writeObject(uri, body, options);
      }
      // Serialize conditional writes so check-then-write is atomic, as S3 makes it.
      const previous = writeLock;
      let release!: () => void;
      writeLock = new Promise((r) => (release = r));
      await previous;
      try {
        if (await base.stat(uri)) {
          if (body instanceof ReadableStream) await body.cancel();
          throw new PreconditionFailedError(uri);
        }
        return await base.writeObject(uri, body, { ...options, ifNoneMatch: undefined });
      } finally {
        release();
      }
    },
  };
}
