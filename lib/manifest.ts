/**
 * Filter manifest v1: the scoring function's output and the downstream trainer's input.
 *
 * A manifest is JSON Lines. Line 1 is a {@link ManifestHeader} (kind and version, the model's URI
 * and sha256, the input shard's URI, ETag and sha256, the policy and the threshold it resolved to,
 * counts, a score summary, and how records were windowed: `scoring`). Then one
 * {@link ManifestEntry} `{"id","line","score","keep","spans"}` per scored record, in input order.
 * `line` (the record's 1-based line in the shard, an addition to the design's `{id, score, keep}`)
 * lets a reader join manifest and shard exactly even when invalid lines were skipped. `spans` are
 * the record's window scores `[start, end, score]` (byte offsets into its UTF-8 text, end
 * exclusive; lib/windows.ts), `score` their aggregate, and `truncated: true` says the record was
 * longer than the header's `scoring.cap` bytes and only its first `cap` bytes were rated.
 *
 * Writing: {@link ManifestSpool} spools entries to a temporary file (memory stays bounded whatever
 * the shard size) and streams header + entries once the whole shard is scored. Reading:
 * {@link readManifestHeader}, {@link readManifestEntries}, {@link keptIds}, {@link keptRecords}
 * (a streaming join with the shard) and {@link verifyManifest}.
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * const header = await readManifestHeader(storage, "s3://b/manifests/part-0000.manifest.jsonl");
 * console.log(header.counts.kept, "of", header.counts.records);
 * for await (const r of keptRecords(storage, "s3://b/manifests/part-0000.manifest.jsonl")) {
 *   train(r.text);
 * }
 * ```
 */
import { isUtf8 } from "node:buffer";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { AGGREGATIONS } from "./windows.ts";
import { concatBytes } from "./bytes.ts";
import { readRecords, type RecordEntry } from "./records.ts";
import { NotFoundError, type Storage } from "./storage.ts";
import { tempFileName } from "./tempfiles.ts";

/** `kind` of every manifest header. */
export const MANIFEST_KIND = "datarater.manifest";
/** The manifest format version this module writes and reads. */
export const MANIFEST_VERSION = 1;

const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, "expected a lowercase hex sha256");

/**
 * How keep/drop is decided. `keepFraction`: one global raw-score threshold from the model's
 * calibration, keeping that fraction of the reference distribution. `threshold`: keep iff
 * `score >= threshold`. `topK`: the paper's per-record top-K-of-B acceptance probability of the
 * record's calibrated percentile, decided by a uniform draw seeded by the record id.
 */
export const PolicySchema = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("keepFraction"),
    fraction: z.number().min(0).max(1),
  }).strict(),
  z.object({
    kind: z.literal("threshold"),
    threshold: z.number().refine(Number.isFinite, "threshold must be a finite number"),
  }).strict(),
  z.object({
    kind: z.literal("topK"),
    k: z.number().int().min(1),
    b: z.number().int().min(1).max(1_000_000),
    seed: z.number().int().min(0).max(0xffffffff).default(0),
  }).strict().refine((p) => p.k <= p.b, { message: "k must be <= b", path: ["k"] }),
]);
export type Policy = z.infer<typeof PolicySchema>;

/** Names of the id and text fields in the shard's records. */
export const FieldsSchema = z.object({
  id: z.string().min(1).default("id"),
  text: z.string().min(1).default("text"),
}).strict();
export type Fields = z.infer<typeof FieldsSchema>;

/** Summary of the scores in one manifest (null fields when no record was scored). */
export const ScoreSummarySchema = z.object({
  min: z.number().nullable(),
  max: z.number().nullable(),
  mean: z.number().nullable(),
  /** Scores at percentiles 0, 10, …, 100 (exact up to `sampleSize` records, else from a sample). */
  deciles: z.array(z.number()).length(11).nullable(),
  /** How many scores the deciles were computed from (a uniform reservoir sample when < records). */
  sampleSize: z.number().int().min(0),
});
export type ScoreSummary = z.infer<typeof ScoreSummarySchema>;

