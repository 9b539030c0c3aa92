/**
 * Training data for meta-training: the `train` records the rater learns to rate and the `heldout`
 * records of the outer objective, loaded once into compact byte arrays, and batches drawn from them
 * with the run's seeded generator, so a resumed run draws exactly the batches the uninterrupted run
 * would have.
 *
 * A drawn record gives two views, both cut from the same place: the learners read a `seqLen`-byte
 * window at a uniform offset (`window: "random"`, how a language model reads a corpus: every byte of
 * a record is trained on) or its head (`window: "head"`), and the rater reads `rater.seqLen` bytes
 * (by default `seqLen`) from where the learner's window starts, moved back where the record ends
 * sooner. So the rater's score for an example is computed from what the learner trains on: with
 * equal lengths the two views are one batch; a longer rater view contains the learner's window, a
 * shorter one is the window's head. A record keeps up to `maxBytes` bytes in memory (the trainer
 * keeps `data.maxRecordBytes`, by default the scorer's 16 KiB cap, with random windows).
 *
 * Records whose text is empty are skipped and counted (they carry nothing to rate); lines that are
 * not records (bad JSON, no id or text field) are skipped and counted; text that was not valid UTF-8
 * is kept with U+FFFD where bytes were invalid (broken encodings are exactly what a rater should
 * learn to score low) and counted.
 *
 * @example
 * ```ts
 * const train = await loadDataset(storage, "s3://bucket/corpus/train/", { seqLen: 64, name: "train" });
 * const { lm, rater } = sampleBatch(train, 32, rng, 64, "random"); // lm === rater: one window each
 * ```
 */
import { type ByteBatch, encodeBatch, headBytes } from "../lib/bytes.ts";
import { isShardName, readRecords, type RecordError, SHARD_NAMES } from "../lib/records.ts";
import { type Storage, StorageError } from "../lib/storage.ts";
import type { Rng } from "./rng.ts";

/** Records in memory: record i is `bytes.subarray(offsets[i], offsets[i + 1])`. */
export interface Dataset {
  name: string;
  uri: string;
  count: number;
  bytes: Uint8Array;
  offsets: Uint32Array;
  stats: DatasetStats;
}

export interface DatasetStats {
  shards: number;
  /** Non-blank lines read. */
  lines: number;
  /** Usable records. */
  records: number;
  /** Lines that are not records, by reason (`bad-json`, `missing-text`, ...). */
  skipped: Record<string, number>;
  /** Records with an empty text (skipped). */
  emptyText: number;
  /** Records whose text had invalid UTF-8 (kept, with U+FFFD). */
  invalidUtf8: number;
}

/** The data cannot be used for training; the message says which split and what to do. */
export class DataError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DataError";
  }
}

/** The shard URIs of a prefix (sorted), or the URI itself if it names one object. */
export async function listShards(storage: Storage, uri: string): Promise<string[]> {
  const shards: string[] = [];
  const others: string[] = [];
  for await (const obj of storage.list(uri)) {
    if (isShardName(obj.uri)) shards.push(obj.uri);
    else others.push(obj.uri);
  }
  if (shards.length > 0) return shards.sort();
  // A single object named exactly (any extension) is a shard too.
  if (await storage.stat(uri)) return [uri];
  if (others.length > 0) {
    throw new DataError(
      `no ${SHARD_NAMES} shards under ${uri} (found ${others.length} other objects, e.g. ${
        others[0]
      }); point the data URI at the folder of record shards`,
    );
  }
  throw new DataError(`no data at ${uri}: the prefix is empty or does not exist`);
}

