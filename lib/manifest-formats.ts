/**
 * Manifest v1 (see `manifest.ts`) re-written in the formats other tools read, so DuckDB, Spark,
 * Polars, pandas or dolma's mixer can use a scoring run without this project's code:
 *
 * - **Parquet manifest** (`schemas/manifest.parquet-schema.json`): one row per entry, in input order,
 *   columns `id` (STRING), `line` (INT64, the record's 1-based line or row in the shard), `score`
 *   (DOUBLE), `keep` (BOOLEAN), all required; `spans` (a LIST of `{start INT64, end INT64, score
 *   DOUBLE}` structs: the entry's window scores, byte offsets; null for entries of manifests written
 *   before windows) and `truncated` (BOOLEAN, true when the record was cut at the cap). The v1
 *   header, as JSON, is the value of the file's key-value metadata key `datarater.manifest`.
 * - **dolma attributes** (`schemas/dolma-attributes.schema.json`): JSON Lines (gzip when the path
 *   ends in `.gz`), one row per document of the shard, in the same order, as dolma's mixer requires
 *   (its docs/data-format.md): `{"id", "attributes": {"<name>__datarater__score": [[start, end,
 *   score], ...], "<name>__datarater__doc_score": [[0, len, score]], "<name>__datarater__keep":
 *   [[0, len, 1|0]]}}`: `score` holds the window scores, `doc_score` the record's score. Offsets
 *   count Unicode code points, because dolma's taggers emit spans with Python string offsets
 *   (`Span(start=0, end=len(doc.text))`); a window's byte offsets become the code points that start
 *   before them, so a character cut by a window edge belongs to the window holding its first byte.
 *   Documents the scorer skipped as invalid get `"attributes": {}` (and `id` null when the line has
 *   none), so an include filter on the keep attribute drops them, as the manifest does. By dolma's
 *   convention the file lives at the document's path with `/documents/` replaced by
 *   `/attributes/<name>/` ({@link dolmaAttributesUriFor}), so a mixer stream with
 *   `attributes: [<name>]` and `filter.include: ["$.attributes[?(@.<name>__datarater__keep &&
 *   @.<name>__datarater__keep[0] && @.<name>__datarater__keep[0][2] >= 1)]"]` keeps exactly the
 *   kept records.
 *
 * Both writers read the v1 manifest (and, for dolma, the shard, verified like `keptRecords`),
 * spool to a local file and write the result create-only; an output that exists is left alone.
 *
 * @example
 * ```ts
 * await writeManifestFormats(storage, "s3://b/m/part-0.manifest.jsonl", {
 *   parquet: "s3://b/m/part-0.manifest.parquet",
 *   dolmaAttributes: { name: "rater1" },
 * });
 * ```
 */
import { z } from "zod";
import {
  type ColumnSource,
  fileWriter,
  ParquetWriter,
  schemaFromColumnData,
} from "hyparquet-writer";
import { parquetMetadataAsync, type SchemaElement } from "hyparquet";
import {
  hashingStream,
  type ManifestEntry,
  ManifestEntrySchema,
  ManifestError,
  type ManifestHeader,
  ManifestMismatchError,
  parseManifestHeader,
  readManifest,
} from "./manifest.ts";
import { rangedFile, readParquetRows } from "./parquet.ts";
import { readRecords, RecordError } from "./records.ts";
import { PreconditionFailedError, type Storage } from "./storage.ts";

/** Key-value metadata key holding the v1 header (JSON) in a Parquet manifest. */
export const PARQUET_HEADER_KEY = "datarater.manifest";
/** Key-value metadata key naming the Parquet manifest's layout version. */
export const PARQUET_FORMAT_KEY = "datarater.format";
/** Value of {@link PARQUET_FORMAT_KEY}. */
export const PARQUET_FORMAT = "datarater.manifest.parquet/1";
/** The Parquet manifest's required columns, in order. */
export const PARQUET_COLUMNS = ["id", "line", "score", "keep"] as const;
/** Its window columns (read when present: files from before windows lack them). */
export const PARQUET_SPAN_COLUMNS = ["spans", "truncated"] as const;