/** How a manifest's records were windowed and aggregated. */
export const ScoringSchema = z.object({
  /** Bytes per window (the model's input width). */
  window: z.number().int().min(1),
  /** Bytes between window starts. */
  stride: z.number().int().min(1),
  aggregation: z.enum(AGGREGATIONS),
  /** UTF-8 bytes of each record that were rated. */
  cap: z.number().int().min(1),
});
export type Scoring = z.infer<typeof ScoringSchema>;

/** The first line of a manifest. */
export const ManifestHeaderSchema = z.object({
  kind: z.literal(MANIFEST_KIND),
  version: z.literal(MANIFEST_VERSION),
  createdAt: z.string(),
  model: z.object({
    uri: z.string(),
    sha256: Sha256Schema,
    /** The export's `datarater.format` metadata. */
    format: z.string(),
    /** Bytes of each record the model sees (the tokenizer's maxLength). */
    maxLength: z.number().int().min(1),
  }),
  input: z.object({
    uri: z.string(),
    /** The shard's ETag when it was read (null where the store gives none). */
    etag: z.string().nullable(),
    /** sha256 of the shard's stored bytes (compressed bytes for a gzip shard). */
    sha256: Sha256Schema,
    size: z.number().int().min(0),
  }),
  fields: FieldsSchema,
  onInvalid: z.enum(["fail", "skip"]),
  policy: PolicySchema,
  /** Raw-score threshold applied (keep iff score >= threshold); null for `topK`. */
  threshold: z.number().nullable(),
  counts: z.object({
    /** Records scored (= entry lines). */
    records: z.number().int().min(0),
    kept: z.number().int().min(0),
    dropped: z.number().int().min(0),
    /** Lines skipped as invalid (`onInvalid: "skip"`): bad JSON, missing fields, bad UTF-8, duplicate ids. */
    skippedInvalid: z.number().int().min(0),
  }),
  /** The first skipped lines and why (at most {@link MAX_REPORTED_INVALID}). */
  invalid: z.array(z.object({ line: z.number().int(), error: z.string() })),
  scores: ScoreSummarySchema,
  /**
   * How each record was rated (absent in manifests of scorers that rated only a record's head):
   * windows of `window` bytes every `stride` bytes over its first `cap` UTF-8 bytes, the record's
   * score the `aggregation` of its window scores (lib/windows.ts).
   */
  scoring: ScoringSchema.optional(),
});
export type ManifestHeader = z.infer<typeof ManifestHeaderSchema>;

/** A window's score: `[start, end, score]`, byte offsets into the record's UTF-8 text. */
export const SpanSchema = z.tuple([
  z.number().int().min(0),
  z.number().int().min(0),
  z.number(),
]);
export type Span = z.infer<typeof SpanSchema>;

/** One scored record. */
export const ManifestEntrySchema = z.object({
  id: z.string(),
  line: z.number().int().min(1),
  /** The record's score: the header's `scoring.aggregation` of its span scores. */
  score: z.number(),
  keep: z.boolean(),
  /** Window scores in order, covering bytes [0, min(record bytes, cap)) (absent in older manifests). */
  spans: z.array(SpanSchema).min(1).optional(),
  /** Present (true) when the record is longer than `scoring.cap` bytes: its tail was not rated. */
  truncated: z.literal(true).optional(),
});
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>;

/** Skipped lines listed in a header (the count is always exact). */
export const MAX_REPORTED_INVALID = 100;

/** The manifest is malformed, or does not match the shard it claims to describe. */
export class ManifestError extends Error {
  constructor(message: string, readonly uri: string) {
    super(message);
    this.name = "ManifestError";
  }
}

/** The shard's bytes are not the ones the manifest was written for. */
export class ManifestMismatchError extends ManifestError {
  constructor(message: string, uri: string) {
    super(message, uri);
    this.name = "ManifestMismatchError";
  }
}

function formatZodIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
}

