/**
 * One storage interface, {@link Storage}, over S3 (`s3://bucket/key`), local files
 * (`file:///abs/path` or a bare path) and memory, passed explicitly to whatever reads or writes.
 *
 * Training reads records and writes checkpoints through it, the scoring function reads shards and
 * writes manifests, downstream trainers read both: the same URIs work everywhere. There is no
 * process-global client: a program's entry point builds one storage from its settings (for a CLI,
 * {@link storageFromEnv} over its environment) and hands it down, so two stores (two S3 endpoints,
 * or a test's in-memory store next to a real one) can live in one process.
 *
 * Implementations: {@link S3Storage} (`s3://` only), {@link FileStorage} (`file://` and bare
 * paths), {@link MemoryStorage} (any URI, in memory) and {@link UriStorage}, which routes each URI
 * to S3 or files by its scheme and is what most callers get from {@link createStorage}.
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * await storage.write("s3://bucket/run/progress.json", JSON.stringify({ step: 1 }));
 * const text = await storage.readText("s3://bucket/run/progress.json");
 * for await (const obj of storage.list("file:///data/shards/")) console.log(obj.uri, obj.size);
 * ```
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import { fileURLToPath, pathToFileURL } from "node:url";
import { sweepStaleTempFiles, tempFileName } from "./tempfiles.ts";

/** A parsed storage location. */
export type Location =
  | { scheme: "s3"; bucket: string; key: string }
  | { scheme: "file"; path: string };

/** Metadata of one stored object. */
export interface ObjectInfo {
  uri: string;
  size: number;
  /** S3 ETag (quotes stripped); for files a weak tag from size and modification time. */
  etag: string | null;
}

/** Options for {@link Storage.write}. */
export interface WriteOptions {
  /** `"*"`: create only; fails with {@link PreconditionFailedError} if the object exists. */
  ifNoneMatch?: "*";
  contentType?: string;
  /**
   * Exact byte length of a stream body. With `ifNoneMatch`, a stream of known length is sent to S3
   * as one streaming PUT (bounded memory); without it, the stream is buffered first.
   */
  contentLength?: number;
}

/** Base class of storage failures; `uri` says which object. */
export class StorageError extends Error {
  constructor(message: string, readonly uri: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StorageError";
  }
}

/** The object (or bucket) does not exist. */
export class NotFoundError extends StorageError {
  constructor(uri: string, options?: ErrorOptions) {
    super(`not found: ${uri}`, uri, options);
    this.name = "NotFoundError";
  }
}

/** A conditional write was refused (the object already exists, for `ifNoneMatch: "*"`). */
export class PreconditionFailedError extends StorageError {
  constructor(uri: string, options?: ErrorOptions) {
    super(`precondition failed (object exists): ${uri}`, uri, options);
    this.name = "PreconditionFailedError";
  }
}

/** The object changed while it was being read: its ETag is no longer the one the read started with. */
export class ObjectChangedError extends StorageError {
  constructor(
    uri: string,
    readonly expected: string,
    readonly actual: string | null,
    options?: ErrorOptions,
  ) {
    super(
      `${uri} changed while being read (ETag ${expected} → ${
        actual ?? "a newer version"
      }): the bytes read so far belong to another version; read it again`,
      uri,
      options,
    );
    this.name = "ObjectChangedError";
  }
}

/** The URI is malformed or of an unsupported scheme. */
export class InvalidUriError extends StorageError {
  constructor(uri: string, why: string) {
    super(`invalid storage URI ${JSON.stringify(uri)}: ${why}`, uri);
    this.name = "InvalidUriError";
  }
}

/** S3's own limit on a key, in UTF-8 bytes. */
export const MAX_S3_KEY_BYTES = 1024;
/** Linux's limits: a path (PATH_MAX) and one name in it (NAME_MAX), in bytes. */
export const MAX_PATH_BYTES = 4095;
export const MAX_NAME_BYTES = 255;

/** Percent-decodes until nothing changes (a proxy may decode once more than the client encoded). */
function decodeFully(s: string): string {
  for (let i = 0; i < 4; i++) {
    let next: string;
    try {
      next = decodeURIComponent(s);
    } catch {
      // A stray `%` that starts no escape: decode the escapes that are well formed.
      next = s.replace(/%[0-9a-f]{2}/gi, (m) => {
        try {
          return decodeURIComponent(m);
        } catch {
          return m;
        }
      });
    }
    if (next === s) return s;
    s = next;
  }
  return s;
}