/** dolma attribute names are used in JSONPath filters and file paths: keep them plain. */
const AttributeNameSchema = z.string().regex(
  /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/,
  "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
);

/** Extra outputs a scoring request (or `deno task manifest convert`) may ask for. */
export const ManifestFormatsSchema = z.object({
  /** Where the Parquet manifest goes (an object URI, written create-only). */
  parquet: z.string().min(1).optional(),
  /** dolma attributes: `name` is the attribute set; `uri` defaults to dolma's derived path. */
  dolmaAttributes: z.object({
    name: AttributeNameSchema,
    uri: z.string().min(1).optional(),
  }).strict().optional(),
}).strict();
export type ManifestFormats = z.infer<typeof ManifestFormatsSchema>;

/** What {@link writeManifestFormats} wrote (or found already written). */
export interface ManifestFormatsResult {
  parquet?: string;
  dolmaAttributes?: string;
}

async function uploadSpool(
  storage: Storage,
  path: string,
  uri: string,
  contentType: string,
): Promise<boolean> {
  const size = (await Deno.stat(path)).size;
  const file = await Deno.open(path, { read: true });
  try {
    await storage.write(uri, file.readable, { ifNoneMatch: "*", contentLength: size, contentType });
    return true;
  } catch (e) {
    if (e instanceof PreconditionFailedError) return false; // written meanwhile: theirs stands
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Parquet manifest

/** Entries per row group of a Parquet manifest (bounds the entries held in memory). */
const PARQUET_ROW_GROUP = 100_000;

/**
 * Writes the Parquet form of a v1 manifest, create-only. Returns false if `output` already exists.
 *
 * @example
 * ```ts
 * await writeParquetManifest(storage, "/m/part-0.manifest.jsonl", "/m/part-0.manifest.parquet");
 * ```
 */
export async function writeParquetManifest(
  storage: Storage,
  manifestUri: string,
  output: string,
  options: { tmpDir?: string; rowGroupSize?: number } = {},
): Promise<boolean> {
  if (await storage.stat(output)) return false;
  const { header, entries } = await readManifest(storage, manifestUri);
  const path = await Deno.makeTempFile({ dir: options.tmpDir, prefix: "datarater-pq-manifest-" });
  try {
    const schema = parquetSchema();
    const writer = new ParquetWriter({
      writer: fileWriter(path),
      schema,
      kvMetadata: [
        { key: PARQUET_FORMAT_KEY, value: PARQUET_FORMAT },
        { key: PARQUET_HEADER_KEY, value: JSON.stringify(header) },
      ],
    });
    const groupSize = options.rowGroupSize ?? PARQUET_ROW_GROUP;
    let batch: ManifestEntry[] = [];
    const flush = async () => {
      if (!batch.length) return;
      await writer.write({ columnData: parquetColumns(batch), rowGroupSize: groupSize });
      batch = [];
    };
    for await (const e of entries) {
      batch.push(e);
      if (batch.length >= groupSize) await flush();
    }
    await flush();
    await writer.finish();
    return await uploadSpool(storage, path, output, "application/vnd.apache.parquet");
  } finally {
    await Deno.remove(path).catch(() => {});
  }
}

function flatColumns(entries: ManifestEntry[]): ColumnSource[] {
  return [
    { name: "id", data: entries.map((e) => e.id), type: "STRING", nullable: false },
    { name: "line", data: entries.map((e) => BigInt(e.line)), type: "INT64", nullable: false },
    { name: "score", data: entries.map((e) => e.score), type: "DOUBLE", nullable: false },
    { name: "keep", data: entries.map((e) => e.keep), type: "BOOLEAN", nullable: false },
  ];
}

function parquetColumns(entries: ManifestEntry[]): ColumnSource[] {
  return [
    ...flatColumns(entries),
    {
      name: "spans",
      data: entries.map((e) =>
        e.spans?.map(([start, end, score]) => ({
          start: BigInt(start),
          end: BigInt(end),
          score,
        })) ??
          null
      ),
    },
    { name: "truncated", data: entries.map((e) => e.truncated === true), nullable: false },
  ];
}

/**
 * The flat columns' schema as hyparquet-writer derives it, then the spans as a standard 3-level
 * LIST of structs (what DuckDB, Spark and pyarrow read as `list<struct<start, end, score>>`).
 */
function parquetSchema(): SchemaElement[] {
  const flat = schemaFromColumnData({ columnData: flatColumns([]) });
  return [
    { ...flat[0], num_children: PARQUET_COLUMNS.length + PARQUET_SPAN_COLUMNS.length },
    ...flat.slice(1),
    { name: "spans", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
    { name: "list", repetition_type: "REPEATED", num_children: 1 },
    { name: "element", repetition_type: "REQUIRED", num_children: 3 },
    { name: "start", repetition_type: "REQUIRED", type: "INT64" },
    { name: "end", repetition_type: "REQUIRED", type: "INT64" },
    { name: "score", repetition_type: "REQUIRED", type: "DOUBLE" },
    { name: "truncated", repetition_type: "REQUIRED", type: "BOOLEAN" },
  ];
}

/**
 * Opens a Parquet manifest: its header (from the key-value metadata, validated as v1's) and its
 * entries in order, streaming row group by row group. Throws {@link ManifestError} for a file
 * that is not one (no header key, an unknown version, missing columns, a count that disagrees).
 */
export async function readParquetManifest(
  storage: Storage,
  uri: string,
): Promise<{ header: ManifestHeader; entries: AsyncGenerator<ManifestEntry> }> {
  const file = await rangedFile(storage, uri);
  const metadata = await parquetMetadataAsync(file).catch((e) => {
    throw new ManifestError(`${uri} is not a readable Parquet file: ${(e as Error).message}`, uri);
  });
  const kv = new Map((metadata.key_value_metadata ?? []).map((p) => [p.key, p.value]));
  const raw = kv.get(PARQUET_HEADER_KEY);
  if (raw === undefined) {
    throw new ManifestError(
      `${uri} has no "${PARQUET_HEADER_KEY}" key-value metadata: not a Parquet manifest`,
      uri,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new ManifestError(`${uri}: its header is not JSON (${(e as Error).message})`, uri);
  }
  const header = parseManifestHeader(parsed, uri);
  const names = new Set(metadata.schema.slice(1).map((s) => s.name));
  const spanColumns = PARQUET_SPAN_COLUMNS.filter((c) => names.has(c));
  const missing = PARQUET_COLUMNS.filter((c) => !names.has(c));
  if (missing.length) {
    throw new ManifestError(`${uri} lacks the column(s) ${missing.join(", ")}`, uri);
  }
  async function* entries(): AsyncGenerator<ManifestEntry> {
    let count = 0;
    let last = 0;
    const columns = [...PARQUET_COLUMNS, ...spanColumns];
    for await (const row of readParquetRows(file, uri, { columns })) {
      const v = row.values;
      const spans = Array.isArray(v.spans)
        ? (v.spans as { start: bigint; end: bigint; score: number }[]).map((
          s,
        ) => [Number(s.start), Number(s.end), s.score])
        : undefined;
      const entry = ManifestEntrySchema.safeParse({
        id: v.id,
        line: typeof v.line === "bigint" ? Number(v.line) : v.line,
        score: v.score,
        keep: v.keep,
        ...(spans ? { spans } : {}),
        ...(v.truncated === true ? { truncated: true } : {}),
      });
      if (!entry.success || entry.data.line <= last) {
        throw new ManifestError(`${uri} row ${row.row} is not a valid entry in input order`, uri);
      }
      last = entry.data.line;
      count++;
      yield entry.data;
    }
    if (count !== header.counts.records) {
      throw new ManifestError(
        `${uri} is truncated or corrupt: ${count} rows but the header counts ${header.counts.records}`,
        uri,
      );
    }
  }
  return { header, entries: entries() };
}

// ---------------------------------------------------------------------------------------------
// dolma attributes

/**
 * dolma's attributes path for a document file: `/documents/` (the last one) replaced by
 * `/attributes/<name>/`. A Parquet shard's attributes are JSON Lines: `.parquet` becomes
 * `.jsonl.gz`. Throws if the path has no `/documents/` folder (give the URI explicitly then).
 *
 * @example
 * ```ts
 * dolmaAttributesUriFor("s3://b/cc/documents/2019/x.jsonl.gz", "rater1");
 * // "s3://b/cc/attributes/rater1/2019/x.jsonl.gz"
 * ```
 */
export function dolmaAttributesUriFor(shard: string, name: string): string {
  const i = shard.lastIndexOf("/documents/");
  if (i < 0) {
    throw new ManifestError(
      `shard ${shard} is not under a "documents/" folder, so dolma's attributes path cannot be ` +
        "derived: give the attributes URI explicitly",
      shard,
    );
  }
  const derived = shard.slice(0, i) + `/attributes/${name}/` +
    shard.slice(i + "/documents/".length);
  return derived.replace(/\.parquet$/, ".jsonl.gz");
}

/**
 * Code-point offsets (Python string offsets) of byte offsets into a text's UTF-8 encoding: each
 * becomes the number of characters whose first byte lies before it (offsets past the end become
 * the text's length).
 *
 * @example
 * ```ts
 * codePointOffsets("aé日b", [0, 1, 2, 3, 4, 7]); // [0, 1, 2, 2, 3, 4]
 * ```
 */
export function codePointOffsets(text: string, byteOffsets: readonly number[]): number[] {
  const order = byteOffsets.map((_, j) => j).sort((a, b) => byteOffsets[a] - byteOffsets[b]);
  const out = new Array<number>(byteOffsets.length);
  let bytes = 0;
  let points = 0;
  let i = 0;
  for (const j of order) {
    while (i < text.length && bytes < byteOffsets[j]) {
      const c = text.codePointAt(i)!;
      bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
      i += c >= 0x10000 ? 2 : 1;
      points++;
    }
    out[j] = points;
  }
  return out;
}

/** The number of Unicode code points in a string (Python's `len`). */
export function codePointLength(text: string): number {
  let surrogatePairs = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        surrogatePairs++;
        i++;
      }
    }
  }
  return text.length - surrogatePairs;
}

/**
 * Writes dolma attributes for a manifest's shard (one row per document, in order), create-only.
 * The shard is verified against the manifest like `keptRecords` (ETag, else sha256; each entry's
 * id at its line). Returns the URI and whether it was written (false: it already existed).
 */
export async function writeDolmaAttributes(
  storage: Storage,
  manifestUri: string,
  options: { name: string; uri?: string; tmpDir?: string },
): Promise<{ uri: string; created: boolean }> {
  const name = AttributeNameSchema.parse(options.name);
  const { header, entries } = await readManifest(storage, manifestUri);
  const shard = header.input.uri;
  const uri = options.uri ?? dolmaAttributesUriFor(shard, name);
  if (await storage.stat(uri)) {
    await entries.return(undefined);
    return { uri, created: false };
  }
  const mismatch = (why: string) =>
    new ManifestMismatchError(
      `manifest ${manifestUri} does not match shard ${shard}: ${why}`,
      manifestUri,
    );
  const info = await storage.stat(shard);
  const hashed = info?.etag != null && info.etag === header.input.etag
    ? null
    : hashingStream(await storage.read(shard));
  const skipped: number[] = [];
  const records = readRecords(storage, hashed?.stream ?? shard, {
    uri: shard,
    idField: header.fields.id,
    textField: header.fields.text,
    onInvalid: "skip",
    onSkip: (e: RecordError) => skipped.push(e.line),
    columns: [],
  });
  const path = await Deno.makeTempFile({ dir: options.tmpDir, prefix: "datarater-dolma-" });
  const file = await Deno.open(path, { write: true });
  const stage = uri.endsWith(".gz")
    ? new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>
    : new TransformStream<Uint8Array, Uint8Array>();
  const piped = stage.readable.pipeTo(file.writable);
  const writer = stage.writable.getWriter();
  const encoder = new TextEncoder();
  let pending = "";
  const put = async (row: unknown) => {
    pending += JSON.stringify(row) + "\n";
    if (pending.length >= 256 * 1024) {
      await writer.write(encoder.encode(pending));
      pending = "";
    }
  };
  const scoreKey = `${name}__datarater__score`;
  const docScoreKey = `${name}__datarater__doc_score`;
  const keepKey = `${name}__datarater__keep`;
  try {
    const nextEntry = async () => {
      const n = await entries.next();
      return n.done ? null : n.value;
    };
    let entry = await nextEntry();
    for await (const record of records) {
      for (const _ of skipped.splice(0)) await put({ id: null, attributes: {} });
      if (entry && entry.line < record.line) {
        throw mismatch(`entry at line ${entry.line} has no record in the shard`);
      }
      if (!entry || entry.line > record.line) {
        // A valid record with no entry: the scorer skipped it (a duplicate id).
        await put({ id: record.id, attributes: {} });
        continue;
      }
      if (entry.id !== record.id) {
        throw mismatch(
          `entry for id ${JSON.stringify(entry.id)} at line ${entry.line}, shard has id ` +
            `${JSON.stringify(record.id)} there`,
        );
      }
      const len = codePointLength(record.text);
      // A manifest from before windows rated the record as one span.
      const spans = entry.spans ?? [[0, null, entry.score] as const];
      const offsets = codePointOffsets(
        record.text,
        spans.flatMap(([start, end]) => [start, end ?? Infinity]),
      );
      await put({
        id: record.id,
        attributes: {
          [scoreKey]: spans.map((s, j) => [offsets[2 * j], offsets[2 * j + 1], s[2]]),
          [docScoreKey]: [[0, len, entry.score]],
          [keepKey]: [[0, len, entry.keep ? 1 : 0]],
        },
      });
      entry = await nextEntry();
    }
    for (const _ of skipped.splice(0)) await put({ id: null, attributes: {} });
    if (entry) throw mismatch(`the shard ends before line ${entry.line}`);
    if (hashed && hashed.digest() !== header.input.sha256) {
      throw mismatch(
        `sha256 ${hashed.digest()} differs from the manifest's ${header.input.sha256}`,
      );
    }
    if (pending) await writer.write(encoder.encode(pending));
    await writer.close();
    await piped;
    const created = await uploadSpool(storage, path, uri, "application/x-ndjson");
    return { uri, created };
  } catch (e) {
    await writer.abort().catch(() => {});
    await piped.catch(() => {});
    throw e;
  } finally {
    await records.return(undefined);
    await entries.return(undefined);
    await Deno.remove(path).catch(() => {});
  }
}

/**
 * Writes the requested extra formats of a v1 manifest (each create-only; existing ones are left
 * alone) and says where they are.
 */
export async function writeManifestFormats(
  storage: Storage,
  manifestUri: string,
  formats: ManifestFormats,
  options: { tmpDir?: string } = {},
): Promise<ManifestFormatsResult> {
  const out: ManifestFormatsResult = {};
  if (formats.parquet) {
    await writeParquetManifest(storage, manifestUri, formats.parquet, options);
    out.parquet = formats.parquet;
  }
  if (formats.dolmaAttributes) {
    const { uri } = await writeDolmaAttributes(storage, manifestUri, {
      ...formats.dolmaAttributes,
      tmpDir: options.tmpDir,
    });
    out.dolmaAttributes = uri;
  }
  return out;
}
