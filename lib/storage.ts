/**
 * One storage API over S3 (`s3://bucket/key`) and local files (`file:///abs/path` or a bare path).
 *
 * Training reads records and writes checkpoints through it, the scoring function reads shards and
 * writes manifests, downstream trainers read both: the same URIs work everywhere.
 *
 * S3 settings come from the environment (`S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
 * `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`) or from {@link configureS3}. Non-AWS endpoints get
 * path-style addressing and checksums only when required (what s3rver, MinIO and most S3-compatible
 * servers need).
 *
 * @example
 * ```ts
 * await writeObject("s3://bucket/run/progress.json", JSON.stringify({ step: 1 }));
 * const text = await readText("s3://bucket/run/progress.json");
 * for await (const obj of list("file:///data/shards/")) console.log(obj.uri, obj.size);
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
import * as path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import { fileURLToPath, pathToFileURL } from "node:url";

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

/** Options for {@link writeObject}. */
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

/** Parses `s3://bucket/key`, `file:///abs/path` or a bare path (resolved against the cwd). */
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
    return {
      scheme: "s3",
      bucket,
      key: slash < 0 ? "" : rest.slice(slash + 1),
    };
  }
  if (uri.startsWith("file://")) {
    try {
      return { scheme: "file", path: fileURLToPath(uri) };
    } catch (e) {
      throw new InvalidUriError(uri, (e as Error).message);
    }
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
    throw new InvalidUriError(uri, "only s3:// and file:// are supported");
  }
  if (uri === "") throw new InvalidUriError(uri, "empty");
  // Keep a trailing slash: it marks a prefix ("dir/") rather than a name prefix ("dir").
  const abs = path.resolve(uri);
  return { scheme: "file", path: uri.endsWith("/") ? abs + "/" : abs };
}

/** The canonical URI of a location (`file:///abs` for local paths). */
export function formatUri(loc: Location): string {
  if (loc.scheme === "s3") return `s3://${loc.bucket}/${loc.key}`;
  const url = pathToFileURL(loc.path).href;
  return loc.path.endsWith("/") && !url.endsWith("/") ? url + "/" : url;
}

/** S3 connection settings. */
export interface S3Settings {
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle?: boolean;
}

let s3Settings: S3Settings | null = null;
let s3Client: S3Client | null = null;

/** Sets the S3 connection used by every call (otherwise read from the environment). */
export function configureS3(settings: S3Settings): void {
  s3Client?.destroy();
  s3Settings = settings;
  s3Client = null;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/** The shared S3 client (created on first use). */
export function getS3Client(): S3Client {
  if (s3Client) return s3Client;
  const s = s3Settings ?? {
    endpoint: env("S3_ENDPOINT") ?? env("AWS_ENDPOINT_URL_S3") ??
      env("AWS_ENDPOINT_URL"),
    region: env("AWS_REGION") ?? env("AWS_DEFAULT_REGION"),
    accessKeyId: env("AWS_ACCESS_KEY_ID"),
    secretAccessKey: env("AWS_SECRET_ACCESS_KEY"),
  };
  const config: S3ClientConfig = {
    region: s.region ?? "us-east-1",
    // Non-AWS servers: path-style URLs, and no default CRC checksums they may not understand.
    ...(s.endpoint
      ? {
        endpoint: s.endpoint,
        forcePathStyle: s.forcePathStyle ?? true,
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
      }
      : {}),
    ...(s.accessKeyId && s.secretAccessKey
      ? {
        credentials: {
          accessKeyId: s.accessKeyId,
          secretAccessKey: s.secretAccessKey,
        },
      }
      : {}),
  };
  s3Client = new S3Client(config);
  return s3Client;
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
  if (
    isS3Error(
      e,
      "PreconditionFailed",
      "412",
      "ConditionalRequestConflict",
      "409",
    )
  ) {
    return new PreconditionFailedError(uri, { cause: e });
  }
  if (e instanceof StorageError) return e;
  return new StorageError(
    `S3 request failed for ${uri}: ${(e as Error)?.message ?? e}`,
    uri,
    {
      cause: e,
    },
  );
}

function stripQuotes(etag: string | undefined): string | null {
  return etag ? etag.replace(/^"|"$/g, "") : null;
}

function fileEtag(stat: Deno.FileInfo): string {
  return `${stat.size.toString(16)}-${Math.floor(stat.mtime?.getTime() ?? 0).toString(16)}`;
}

/** A failed local read as a storage error: missing files (or folders) are NotFoundError. */
function localReadError(uri: string, e: unknown): StorageError {
  if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.IsADirectory) {
    return new NotFoundError(uri, { cause: e });
  }
  return new StorageError(`cannot read ${uri}: ${(e as Error).message}`, uri, { cause: e });
}