/**
 * Why an S3 key is refused, or null. S3 keys are flat names, but a server or proxy that treats
 * them as paths resolves `..` and `.` (s3rver does, and so may whatever sits in front of a store):
 * `s3://a/../b/k` would then read bucket `b` while every prefix test sees bucket `a`. A key is
 * refused if any of its forms a resolver might see (as written, percent-decoded, NFKC-folded,
 * `\` read as `/`) has a `.` or `..` segment or an empty segment other than a trailing one.
 */
function unsafeS3Key(key: string): string | null {
  if (new TextEncoder().encode(key).length > MAX_S3_KEY_BYTES) {
    return `keys are at most ${MAX_S3_KEY_BYTES} bytes`;
  }
  if (key === "") return null;
  const decoded = decodeFully(key);
  for (const form of [key, decoded, decoded.normalize("NFKC")]) {
    // deno-lint-ignore no-control-regex -- control characters are exactly what is refused
    if (/[\x00-\x1f\x7f]/.test(form)) return "keys may not contain NUL or control characters";
    const segments = form.split(/[\/\\]/);
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i];
      if (s === "." || s === "..") {
        return "keys may not contain `.` or `..` segments (a server that resolves them would " +
          "reach another prefix or bucket)";
      }
      if (s === "" && i < segments.length - 1) {
        return "keys may not contain empty segments (`//`, or a leading `/`)";
      }
    }
  }
  return null;
}

/** Why a local path is refused, or null: NUL bytes and over-long names fail in the OS, late. */
function unsafePath(p: string): string | null {
  if (p.includes("\0")) return "paths may not contain NUL bytes";
  const enc = new TextEncoder();
  if (enc.encode(p).length > MAX_PATH_BYTES) return `paths are at most ${MAX_PATH_BYTES} bytes`;
  for (const name of p.split("/")) {
    if (enc.encode(name).length > MAX_NAME_BYTES) {
      return `a name in a path is at most ${MAX_NAME_BYTES} bytes`;
    }
  }
  return null;
}

function fileLocation(uri: string, p: string): Location {
  const why = unsafePath(p);
  if (why) throw new InvalidUriError(uri, why);
  return { scheme: "file", path: p };
}

/**
 * Parses `s3://bucket/key`, `file:///abs/path` or a bare path (resolved against the cwd). Refuses
 * (with {@link InvalidUriError}) S3 keys with dot or empty segments, in any encoding, and NUL
 * bytes or over-long names anywhere: all are a caller's mistake, best named before any I/O.
 */
export function parseUri(uri: string): Location {
  if (uri.startsWith("s3://")) {
    const rest = uri.slice(5);
    const slash = rest.indexOf("/");
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw new InvalidUriError(
        uri,
        "bucket names are 3-63 lowercase letters, digits, '.' or '-'",
      );
    }
    const key = slash < 0 ? "" : rest.slice(slash + 1);
    const why = unsafeS3Key(key);
    if (why) throw new InvalidUriError(uri, why);
    return { scheme: "s3", bucket, key };
  }
  if (uri.startsWith("file://")) {
    let p: string;
    try {
      p = fileURLToPath(uri);
    } catch (e) {
      throw new InvalidUriError(uri, (e as Error).message);
    }
    return fileLocation(uri, p);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
    throw new InvalidUriError(uri, "only s3:// and file:// are supported");
  }
  if (uri === "") throw new InvalidUriError(uri, "empty");
  // Keep a trailing slash: it marks a prefix ("dir/") rather than a name prefix ("dir").
  const abs = path.resolve(uri);
  return fileLocation(uri, uri.endsWith("/") ? abs + "/" : abs);
}

/** The canonical URI of a location (`file:///abs` for local paths). */
export function formatUri(loc: Location): string {
  if (loc.scheme === "s3") return `s3://${loc.bucket}/${loc.key}`;
  const url = pathToFileURL(loc.path).href;
  return loc.path.endsWith("/") && !url.endsWith("/") ? url + "/" : url;
}

/** A body for {@link Storage.write}: bytes, UTF-8 text or a byte stream. */
export type Body = Uint8Array | string | ReadableStream<Uint8Array>;

/** Options for {@link Storage.readRange}. */
export interface ReadRangeOptions {
  /** Pin the read to this version: a replaced object throws {@link ObjectChangedError}. */
  etag?: string | null;
}

/** Options for {@link Storage.list}. */
export interface ListOptions {
  /** Keys per S3 listing request (the listing pages through all of them regardless). */
  pageSize?: number;
}