/** Loads every record of a split (prefix or single shard). Throws {@link DataError}. */
export async function loadDataset(
  storage: Storage,
  uri: string,
  opts: {
    seqLen: number;
    name: string;
    idField?: string;
    textField?: string;
    /** Bytes kept of each record (default `seqLen`: the head only). */
    maxBytes?: number;
  },
): Promise<Dataset> {
  const stats: DatasetStats = {
    shards: 0,
    lines: 0,
    records: 0,
    skipped: {},
    emptyText: 0,
    invalidUtf8: 0,
  };
  const keep = Math.max(opts.seqLen, opts.maxBytes ?? opts.seqLen);
  let bytes = new Uint8Array(1 << 16);
  let used = 0;
  const offsets: number[] = [0];
  let shards: string[];
  try {
    shards = await listShards(storage, uri);
    for (const shard of shards) {
      stats.shards++;
      const records = readRecords(storage, shard, {
        idField: opts.idField,
        textField: opts.textField,
        onInvalid: "skip",
        columns: [], // Parquet: only the id and text columns are needed
        onSkip: (e: RecordError) => {
          stats.lines++;
          stats.skipped[e.kind] = (stats.skipped[e.kind] ?? 0) + 1;
        },
      });
      for await (const r of records) {
        stats.lines++;
        if (r.text.length === 0) {
          stats.emptyText++;
          continue;
        }
        if (r.invalidUtf8) stats.invalidUtf8++;
        const head = headBytes(r.text, keep);
        if (used + head.length > bytes.length) {
          const grown = new Uint8Array(Math.max(bytes.length * 2, used + head.length));
          grown.set(bytes.subarray(0, used));
          bytes = grown;
        }
        bytes.set(head, used);
        used += head.length;
        offsets.push(used);
        stats.records++;
      }
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    if (e instanceof StorageError) {
      throw new DataError(`cannot read ${opts.name} data at ${uri}: ${e.message}`, { cause: e });
    }
    throw new DataError(
      `cannot read ${opts.name} data at ${uri}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  if (stats.records === 0) {
    throw new DataError(
      `${opts.name} data at ${uri} has no usable records (${describeStats(stats)}); ` +
        `each line must be a JSON object with a non-empty text field`,
    );
  }
  return {
    name: opts.name,
    uri,
    count: stats.records,
    bytes: bytes.slice(0, used),
    offsets: Uint32Array.from(offsets),
    stats,
  };
}

/** One line summary of what was read and skipped. */
export function describeStats(s: DatasetStats): string {
  const skipped = Object.entries(s.skipped).map(([k, n]) => `${n} ${k}`);
  if (s.emptyText) skipped.push(`${s.emptyText} empty text`);
  return `${s.shards} shard(s), ${s.lines} line(s), ${s.records} record(s)` +
    (skipped.length ? `, skipped: ${skipped.join(", ")}` : "") +
    (s.invalidUtf8 ? `, ${s.invalidUtf8} with invalid UTF-8 kept` : "");
}

/** Record i's bytes. */
export function recordAt(ds: Dataset, i: number): Uint8Array {
  return ds.bytes.subarray(ds.offsets[i], ds.offsets[i + 1]);
}

/** Where the learners' window sits in a drawn record (see the module comment). */
export type LearnerWindow = "random" | "head";

/**
 * A batch of `size` records drawn uniformly with replacement (so datasets smaller than a batch
 * still work), deterministic given the generator's state: `lm` is what the learners read (a
 * `seqLen`-byte window per `window`), `rater` what the rater reads of the same place
 * (`raterSeqLen` bytes from the window's start, moved back to fit the record). With equal lengths
 * `rater` is `lm`, the same batch object. `starts[i]` is where record i's learner window starts.
 *
 * The generator draws the same numbers whatever `raterSeqLen` is, so only the rater's view changes
 * with it.
 */
export function sampleBatch(
  ds: Dataset,
  size: number,
  rng: Rng,
  seqLen: number,
  window: LearnerWindow,
  raterSeqLen = seqLen,
): { lm: ByteBatch; rater: ByteBatch; starts: Uint32Array } {
  const learnerViews: Uint8Array[] = [];
  const raterViews: Uint8Array[] = [];
  const starts = new Uint32Array(size);
  for (let i = 0; i < size; i++) {
    const bytes = recordAt(ds, rng.int(ds.count));
    const start = window === "random" && bytes.length > seqLen
      ? rng.int(bytes.length - seqLen + 1)
      : 0;
    starts[i] = start;
    learnerViews.push(bytes.subarray(start, start + seqLen));
    if (raterSeqLen !== seqLen) {
      const from = Math.min(start, Math.max(0, bytes.length - raterSeqLen));
      raterViews.push(bytes.subarray(from, from + raterSeqLen));
    }
  }
  const lm = encodeBatch(learnerViews, seqLen);
  return {
    lm,
    rater: raterSeqLen === seqLen ? lm : encodeBatch(raterViews, raterSeqLen),
    starts,
  };
}

/** Records in memory from texts (tests and the toy task), each cut to `maxBytes` (default `seqLen`). */
export function datasetFromTexts(
  name: string,
  texts: readonly string[],
  seqLen: number,
  maxBytes = seqLen,
): Dataset {
  const heads = texts.filter((t) => t.length > 0).map((t) => headBytes(t, maxBytes));
  const offsets = new Uint32Array(heads.length + 1);
  heads.forEach((h, i) => (offsets[i + 1] = offsets[i] + h.length));
  const bytes = new Uint8Array(offsets[heads.length]);
  heads.forEach((h, i) => bytes.set(h, offsets[i]));
  return {
    name,
    uri: `memory:${name}`,
    count: heads.length,
    bytes,
    offsets,
    stats: {
      shards: 0,
      lines: texts.length,
      records: heads.length,
      skipped: {},
      emptyText: texts.length - heads.length,
      invalidUtf8: 0,
    },
  };
}