/** Validates a parsed header; throws {@link ManifestError} saying which fields are wrong. */
export function parseManifestHeader(value: unknown, uri = "(manifest)"): ManifestHeader {
  const parsed = ManifestHeaderSchema.safeParse(value);
  if (!parsed.success) {
    throw new ManifestError(
      `${uri} does not start with a manifest v1 header: ${formatZodIssues(parsed.error)}`,
      uri,
    );
  }
  return parsed.data;
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Running score statistics in bounded memory: exact min/max/mean, and deciles from a uniform
 * reservoir sample (exact while the shard has at most `sampleSize` records). The reservoir uses a
 * fixed-seed generator so the same shard gives the same summary.
 */
export class ScoreSummaryBuilder {
  #count = 0;
  #sum = 0;
  #min = Infinity;
  #max = -Infinity;
  #sample: Float64Array;
  #filled = 0;
  #rng = 0x9e3779b9;

  constructor(readonly sampleSize = 10_000) {
    this.#sample = new Float64Array(sampleSize);
  }

  /** Adds one score. */
  add(score: number): void {
    this.#count++;
    this.#sum += score;
    if (score < this.#min) this.#min = score;
    if (score > this.#max) this.#max = score;
    if (this.#filled < this.sampleSize) {
      this.#sample[this.#filled++] = score;
      return;
    }
    const j = Math.floor(this.#random() * this.#count);
    if (j < this.sampleSize) this.#sample[j] = score;
  }

  #random(): number {
    // xorshift32: enough for reservoir replacement, and reproducible.
    let x = this.#rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#rng = x >>> 0;
    return this.#rng / 4294967296;
  }

  /** The summary so far. */
  summary(): ScoreSummary {
    if (this.#count === 0) {
      return { min: null, max: null, mean: null, deciles: null, sampleSize: 0 };
    }
    const sorted = this.#sample.slice(0, this.#filled).sort();
    const deciles: number[] = [];
    for (let i = 0; i <= 10; i++) {
      const h = (sorted.length - 1) * (i / 10);
      const lo = Math.floor(h);
      const hi = Math.min(lo + 1, sorted.length - 1);
      deciles.push(sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]));
    }
    return {
      min: this.#min,
      max: this.#max,
      mean: this.#sum / this.#count,
      deciles,
      sampleSize: this.#filled,
    };
  }
}

const encoder = new TextEncoder();

/** The header's line as written (validated first: a manifest never gets a malformed header). */
function headerLine(header: ManifestHeader): Uint8Array {
  return encoder.encode(JSON.stringify(parseManifestHeader(header)) + "\n");
}

/**
 * Stem of every spool file's name (`tempFileName` in lib/tempfiles.ts adds the writer's pid and
 * host). A process killed mid-shard cannot delete its spool, so a sweep at start removes the
 * files whose writer is gone (`sweepStaleTempFiles(dir, SPOOL_PREFIX)`).
 */
export const SPOOL_PREFIX = "datarater-spool";

/**
 * Spools manifest entries to a temporary file so memory stays bounded, then streams the finished
 * manifest (header line, then the entries) for a single create-only write. Nothing is visible in
 * storage until that write, so a crash mid-shard leaves no partial manifest.
 *
 * @example
 * ```ts
 * const spool = await ManifestSpool.create();
 * try {
 *   await spool.add({ id: "a", line: 1, score: 0.3, keep: true });
 *   await storage.write(uri, spool.stream(header), { ifNoneMatch: "*" });
 * } finally {
 *   await spool.dispose();
 * }
 * ```
 */
export class ManifestSpool {
  #file: Deno.FsFile;
  #pending: string[] = [];
  #pendingChars = 0;
  #bytes = 0;
  #entries = 0;
  #flushing: Promise<void> = Promise.resolve();

  private constructor(readonly path: string, file: Deno.FsFile) {
    this.#file = file;
  }

  /**
   * Opens a spool in the system's temporary folder (or `dir`), named by `tempFileName` after
   * {@link SPOOL_PREFIX} and the writing process.
   */
  static async create(dir?: string): Promise<ManifestSpool> {
    const path = join(dir ?? tmpdir(), tempFileName(SPOOL_PREFIX));
    const file = await Deno.open(path, { write: true, read: true, createNew: true });
    return new ManifestSpool(path, file);
  }

  /** Entries added so far. */
  get entries(): number {
    return this.#entries;
  }

  /** Appends one entry (buffered; flushed to disk every ~256 KiB). */
  async add(entry: ManifestEntry): Promise<void> {
    const line = JSON.stringify({
      id: entry.id,
      line: entry.line,
      score: entry.score,
      keep: entry.keep,
      spans: entry.spans,
      truncated: entry.truncated,
    }) + "\n";
    this.#pending.push(line);
    this.#pendingChars += line.length;
    this.#entries++;
    if (this.#pendingChars >= 256 * 1024) await this.flush();
  }

  /** Writes buffered entries to the spool file (flushes run one after another, in order). */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#writePending());
    return this.#flushing;
  }

  async #writePending(): Promise<void> {
    if (!this.#pending.length) return;
    const bytes = encoder.encode(this.#pending.join(""));
    this.#pending = [];
    this.#pendingChars = 0;
    let written = 0;
    while (written < bytes.length) written += await this.#file.write(bytes.subarray(written));
    this.#bytes += bytes.length;
  }

  /** Size in bytes of the manifest {@link stream} will produce for `header`. */
  async byteLength(header: ManifestHeader): Promise<number> {
    await this.flush();
    return headerLine(header).length + this.#bytes;
  }

  /** The complete manifest: header line, then every entry in the order added. */
  stream(header: ManifestHeader): ReadableStream<Uint8Array> {
    const headerBytes = headerLine(header);
    let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
    const flush = () => this.flush();
    const path = this.path;
    return new ReadableStream<Uint8Array>({
      async start(controller) {
        await flush();
        controller.enqueue(headerBytes);
      },
      async pull(controller) {
        if (!reader) {
          const file = await Deno.open(path, { read: true });
          reader = file.readable.getReader();
        }
        const { value, done } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      async cancel(reason) {
        await reader?.cancel(reason);
      },
    });
  }

  /** Closes and deletes the spool file. */
  async dispose(): Promise<void> {
    try {
      this.#file.close();
    } catch { /* already closed */ }
    await Deno.remove(this.path).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/** The longest manifest line read: an entry's spans for a 1 MiB record take a few hundred KB. */
const MAX_MANIFEST_LINE_BYTES = 64 << 20;
const utf8 = new TextDecoder("utf-8");

/**
 * A manifest's non-empty lines as text (a trailing `\r` dropped), the lines each chunk completes in
 * one array. The complete lines of a chunk are checked and decoded in one call and split as text:
 * a decoder call per line cost as much as parsing the entries.
 */
async function* manifestLineBlocks(
  storage: Storage,
  uri: string,
): AsyncGenerator<[number, string][]> {
  const stream = await storage.read(uri);
  let line = 0;
  let carry: Uint8Array[] = [];
  let carryLength = 0;
  /** `bytes`: whole lines, each ending with `\n` unless `last`. */
  const decodeLines = (bytes: Uint8Array, last: boolean): [number, string][] => {
    if (!isUtf8(bytes)) {
      for (let start = 0, n = line + 1;; n++) {
        const nl = bytes.indexOf(0x0a, start);
        const end = nl < 0 ? bytes.length : nl;
        if (!isUtf8(bytes.subarray(start, end))) {
          throw new ManifestError(`${uri} line ${n} is not valid UTF-8`, uri);
        }
        start = end + 1;
      }
    }
    const texts = utf8.decode(bytes).split("\n");
    if (!last) texts.pop(); // the empty text after the final `\n`
    const out: [number, string][] = [];
    for (let text of texts) {
      line++;
      if (text.endsWith("\r")) text = text.slice(0, -1);
      if (text) out.push([line, text]);
    }
    return out;
  };
  for await (const chunk of stream) {
    const nl = chunk.lastIndexOf(0x0a);
    const tail = nl < 0 ? chunk : chunk.subarray(nl + 1);
    if (nl >= 0) {
      const head = chunk.subarray(0, nl + 1);
      const whole = carryLength ? concatBytes([...carry, head], carryLength + head.length) : head;
      carry = [];
      carryLength = 0;
      const out = decodeLines(whole, false);
      if (out.length) yield out;
    }
    if (tail.length) {
      carry.push(tail.slice()); // a copy: the stream may reuse its buffer
      carryLength += tail.length;
      if (carryLength > MAX_MANIFEST_LINE_BYTES) {
        throw new ManifestError(
          `${uri} line ${line + 1} is longer than ${MAX_MANIFEST_LINE_BYTES} bytes`,
          uri,
        );
      }
    }
  }
  if (carryLength) {
    const out = decodeLines(concatBytes(carry, carryLength), true);
    if (out.length) yield out;
  }
}

function parseJsonLine(uri: string, line: number, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`${uri} line ${line}: not valid JSON (${(e as Error).message})`, uri);
  }
}

/**
 * Reads only the header (the first line) of a manifest; the rest is not downloaded. Throws the
 * storage's `NotFoundError` if there is no manifest, {@link ManifestError} if the object is not one.
 *
 * @example
 * ```ts
 * const header = await readManifestHeader(storage, "s3://b/manifests/part-0.manifest.jsonl");
 * ```
 */
export async function readManifestHeader(
  storage: Storage,
  uri: string,
): Promise<ManifestHeader> {
  const blocks = manifestLineBlocks(storage, uri);
  try {
    const first = await blocks.next();
    if (first.done) throw new ManifestError(`${uri} is empty: expected a manifest header`, uri);
    const [line, text] = first.value[0];
    return parseManifestHeader(parseJsonLine(uri, line, text), uri);
  } finally {
    await blocks.return(undefined); // cancels the rest of the download
  }
}

/**
 * {@link readManifestHeader}, or `null` when no object exists at `uri` (what a writer that never
 * overwrites asks before scoring).
 *
 * @example
 * ```ts
 * const existing = await readManifestHeaderIfExists(storage, outputUri);
 * if (existing) console.log("already scored with", existing.model.uri);
 * ```
 */
export async function readManifestHeaderIfExists(
  storage: Storage,
  uri: string,
): Promise<ManifestHeader | null> {
  try {
    return await readManifestHeader(storage, uri);
  } catch (e) {
    if (e instanceof NotFoundError) return null;
    throw e;
  }
}

/** The common spans, checked by hand (see {@link parseManifestEntry}). */
function wellFormedSpans(spans: unknown): spans is Span[] {
  if (!Array.isArray(spans) || spans.length === 0) return false;
  for (const s of spans) {
    if (
      !Array.isArray(s) || s.length !== 3 || !Number.isInteger(s[0]) || s[0] < 0 ||
      !Number.isInteger(s[1]) || s[1] < 0 || typeof s[2] !== "number"
    ) return false;
  }
  return true;
}

/**
 * One entry, checked against {@link ManifestEntrySchema}. The common cases (the four fields, or
 * those and well-formed spans) are checked by hand: a zod parse per entry was a third of
 * materialisation's time; anything else goes through the schema, for its verdict and its message.
 */
function parseManifestEntry(uri: string, line: number, value: unknown): ManifestEntry {
  const v = value as Record<string, unknown> | null;
  if (
    v !== null && typeof v === "object" && typeof v.id === "string" &&
    Number.isInteger(v.line) && (v.line as number) >= 1 && typeof v.score === "number" &&
    typeof v.keep === "boolean"
  ) {
    const keys = Object.keys(v).length;
    if (keys === 4) return { id: v.id, line: v.line as number, score: v.score, keep: v.keep };
    if (keys === 5 && wellFormedSpans(v.spans)) {
      return { id: v.id, line: v.line as number, score: v.score, keep: v.keep, spans: v.spans };
    }
  }
  const parsed = ManifestEntrySchema.safeParse(value);
  if (!parsed.success) {
    throw new ManifestError(
      `${uri} line ${line}: not a manifest entry (${formatZodIssues(parsed.error)})`,
      uri,
    );
  }
  return parsed.data;
}

/**
 * Opens a manifest: its header, and its entries as a stream in input order. Entries are
 * validated as they are read, and the total is checked against the header's count.
 */
export async function readManifest(
  storage: Storage,
  uri: string,
): Promise<{ header: ManifestHeader; entries: AsyncGenerator<ManifestEntry> }> {
  const { header, blocks } = await readManifestBlocks(storage, uri);
  async function* entries(): AsyncGenerator<ManifestEntry> {
    for await (const block of blocks) yield* block;
  }
  return { header, entries: entries() };
}

/**
 * {@link readManifest} with the entries a block at a time (the lines of each chunk read), for a
 * reader that does little per entry (materialising: one async step per entry costs more than
 * copying a record).
 */
export async function readManifestBlocks(
  storage: Storage,
  uri: string,
): Promise<{ header: ManifestHeader; blocks: AsyncGenerator<ManifestEntry[]> }> {
  const lines = manifestLineBlocks(storage, uri);
  const first = await lines.next();
  if (first.done) throw new ManifestError(`${uri} is empty: expected a manifest header`, uri);
  const [headerLine, headerText] = first.value[0];
  const header = parseManifestHeader(parseJsonLine(uri, headerLine, headerText), uri);
  async function* blocks(): AsyncGenerator<ManifestEntry[]> {
    let count = 0;
    let lastLine = 0;
    // A bad line ends the stream after the entries before it, as one entry at a time would.
    async function* parse(lineBlock: [number, string][]): AsyncGenerator<ManifestEntry[]> {
      const out: ManifestEntry[] = [];
      try {
        for (const [line, text] of lineBlock) {
          const entry = parseManifestEntry(uri, line, parseJsonLine(uri, line, text));
          if (entry.line <= lastLine) {
            throw new ManifestError(
              `${uri} line ${line}: entries are out of input order (shard line ${entry.line} after ${lastLine})`,
              uri,
            );
          }
          lastLine = entry.line;
          out.push(entry);
        }
      } finally {
        count += out.length;
        if (out.length) yield out;
      }
    }
    try {
      yield* parse(first.value.slice(1));
      for await (const lineBlock of lines) yield* parse(lineBlock);
    } finally {
      await lines.return(undefined);
    }
    if (count !== header.counts.records) {
      throw new ManifestError(
        `${uri} is truncated or corrupt: ${count} entries but the header counts ${header.counts.records}`,
        uri,
      );
    }
  }
  return { header, blocks: blocks() };
}

/** Every entry of a manifest, in input order (streaming). */
export async function* readManifestEntries(
  storage: Storage,
  uri: string,
): AsyncGenerator<ManifestEntry> {
  const { entries } = await readManifest(storage, uri);
  yield* entries;
}

/** Ids of the kept records, in input order (streaming; the shard is not read). */
export async function* keptIds(storage: Storage, uri: string): AsyncGenerator<string> {
  for await (const e of readManifestEntries(storage, uri)) if (e.keep) yield e.id;
}

/** A kept record with its manifest entry. */
export interface KeptRecord extends RecordEntry {
  score: number;
  /** The entry's window scores `[start, end, score]` (byte offsets into `text`), when it has them. */
  spans?: Span[];
  /** Set when the scorer rated only the record's first `scoring.cap` bytes. */
  truncated?: true;
}

/** Options for {@link keptRecords}. */
export interface KeptRecordsOptions {
  /** The shard to join (default: the header's input URI). */
  shard?: string;
  /**
   * Check the shard against the header: by ETag when it matches, else by hashing the bytes as
   * they stream (a mismatch is thrown at the end). Default true.
   */
  verify?: boolean;
}

/** Passes a byte stream through while computing its sha256 (hex) and length. */
export function hashingStream(
  stream: ReadableStream<Uint8Array>,
): { stream: ReadableStream<Uint8Array>; digest: () => string; size: () => number } {
  const hash = createHash("sha256");
  let size = 0;
  let digest: string | null = null;
  return {
    stream: stream.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          hash.update(chunk);
          size += chunk.length;
          controller.enqueue(chunk);
        },
      }),
    ),
    digest: () => (digest ??= hash.digest("hex")),
    size: () => size,
  };
}