/**
 * Operations on objects named by URI. Every consumer takes one explicitly (a parameter or a
 * constructor option); the implementations agree on semantics and errors (the contract test in
 * test/lib/storage.test.ts runs the same cases against each).
 */
export interface Storage {
  /**
   * Size and ETag of an object, or `null` if it does not exist.
   *
   * @example
   * ```ts
   * const info = await storage.stat("s3://bucket/shards/part-0.jsonl.gz");
   * if (info) console.log(info.size, info.etag);
   * ```
   */
  stat(uri: string): Promise<ObjectInfo | null>;
  /** Opens an object as a byte stream. Throws {@link NotFoundError} if it is missing. */
  read(uri: string): Promise<ReadableStream<Uint8Array>>;
  /**
   * Reads bytes `[start, end)` of an object: what random-access formats need (Parquet keeps its
   * index at the end). A range that runs past the end is cut at the end. Throws
   * {@link NotFoundError} if the object is missing. With `etag`, the read is pinned to that version:
   * a replaced object throws {@link ObjectChangedError} instead of mixing bytes of two versions.
   *
   * @example
   * ```ts
   * const tail = await storage.readRange(uri, size - 8, size, { etag: info.etag });
   * ```
   */
  readRange(
    uri: string,
    start: number,
    end: number,
    options?: ReadRangeOptions,
  ): Promise<Uint8Array>;
  /** Reads a whole object into memory. Throws {@link NotFoundError} if it is missing. */
  readBytes(uri: string): Promise<Uint8Array>;
  /** Reads a whole object as UTF-8 text. Throws {@link NotFoundError} if it is missing. */
  readText(uri: string): Promise<string>;
  /**
   * Reads and parses a JSON object; `null` if it does not exist.
   *
   * @example
   * ```ts
   * const progress = await storage.readJsonIfExists<{ step: number }>("s3://b/run/progress.json");
   * ```
   */
  readJsonIfExists<T = unknown>(uri: string): Promise<T | null>;
  /**
   * Writes an object whole: readers never see a half-written one. With `ifNoneMatch: "*"` it only
   * creates, and throws {@link PreconditionFailedError} if the object exists.
   *
   * @example
   * ```ts
   * await storage.write("s3://bucket/m/manifest.jsonl", lines, { ifNoneMatch: "*" });
   * ```
   */
  write(uri: string, body: Body, options?: WriteOptions): Promise<{ etag: string | null }>;
  /**
   * Every object whose URI starts with `prefix`, in key order. `s3://b/shards/` lists the "folder";
   * `s3://b/shards/part-` lists names starting with `part-`.
   *
   * @example
   * ```ts
   * for await (const obj of storage.list("s3://bucket/shards/")) console.log(obj.uri);
   * ```
   */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  /** Deletes an object (no error if it is already gone). */
  delete(uri: string): Promise<void>;
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function bodyBytes(body: Uint8Array | string): Uint8Array {
  return typeof body === "string" ? new TextEncoder().encode(body) : body;
}

function checkRange(uri: string, start: number, end: number): void {
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0)) {
    throw new StorageError(`invalid byte range [${start}, ${end}) for ${uri}`, uri);
  }
}

/**
 * The derived reads (`readBytes`, `readText`, `readJsonIfExists`) on top of `read`, so an
 * implementation (or a wrapper in a test) writes only the primitive operations.
 */
export abstract class BaseStorage implements Storage {
  abstract stat(uri: string): Promise<ObjectInfo | null>;
  abstract read(uri: string): Promise<ReadableStream<Uint8Array>>;
  abstract readRange(
    uri: string,
    start: number,
    end: number,
    options?: ReadRangeOptions,
  ): Promise<Uint8Array>;
  abstract write(uri: string, body: Body, options?: WriteOptions): Promise<{ etag: string | null }>;
  abstract list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  abstract delete(uri: string): Promise<void>;

  async readBytes(uri: string): Promise<Uint8Array> {
    return await collect(await this.read(uri));
  }

  async readText(uri: string): Promise<string> {
    return new TextDecoder().decode(await this.readBytes(uri));
  }

  async readJsonIfExists<T = unknown>(uri: string): Promise<T | null> {
    try {
      return JSON.parse(await this.readText(uri)) as T;
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
  }
}

/**
 * The stores that hold the objects themselves (S3, local files, memory): a range read is checked
 * here, and an empty range answered without touching the store, before their own
 * {@link ObjectStore.readRangeOf}. (Stores that route or wrap another leave that to the one they
 * call.)
 */
export abstract class ObjectStore extends BaseStorage {
  readRange(
    uri: string,
    start: number,
    end: number,
    options: ReadRangeOptions = {},
  ): Promise<Uint8Array> {
    try {
      checkRange(uri, start, end);
    } catch (e) {
      return Promise.reject(e);
    }
    if (end <= start) return Promise.resolve(new Uint8Array(0));
    return this.readRangeOf(uri, start, end, options.etag ?? null);
  }