/** Opens an object as a byte stream. Throws {@link NotFoundError} if it is missing. */
export async function readObject(
  uri: string,
): Promise<ReadableStream<Uint8Array>> {
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    try {
      const file = await Deno.open(loc.path, { read: true });
      return file.readable;
    } catch (e) {
      throw localReadError(uri, e);
    }
  }
  try {
    const out = await getS3Client().send(
      new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }),
    );
    if (!out.Body) {
      throw new StorageError(`empty response body for ${uri}`, uri);
    }
    return (out.Body as { transformToWebStream(): ReadableStream<Uint8Array> })
      .transformToWebStream();
  } catch (e) {
    throw mapS3Error(e, uri);
  }
}

/**
 * Reads bytes `[start, end)` of an object: a ranged GET on S3, a seek and read on a local file.
 * What random-access formats (Parquet keeps its index at the end) need. A range that runs past the
 * end is cut at the end. Throws {@link NotFoundError} if the object is missing. With `etag`, the
 * read is pinned to that version of the object (S3 `If-Match`, and the ETag of the answer or the
 * file is checked): a replaced object throws {@link ObjectChangedError} instead of mixing bytes of
 * two versions.
 *
 * @example
 * ```ts
 * const tail = await readRange("s3://bucket/shards/part-0.parquet", size - 8, size);
 * ```
 */
export async function readRange(
  uri: string,
  start: number,
  end: number,
  options: { etag?: string | null } = {},
): Promise<Uint8Array> {
  const etag = options.etag ?? null;
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0)) {
    throw new StorageError(`invalid byte range [${start}, ${end}) for ${uri}`, uri);
  }
  if (end <= start) return new Uint8Array(0);
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(loc.path, { read: true });
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
  try {
    const out = await getS3Client().send(
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

/** Reads a whole object into memory. */
export async function readBytes(uri: string): Promise<Uint8Array> {
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    try {
      return await Deno.readFile(loc.path);
    } catch (e) {
      throw localReadError(uri, e);
    }
  }
  return new Uint8Array(
    await new Response(await readObject(uri)).arrayBuffer(),
  );
}

/** Reads a whole object as UTF-8 text. */
export async function readText(uri: string): Promise<string> {
  return new TextDecoder().decode(await readBytes(uri));
}

/** Reads and parses a JSON object; `null` if it does not exist. */
export async function readJsonIfExists<T = unknown>(
  uri: string,
): Promise<T | null> {
  try {
    return JSON.parse(await readText(uri)) as T;
  } catch (e) {
    if (e instanceof NotFoundError) return null;
    throw e;
  }
}

async function collect(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

let tempCounter = 0;

/**
 * Writes an object. Local writes go to a temporary file that is then renamed (or hard-linked, for
 * create-only), so a reader never sees a half-written file and a crash leaves no partial object.
 * Streams to S3 are uploaded in parts (bounded memory).
 */
export async function writeObject(
  uri: string,
  body: Uint8Array | string | ReadableStream<Uint8Array>,
  options: WriteOptions = {},
): Promise<{ etag: string | null }> {
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    const dir = path.dirname(loc.path);
    await Deno.mkdir(dir, { recursive: true });
    const tmp = path.join(
      dir,
      `.${path.basename(loc.path)}.${Deno.pid}.${tempCounter++}.tmp`,
    );
    try {
      if (typeof body === "string" || body instanceof Uint8Array) {
        await Deno.writeFile(
          tmp,
          typeof body === "string" ? new TextEncoder().encode(body) : body,
        );
      } else {
        const file = await Deno.open(tmp, {
          write: true,
          create: true,
          truncate: true,
        });
        await body.pipeTo(file.writable);
      }
      if (options.ifNoneMatch === "*") {
        try {
          await Deno.link(tmp, loc.path); // atomic create-only: fails if the name exists
        } catch (e) {
          if (e instanceof Deno.errors.AlreadyExists) {
            throw new PreconditionFailedError(uri);
          }
          throw e;
        }
        await Deno.remove(tmp);
      } else {
        await Deno.rename(tmp, loc.path);
      }
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      if (e instanceof StorageError) throw e;
      throw new StorageError(
        `cannot write ${uri}: ${(e as Error).message}`,
        uri,
        { cause: e },
      );
    }
    return { etag: fileEtag(await Deno.stat(loc.path)) };
  }
  const client = getS3Client();
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
        const upload = new Upload({
          client,
          params: { ...common, Body: body },
        });
        const out = await upload.done();
        return { etag: stripQuotes(out.ETag) };
      }
    }
    const out = await client.send(
      new PutObjectCommand({ ...common, Body: body }),
    );
    return { etag: stripQuotes(out.ETag) };
  } catch (e) {
    throw mapS3Error(e, uri);
  }
}