/**
 * The kept records of a shard, streaming: joins the manifest with the shard in input order (each
 * entry's line and id must match the shard's record, or {@link ManifestMismatchError} is thrown).
 *
 * @example
 * ```ts
 * for await (const r of keptRecords(storage, manifestUri)) batch.push(r.text);
 * ```
 */
export async function* keptRecords(
  storage: Storage,
  manifestUri: string,
  options: KeptRecordsOptions = {},
): AsyncGenerator<KeptRecord> {
  const { header, entries } = await readManifest(storage, manifestUri);
  const shard = options.shard ?? header.input.uri;
  const verify = options.verify ?? true;
  let hashed: ReturnType<typeof hashingStream> | null = null;
  let source: string | ReadableStream<Uint8Array> = shard;
  if (verify) {
    const info = await storage.stat(shard);
    const etagMatches = info?.etag != null && info.etag === header.input.etag;
    if (!etagMatches) {
      hashed = hashingStream(await storage.read(shard));
      source = hashed.stream;
    }
  }
  const records = readRecords(storage, source, {
    idField: header.fields.id,
    textField: header.fields.text,
    onInvalid: "skip", // lines the scorer skipped have no entry; the join below skips them too
    uri: shard, // a Parquet shard is read by ranged reads (the hashed stream is still read whole)
  });
  const mismatch = (why: string) =>
    new ManifestMismatchError(
      `manifest ${manifestUri} does not match shard ${shard}: ${why}`,
      manifestUri,
    );
  try {
    for await (const [entry, record] of joinEntries(entries, records, mismatch)) {
      if (!entry.keep) continue;
      // Spans too, so a trainer that packs sequences can drop a bad window of a kept record.
      const kept: KeptRecord = { ...record, score: entry.score };
      if (entry.spans) kept.spans = entry.spans;
      if (entry.truncated) kept.truncated = true;
      yield kept;
    }
    if (hashed) {
      for await (const _ of records) { /* drain so the whole shard is hashed */ }
      if (hashed.digest() !== header.input.sha256) {
        throw mismatch(
          `sha256 ${hashed.digest()} differs from the header's ${header.input.sha256}`,
        );
      }
    }
  } finally {
    await records.return(undefined);
  }
}