  /**
   * Bytes `[start, end)` of `uri`, cut where the object ends; the range is valid and not empty.
   * A non-null `etag` pins the version: a replaced object throws {@link ObjectChangedError}.
   */
  protected abstract readRangeOf(
    uri: string,
    start: number,
    end: number,
    etag: string | null,
  ): Promise<Uint8Array>;
}

// ---------------------------------------------------------------------------------------------
// S3

/** S3 connection settings. */
export interface S3Settings {
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle?: boolean;
}

/**
 * S3 settings from an environment: `S3_ENDPOINT` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`),
 * `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`. Entry points
 * call it once with their own environment; library code never reads the environment.
 *
 * @example
 * ```ts
 * const s3 = new S3Storage({ settings: s3SettingsFromEnv(Deno.env.toObject()) });
 * ```
 */
export function s3SettingsFromEnv(env: Record<string, string | undefined>): S3Settings {
  const get = (name: string) => env[name] || undefined;
  return {
    endpoint: get("S3_ENDPOINT") ?? get("AWS_ENDPOINT_URL_S3") ?? get("AWS_ENDPOINT_URL"),
    region: get("AWS_REGION") ?? get("AWS_DEFAULT_REGION"),
    accessKeyId: get("AWS_ACCESS_KEY_ID"),
    secretAccessKey: get("AWS_SECRET_ACCESS_KEY"),
  };
}

/**
 * The environment a child process needs to reach the S3 store of `settings` (the inverse of
 * {@link s3SettingsFromEnv}), for the `env` option of `Deno.Command`.
 *
 * @example
 * ```ts
 * new Deno.Command("deno", { args, env: s3SettingsToEnv(s3.settings) });
 * ```
 */
export function s3SettingsToEnv(settings: S3Settings): Record<string, string> {
  const env: Record<string, string> = {};
  if (settings.endpoint) env.S3_ENDPOINT = settings.endpoint;
  if (settings.region) env.AWS_REGION = settings.region;
  if (settings.accessKeyId) env.AWS_ACCESS_KEY_ID = settings.accessKeyId;
  if (settings.secretAccessKey) env.AWS_SECRET_ACCESS_KEY = settings.secretAccessKey;
  return env;
}

/** An S3 client for `settings`: path-style and checksums-when-required for non-AWS endpoints. */
export function createS3Client(settings: S3Settings = {}): S3Client {
  const config: S3ClientConfig = {
    region: settings.region ?? "us-east-1",
    // Non-AWS servers: path-style URLs, and no default CRC checksums they may not understand.
    ...(settings.endpoint
      ? {
        endpoint: settings.endpoint,
        forcePathStyle: settings.forcePathStyle ?? true,
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
      }
      : {}),
    ...(settings.accessKeyId && settings.secretAccessKey
      ? {
        credentials: {
          accessKeyId: settings.accessKeyId,
          secretAccessKey: settings.secretAccessKey,
        },
      }
      : {}),
  };
  return new S3Client(config);
}

function isS3Error(e: unknown, ...names: string[]): boolean {
  const err = e as {
    name?: string;
    Code?: string;
    $metadata?: { httpStatusCode?: number };
  };
  return names.includes(err?.name ?? "") || names.includes(err?.Code ?? "") ||
    names.includes(String(err?.$metadata?.httpStatusCode ?? ""));
}

function mapS3Error(e: unknown, uri: string): unknown {
  if (isS3Error(e, "NoSuchKey", "NotFound", "NoSuchBucket", "404")) {
    return new NotFoundError(uri, { cause: e });
  }
  if (isS3Error(e, "PreconditionFailed", "412", "ConditionalRequestConflict", "409")) {
    return new PreconditionFailedError(uri, { cause: e });
  }
  if (e instanceof StorageError) return e;
  return new StorageError(
    `S3 request failed for ${uri}: ${(e as Error)?.message ?? e}`,
    uri,
    { cause: e },
  );
}

function stripQuotes(etag: string | undefined): string | null {
  return etag ? etag.replace(/^"|"$/g, "") : null;
}

/** Options for {@link S3Storage}: a client to use, or settings to build one from. */
export interface S3StorageOptions {
  settings?: S3Settings;
  /** An existing client (its owner destroys it); wins over `settings`. */
  client?: S3Client;
}

/**
 * {@link Storage} over S3 and S3-compatible servers; accepts `s3://` URIs only. The client is made
 * on first use, so building one costs nothing for a program that never touches S3.
 *
 * @example
 * ```ts
 * const s3 = new S3Storage({ settings: { endpoint: "http://127.0.0.1:9000" } });
 * await s3.write("s3://bucket/a.txt", "hello");
 * s3.close();
 * ```
 */
export class S3Storage extends ObjectStore {
  #client: S3Client | null;
  readonly #settings: S3Settings;
  readonly #ownsClient: boolean;