/** Size and ETag of an object, or `null` if it does not exist. */
export async function stat(uri: string): Promise<ObjectInfo | null> {
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    try {
      const s = await Deno.stat(loc.path);
      if (!s.isFile) return null;
      return { uri: formatUri(loc), size: s.size, etag: fileEtag(s) };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw new StorageError(
        `cannot stat ${uri}: ${(e as Error).message}`,
        uri,
        { cause: e },
      );
    }
  }
  try {
    const out = await getS3Client().send(
      new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }),
    );
    return { uri, size: out.ContentLength ?? 0, etag: stripQuotes(out.ETag) };
  } catch (e) {
    const mapped = mapS3Error(e, uri);
    if (mapped instanceof NotFoundError) return null;
    throw mapped;
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (
      e instanceof Deno.errors.NotFound ||
      e instanceof Deno.errors.NotADirectory
    ) return;
    throw e;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory) yield* walk(full);
    else if (entry.isFile && !entry.name.endsWith(".tmp")) yield full;
  }
}

/**
 * Every object whose URI starts with `prefix`, in key order (S3 listings are paged transparently).
 * `s3://b/shards/` lists the "folder"; `s3://b/shards/part-` lists names starting with `part-`.
 */
export async function* list(
  prefix: string,
  options: { pageSize?: number } = {},
): AsyncGenerator<ObjectInfo> {
  const loc = parseUri(prefix);
  if (loc.scheme === "file") {
    const isDir = loc.path.endsWith("/");
    const dir = isDir ? loc.path : path.dirname(loc.path);
    for await (const file of walk(dir)) {
      if (!isDir && !file.startsWith(loc.path)) continue;
      const s = await Deno.stat(file);
      yield {
        uri: formatUri({ scheme: "file", path: file }),
        size: s.size,
        etag: fileEtag(s),
      };
    }
    return;
  }
  let token: string | undefined;
  do {
    let out;
    try {
      out = await getS3Client().send(
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

/** Deletes an object (no error if it is already gone). */
export async function deleteObject(uri: string): Promise<void> {
  const loc = parseUri(uri);
  if (loc.scheme === "file") {
    await Deno.remove(loc.path).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    return;
  }
  try {
    await getS3Client().send(
      new DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }),
    );
  } catch (e) {
    const mapped = mapS3Error(e, uri);
    if (!(mapped instanceof NotFoundError)) throw mapped;
  }
}