/**
 * Pairs each manifest entry with its shard record, in order. Records without an entry were skipped
 * by the scorer (invalid or duplicate) and are skipped here too; a record that is missing, or has
 * another id, is a mismatch (`unit` names a position: "line", or "row" for Parquet).
 */
export async function* joinEntries(
  entries: AsyncIterable<ManifestEntry>,
  records: AsyncIterator<RecordEntry>,
  mismatch: (why: string) => Error,
  unit = "line",
): AsyncGenerator<[ManifestEntry, RecordEntry]> {
  for await (const entry of entries) {
    let record: RecordEntry;
    for (;;) {
      const next = await records.next();
      if (next.done) throw mismatch(`the shard ends before ${unit} ${entry.line}`);
      if (next.value.line < entry.line) continue;
      record = next.value;
      break;
    }
    if (record.line !== entry.line || record.id !== entry.id) {
      throw mismatch(
        `entry for id ${JSON.stringify(entry.id)} at ${unit} ${entry.line}, shard has ` +
          `id ${JSON.stringify(record.id)} at ${unit} ${record.line}`,
      );
    }
    yield [entry, record];
  }
}

/** How a shard was checked against its manifest. */
export interface VerifyResult {
  ok: boolean;
  /** `etag`: the stored ETag equals the header's; `sha256`: the bytes were hashed. */
  method: "etag" | "sha256";
  shard: string;
  /** Why it does not match (when `ok` is false). */
  reason?: string;
}

/**
 * Checks that a shard is the one a manifest describes: by ETag when the store's ETag equals the
 * header's (cheap), else by hashing the shard's bytes (streaming). Never throws for a mismatch:
 * read `ok` and `reason`. A missing shard throws the storage's `NotFoundError`.
 */
export async function verifyManifest(
  storage: Storage,
  manifestUri: string,
  options: { shard?: string; header?: ManifestHeader } = {},
): Promise<VerifyResult> {
  const header = options.header ?? await readManifestHeader(storage, manifestUri);
  const shard = options.shard ?? header.input.uri;
  const info = await storage.stat(shard);
  if (info && info.etag != null && info.etag === header.input.etag) {
    return { ok: true, method: "etag", shard };
  }
  const hashed = hashingStream(await storage.read(shard));
  for await (const _ of hashed.stream) { /* hash every byte */ }
  if (hashed.digest() === header.input.sha256) return { ok: true, method: "sha256", shard };
  return {
    ok: false,
    method: "sha256",
    shard,
    reason: `sha256 ${hashed.digest()} (${hashed.size()} bytes) differs from the header's ` +
      `${header.input.sha256} (${header.input.size} bytes)`,
  };
}