  constructor(options: S3StorageOptions = {}) {
    super();
    this.#client = options.client ?? null;
    this.#ownsClient = !options.client;
    this.#settings = options.settings ?? {};
  }

  /** The S3 client this storage sends requests with. */
  get client(): S3Client {
    return this.#client ??= createS3Client(this.#settings);
  }

  /** Releases the client's connections (a client passed in is left to its owner). */
  close(): void {
    if (this.#ownsClient) {
      this.#client?.destroy();
      this.#client = null;
    }
  }

  #loc(uri: string): { bucket: string; key: string } {
    const loc = parseUri(uri);
    if (loc.scheme !== "s3") throw new InvalidUriError(uri, "S3 storage takes s3:// URIs only");
    return loc;
  }

  async stat(uri: string): Promise<ObjectInfo | null> {
    const loc = this.#loc(uri);
    try {
      const out = await this.client.send(
        new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }),
      );
      return { uri, size: out.ContentLength ?? 0, etag: stripQuotes(out.ETag) };
    } catch (e) {
      const mapped = mapS3Error(e, uri);
      if (mapped instanceof NotFoundError) return null;
      throw mapped;
    }
  }

  async read(uri: string): Promise<ReadableStream<Uint8Array>> {
    const loc = this.#loc(uri);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }),
      );
      if (!out.Body) throw new StorageError(`empty response body for ${uri}`, uri);
      return (out.Body as { transformToWebStream(): ReadableStream<Uint8Array> })
        .transformToWebStream();
    } catch (e) {
      throw mapS3Error(e, uri);
    }
  }

  protected async readRangeOf(uri: string, start: number, end: number, etag: string | null) {
    const loc = this.#loc(uri);
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: loc.bucket,
          Key: loc.key,
          Range: `bytes=${start}-${end - 1}`,
          IfMatch: etag === null ? undefined : `"${etag}"`,
        }),
      );
      // Servers that ignore If-Match still say which version they answered with.
      const answered = stripQuotes(out.ETag);
      if (etag !== null && answered !== null && answered !== etag) {
        await (out.Body as { transformToByteArray?(): Promise<Uint8Array> } | undefined)
          ?.transformToByteArray?.().catch(() => {});
        throw new ObjectChangedError(uri, etag, answered);
      }
      if (!out.Body) throw new StorageError(`empty response body for ${uri}`, uri);
      const bytes = await (out.Body as { transformToByteArray(): Promise<Uint8Array> })
        .transformToByteArray();
      // A server that ignores Range sends the whole object: keep only the range asked for.
      return out.ContentRange || bytes.length <= end - start
        ? bytes
        : bytes.subarray(start, Math.min(end, bytes.length));
    } catch (e) {
      if (etag !== null && isS3Error(e, "PreconditionFailed", "412")) {
        throw new ObjectChangedError(uri, etag, null, { cause: e });
      }
      throw mapS3Error(e, uri);
    }
  }

  async write(
    uri: string,
    body: Body,
    options: WriteOptions = {},
  ): Promise<{ etag: string | null }> {
    const loc = this.#loc(uri);
    const client = this.client;
    const common = {
      Bucket: loc.bucket,
      Key: loc.key,
      ContentType: options.contentType,
      IfNoneMatch: options.ifNoneMatch,
    };
    try {
      if (body instanceof ReadableStream) {
        if (options.ifNoneMatch && options.contentLength !== undefined) {
          // A single PUT can stream when its length is known (the SDK takes a Node stream here).
          const out = await client.send(
            new PutObjectCommand({
              ...common,
              Body: Readable.fromWeb(body as NodeWebReadableStream<Uint8Array>),
              ContentLength: options.contentLength,
            }),
          );
          return { etag: stripQuotes(out.ETag) };
        } else if (options.ifNoneMatch) {
          // Conditional multipart completion is not universally supported: buffer and PUT.
          body = await collect(body);
        } else {
          // Streams go up in parts: bounded memory whatever the size.
          const upload = new Upload({ client, params: { ...common, Body: body } });
          const out = await upload.done();
          return { etag: stripQuotes(out.ETag) };
        }
      }
      const out = await client.send(new PutObjectCommand({ ...common, Body: body }));
      return { etag: stripQuotes(out.ETag) };
    } catch (e) {
      throw mapS3Error(e, uri);
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncGenerator<ObjectInfo> {
    const loc = this.#loc(prefix);
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({
            Bucket: loc.bucket,
            Prefix: loc.key,
            ContinuationToken: token,
            MaxKeys: options.pageSize,
          }),
        );
      } catch (e) {
        throw mapS3Error(e, prefix);
      }
      for (const obj of out.Contents ?? []) {
        if (!obj.Key) continue;
        yield {
          uri: `s3://${loc.bucket}/${obj.Key}`,
          size: obj.Size ?? 0,
          etag: stripQuotes(obj.ETag),
        };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(uri: string): Promise<void> {
    const loc = this.#loc(uri);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    } catch (e) {
      const mapped = mapS3Error(e, uri);
      if (!(mapped instanceof NotFoundError)) throw mapped;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Local files

function fileEtag(stat: Deno.FileInfo): string {
  return `${stat.size.toString(16)}-${Math.floor(stat.mtime?.getTime() ?? 0).toString(16)}`;
}

/** A failed local read as a storage error: missing files (or folders) are NotFoundError. */
function localReadError(uri: string, e: unknown): StorageError {
  if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.IsADirectory) {
    return new NotFoundError(uri, { cause: e });
  }
  return localError("read", uri, e);
}

async function* walk(dir: string): AsyncGenerator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
    throw e;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory) yield* walk(full);
    else if (entry.isFile && !entry.name.endsWith(".tmp")) yield full;
  }
}

