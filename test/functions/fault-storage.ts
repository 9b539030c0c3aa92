/**
 * A fault-injecting wrapper around a {@link Storage}, for the behaviours a test server can't
 * produce on demand: S3's atomic `If-None-Match: *` (s3rver ignores it), a read that fails or
 * stalls half-way through a shard, a write that waits for a signal.
 */
import {
  BaseStorage,
  type Body,
  type ListOptions,
  type ObjectInfo,
  PreconditionFailedError,
  type ReadRangeOptions,
  type Storage,
  StorageError,
  type WriteOptions,
} from "../../lib/storage.ts";

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
  /** Awaited before every read of a whole object (lets a test hold a model load). */
  beforeRead?: (uri: string) => Promise<void>;
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

/** Wraps `base` with the given faults; every other operation goes straight to `base`. */
export function faultStorage(faults: Faults, base: Storage): Storage {
  return new FaultStorage(faults, base);
}

/**
 * S3's conditional create over `base`, with every write held until `writers` writes have arrived:
 * racing replicas all pass the existence check before any of them writes.
 */
export function racingWrites(base: Storage, writers = 2): Storage {
  let arrivals = 0;
  let release!: () => void;
  const allAtWrite = new Promise<void>((r) => (release = r));
  return faultStorage({
    conditionalWrites: true,
    beforeWrite: async () => {
      if (++arrivals === writers) release();
      await allAtWrite;
    },
  }, base);
}

class FaultStorage extends BaseStorage {
  #writeLock = Promise.resolve();

  constructor(private readonly faults: Faults, private readonly base: Storage) {
    super();
  }

  stat(uri: string): Promise<ObjectInfo | null> {
    return this.base.stat(uri);
  }

  readRange(
    uri: string,
    start: number,
    end: number,
    options?: ReadRangeOptions,
  ): Promise<Uint8Array> {
    return this.base.readRange(uri, start, end, options);
  }

  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo> {
    return this.base.list(prefix, options);
  }

  delete(uri: string): Promise<void> {
    return this.base.delete(uri);
  }

  override async readBytes(uri: string): Promise<Uint8Array> {
    await this.faults.beforeRead?.(uri);
    return await this.base.readBytes(uri);
  }

  async read(uri: string): Promise<ReadableStream<Uint8Array>> {
    await this.faults.beforeRead?.(uri);
    const stream = await this.base.read(uri);
    const fail = this.faults.failReadAfterBytes;
    if (fail?.match(uri)) {
      return limitStream(
        stream,
        fail.bytes,
        (c) => c.error(new StorageError(`injected fault: connection reset reading ${uri}`, uri)),
      );
    }
    const stall = this.faults.stallReadAfterBytes;
    if (stall?.match(uri)) {
      return limitStream(stream, stall.bytes, () => new Promise(() => {}));
    }
    return stream;
  }

  async write(
    uri: string,
    body: Body,
    options: WriteOptions = {},
  ): Promise<{ etag: string | null }> {
    await this.faults.beforeWrite?.(uri);
    if (!this.faults.conditionalWrites || options.ifNoneMatch !== "*") {
      return this.base.write(uri, body, options);
    }
    // Serialize conditional writes so check-then-write is atomic, as S3 makes it.
    const previous = this.#writeLock;
    let release!: () => void;
    this.#writeLock = new Promise((r) => (release = r));
    await previous;
    try {
      if (await this.base.stat(uri)) {
        if (body instanceof ReadableStream) await body.cancel();
        throw new PreconditionFailedError(uri);
      }
      return await this.base.write(uri, body, { ...options, ifNoneMatch: undefined });
    } finally {
      release();
    }
  }
}