/** Folders whose stale temporary files this process has swept (once each is enough). */
const sweptDirs = new Set<string>();

/** A local failure as a storage error: a name the OS finds too long is the caller's mistake. */
function localError(verb: string, uri: string, e: unknown): StorageError {
  if ((e as { code?: string }).code === "ENAMETOOLONG") {
    return new InvalidUriError(uri, "a name in the path is longer than the file system allows");
  }
  return new StorageError(`cannot ${verb} ${uri}: ${(e as Error).message}`, uri, { cause: e });
}

/**
 * {@link Storage} over the local file system; accepts `file://` URIs and bare paths (resolved
 * against the cwd). Writes go to a temporary file that is then renamed (or hard-linked, for
 * create-only), so a reader never sees a half-written file and a crash leaves no partial object.
 * ETags are weak tags from size and modification time.
 *
 * @example
 * ```ts
 * const files = new FileStorage();
 * await files.write("/tmp/out/a.txt", "hello");
 * console.log(await files.readText("file:///tmp/out/a.txt"));
 * ```
 */
export class FileStorage extends ObjectStore {
  #path(uri: string): string {
    const loc = parseUri(uri);
    if (loc.scheme !== "file") {
      throw new InvalidUriError(uri, "file storage takes file:// URIs and paths only");
    }
    return loc.path;
  }

  async stat(uri: string): Promise<ObjectInfo | null> {
    const p = this.#path(uri);
    try {
      const s = await Deno.stat(p);
      if (!s.isFile) return null;
      return { uri: formatUri({ scheme: "file", path: p }), size: s.size, etag: fileEtag(s) };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw localError("stat", uri, e);
    }
  }

  async read(uri: string): Promise<ReadableStream<Uint8Array>> {
    const p = this.#path(uri);
    try {
      const file = await Deno.open(p, { read: true });
      return file.readable;
    } catch (e) {
      throw localReadError(uri, e);
    }
  }

  override async readBytes(uri: string): Promise<Uint8Array> {
    const p = this.#path(uri);
    try {
      return await Deno.readFile(p);
    } catch (e) {
      throw localReadError(uri, e);
    }
  }

  protected async readRangeOf(uri: string, start: number, end: number, etag: string | null) {
    const p = this.#path(uri);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(p, { read: true });
    } catch (e) {
      throw localReadError(uri, e);
    }
    try {
      if (etag !== null) {
        const actual = fileEtag(await file.stat());
        if (actual !== etag) throw new ObjectChangedError(uri, etag, actual);
      }
      await file.seek(start, Deno.SeekMode.Start);
      const out = new Uint8Array(end - start);
      let filled = 0;
      while (filled < out.length) {
        const n = await file.read(out.subarray(filled));
        if (n === null) break; // end of file: the range is cut there
        filled += n;
      }
      return filled === out.length ? out : out.subarray(0, filled);
    } catch (e) {
      if (e instanceof StorageError) throw e;
      throw new StorageError(`cannot read ${uri}: ${(e as Error).message}`, uri, { cause: e });
    } finally {
      file.close();
    }
  }

  async write(
    uri: string,
    body: Body,
    options: WriteOptions = {},
  ): Promise<{ etag: string | null }> {
    const p = this.#path(uri);
    const dir = path.dirname(p);
    // The owner's pid and host in the name: a crashed writer's leftovers can be told from live
    // ones and swept (lib/tempfiles.ts), here the first time this process writes to the folder.
    const tmp = path.join(dir, tempFileName(`.${path.basename(p)}`));
    let created = false;
    try {
      await Deno.mkdir(dir, { recursive: true });
      if (!sweptDirs.has(dir)) {
        sweptDirs.add(dir);
        await sweepStaleTempFiles(dir, ".").catch(() => {});
      }
      // createNew (O_EXCL): never follows a link planted at the temporary name. The final name
      // is then taken by link (create-only) or rename, neither of which follows a link there.
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
      created = true;
      if (typeof body === "string" || body instanceof Uint8Array) {
        const bytes = bodyBytes(body);
        try {
          for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
        } finally {
          file.close();
        }
      } else {
        await body.pipeTo(file.writable);
      }
      if (options.ifNoneMatch === "*") {
        try {
          await Deno.link(tmp, p); // atomic create-only: fails if the name exists
        } catch (e) {
          if (e instanceof Deno.errors.AlreadyExists) throw new PreconditionFailedError(uri);
          throw e;
        }
        await Deno.remove(tmp);
      } else {
        await Deno.rename(tmp, p);
      }
    } catch (e) {
      if (created) await Deno.remove(tmp).catch(() => {});
      if (e instanceof StorageError) throw e;
      throw localError("write", uri, e);
    }
    return { etag: fileEtag(await Deno.stat(p)) };
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    const p = this.#path(prefix);
    const isDir = p.endsWith("/");
    const dir = isDir ? p : path.dirname(p);
    for await (const file of walk(dir)) {
      if (!isDir && !file.startsWith(p)) continue;
      const s = await Deno.stat(file);
      yield { uri: formatUri({ scheme: "file", path: file }), size: s.size, etag: fileEtag(s) };
    }
  }

  async delete(uri: string): Promise<void> {
    const p = this.#path(uri);
    try {
      await Deno.remove(p);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw localError("delete", uri, e);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Memory

/**
 * {@link Storage} in memory, for tests and for users who want a store without a disk or a server.
 * It accepts any URI: `s3://` and `file://` URIs and bare paths are held under their canonical
 * form (so `/tmp/a` and `file:///tmp/a` name one object), other schemes (`mem://…`) as written.
 * ETags are MD5 hex digests of the content, as S3 gives for single-part uploads.
 *
 * @example
 * ```ts
 * const storage = new MemoryStorage();
 * await storage.write("s3://bucket/run/progress.json", JSON.stringify({ step: 3 }));
 * await storage.readJsonIfExists("s3://bucket/run/progress.json"); // { step: 3 }
 * ```
 */
export class MemoryStorage extends ObjectStore {
  readonly #objects = new Map<string, { bytes: Uint8Array; etag: string }>();

  #key(uri: string): string {
    if (uri === "") throw new InvalidUriError(uri, "empty");
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri) && !/^(s3|file):\/\//.test(uri)) return uri;
    return formatUri(parseUri(uri));
  }

  #get(uri: string): { bytes: Uint8Array; etag: string } {
    const obj = this.#objects.get(this.#key(uri));
    if (!obj) throw new NotFoundError(uri);
    return obj;
  }

  stat(uri: string): Promise<ObjectInfo | null> {
    const key = this.#key(uri);
    const obj = this.#objects.get(key);
    return Promise.resolve(obj ? { uri: key, size: obj.bytes.length, etag: obj.etag } : null);
  }

  async read(uri: string): Promise<ReadableStream<Uint8Array>> {
    const bytes = await this.readBytes(uri);
    return new ReadableStream({
      start(controller) {
        controller.enqueue(bytes);
        controller.close();
      },
    });
  }

  override readBytes(uri: string): Promise<Uint8Array> {
    try {
      // A copy: callers may scribble on what they get without changing the stored object.
      return Promise.resolve(this.#get(uri).bytes.slice());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  protected readRangeOf(uri: string, start: number, end: number, etag: string | null) {
    try {
      const obj = this.#get(uri);
      if (etag !== null && obj.etag !== etag) throw new ObjectChangedError(uri, etag, obj.etag);
      return Promise.resolve(obj.bytes.slice(start, Math.min(end, obj.bytes.length)));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async write(
    uri: string,
    body: Body,
    options: WriteOptions = {},
  ): Promise<{ etag: string | null }> {
    const key = this.#key(uri);
    const bytes = body instanceof ReadableStream ? await collect(body) : bodyBytes(body).slice();
    // Checked after the body is in, as S3 checks at completion: two racing creates, one wins.
    if (options.ifNoneMatch === "*" && this.#objects.has(key)) {
      throw new PreconditionFailedError(uri);
    }
    const etag = createHash("md5").update(bytes).digest("hex");
    this.#objects.set(key, { bytes, etag });
    return { etag };
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    const start = this.#key(prefix);
    const keys = [...this.#objects.keys()].filter((k) => k.startsWith(start)).sort();
    for (const key of keys) {
      const obj = this.#objects.get(key);
      if (obj) yield { uri: key, size: obj.bytes.length, etag: obj.etag };
    }
  }

  delete(uri: string): Promise<void> {
    this.#objects.delete(this.#key(uri));
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------------------------
// Routing by scheme

/** Options for {@link UriStorage}: the stores each scheme goes to. */
export interface UriStorageOptions {
  /** Where `s3://` URIs go (default: an {@link S3Storage} with the SDK's default settings). */
  s3?: Storage;
  /** Where `file://` URIs and bare paths go (default: a {@link FileStorage}). */
  file?: Storage;
}

/**
 * {@link Storage} that sends `s3://` URIs to one store and `file://` URIs and bare paths to another:
 * what most callers want, since a run may read shards from S3 and write reports to a local folder.
 *
 * @example
 * ```ts
 * const storage = new UriStorage({ s3: new S3Storage({ settings }) });
 * await storage.write("/tmp/report.json", "{}");
 * ```
 */
export class UriStorage extends BaseStorage {
  readonly s3: Storage;
  readonly file: Storage;

  constructor(options: UriStorageOptions = {}) {
    super();
    this.s3 = options.s3 ?? new S3Storage();
    this.file = options.file ?? new FileStorage();
  }

  /** The store that holds `uri`. Throws {@link InvalidUriError} for other schemes. */
  storeFor(uri: string): Storage {
    return parseUri(uri).scheme === "s3" ? this.s3 : this.file;
  }

  stat(uri: string): Promise<ObjectInfo | null> {
    return this.#route(uri, (s) => s.stat(uri));
  }

  read(uri: string): Promise<ReadableStream<Uint8Array>> {
    return this.#route(uri, (s) => s.read(uri));
  }

  readRange(
    uri: string,
    start: number,
    end: number,
    options?: ReadRangeOptions,
  ): Promise<Uint8Array> {
    return this.#route(uri, (s) => s.readRange(uri, start, end, options));
  }

  override readBytes(uri: string): Promise<Uint8Array> {
    return this.#route(uri, (s) => s.readBytes(uri));
  }

  write(uri: string, body: Body, options?: WriteOptions): Promise<{ etag: string | null }> {
    return this.#route(uri, (s) => s.write(uri, body, options));
  }

  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo> {
    return this.storeFor(prefix).list(prefix, options);
  }

  delete(uri: string): Promise<void> {
    return this.#route(uri, (s) => s.delete(uri));
  }

  /** Closes the S3 client if it is one this storage made. */
  close(): void {
    (this.s3 as { close?(): void }).close?.();
  }

  #route<T>(uri: string, op: (store: Storage) => Promise<T>): Promise<T> {
    try {
      return op(this.storeFor(uri));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/**
 * The usual storage: `s3://` to S3 with `options.s3` settings, files for everything else.
 *
 * @example
 * ```ts
 * const storage = createStorage({ s3: { endpoint: "http://127.0.0.1:9000", region: "us-east-1" } });
 * ```
 */
export function createStorage(options: { s3?: S3Settings } = {}): UriStorage {
  return new UriStorage({ s3: new S3Storage({ settings: options.s3 }) });
}

/**
 * What a command-line entry point calls once: {@link createStorage} with S3 settings from its
 * environment (see {@link s3SettingsFromEnv}).
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * ```
 */
export function storageFromEnv(env: Record<string, string | undefined>): UriStorage {
  return createStorage({ s3: s3SettingsFromEnv(env) });
}
