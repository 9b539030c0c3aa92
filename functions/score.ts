/**
 * Scoring one shard: stream its records from storage, cut each record's first `cap` UTF-8 bytes
 * into the model's windows (lib/windows.ts: the `datarater.scoring` spec of the export), score the
 * windows of a chunk of records in batches in the inference pool, aggregate each record's window
 * scores into its score, decide keep/drop by the policy on record scores, spool the manifest
 * (with each record's spans), and write it create-only once the whole shard is scored (so a
 * failure mid-shard leaves no manifest at all).
 *
 * Memory is bounded by the batch size (in windows, plus one record's) × pipeline depth, the cap,
 * the longest line, and the set of ids seen (kept to detect duplicates: about 50–100 bytes per
 * record plus the id's length); the manifest's entries go to a temporary file, not to memory.
 */
import { z } from "zod";
import { sameJson } from "../lib/json.ts";
import { encodeBatch, headBytes } from "../lib/bytes.ts";
import {
  aggregateScores,
  cutWindows,
  DEFAULT_SCORE_CAP_BYTES,
  type Window,
  type WindowPlan,
} from "../lib/windows.ts";
import {
  acceptProbability,
  deterministicUniform,
  percentileOf,
  type ScoreCalibration,
  thresholdForKeepFraction,
} from "../lib/calibration.ts";
import {
  FieldsSchema,
  hashingStream,
  MANIFEST_KIND,
  MANIFEST_VERSION,
  ManifestError,
  type ManifestHeader,
  ManifestSpool,
  MAX_REPORTED_INVALID,
  type Policy,
  PolicySchema,
  readManifestHeaderIfExists,
  ScoreSummaryBuilder,
  type Scoring,
  type Span,
} from "../lib/manifest.ts";
import { type ManifestFormatsResult, ManifestFormatsSchema } from "../lib/manifest-formats.ts";
import {
  ParquetError,
  readRecords,
  RecordError,
  ShardError,
  truncateForMessage,
} from "../lib/records.ts";
import {
  NotFoundError,
  type ObjectInfo,
  PreconditionFailedError,
  type Storage,
} from "../lib/storage.ts";
import { ApiError } from "./errors.ts";
import { InferenceError, type InferencePool } from "./inference.ts";
import type { LoadedModel, ModelCache } from "./models.ts";
import type { ScoringMetrics } from "./metrics.ts";

/**
 * The largest cap a request or the server may set (1 MiB): one record's windows are scored as
 * one chunk, so the cap bounds the memory a single record takes in flight (16 bytes per byte).
 */
export const MAX_SCORE_CAP_BYTES = 2 ** 20;

/** The body of `POST /v1/score`. */
export const ScoreRequestSchema = z.object({
  /** The rater: a DataRater ONNX export. */
  model: z.string().min(1),
  /** One shard: JSON Lines, optionally gzip, or Parquet (told apart by content). */
  input: z.string().min(1),
  /** Where the manifest goes (an object URI, written create-only). */
  output: z.string().min(1),
  policy: PolicySchema,
  fields: FieldsSchema.default({ id: "id", text: "text" }),
  /** Invalid lines (bad JSON, missing fields, invalid UTF-8, duplicate ids): fail, or skip and count. */
  onInvalid: z.enum(["fail", "skip"]).default("fail"),
  /** Also write the manifest as Parquet and/or dolma attributes (lib/manifest-formats.ts). */
  formats: ManifestFormatsSchema.optional(),
  /**
   * UTF-8 bytes of each record that are rated (default: the server's `scoreCapBytes`, 16 KiB; at
   * most 1 MiB); a longer record's tail is not read and its entry says `truncated: true`.
   */
  capBytes: z.number().int().min(1).max(MAX_SCORE_CAP_BYTES).optional(),
}).strict();
export type ScoreRequest = z.infer<typeof ScoreRequestSchema>;

/** The response of `POST /v1/score`. */
export interface ScoreResult {
  manifest: string;
  /** True when the manifest already existed (same model, policy and input): nothing was scored. */
  cached: boolean;
  model: { uri: string; sha256: string };
  input: { uri: string; etag: string | null; sha256: string };
  policy: Policy;
  threshold: number | null;
  counts: ManifestHeader["counts"];
  scores: ManifestHeader["scores"];
  /** How records were windowed (absent only for manifests written before windows). */
  scoring?: Scoring;
  /** Where the requested extra formats are (when `formats` was asked for). */
  formats?: ManifestFormatsResult;
}

/**
 * Bounds on the work and the output one request can cause, whatever its input: ids are stored in
 * memory (duplicate detection) and in the manifest, and a small gzip shard can expand without bound.
 */
export interface ScoreLimits {
  /** Longest id, in UTF-8 bytes (default 1 KiB): longer is an invalid line (`id-too-long`). */
  maxIdBytes: number;
  /** Most bytes a shard may expand to when decompressed, absolutely (default 64 GiB). */
  maxDecompressedBytes: number;
  /**
   * Most bytes a shard may expand to per stored byte (default 64; plain text compresses 3–10×).
   * Shards under 1 MiB stored may always expand to 64 MiB.
   */
  maxExpansion: number;
  /** Most lines (blank ones included) or Parquet rows per shard (default 100 million). */
  maxLines: number;
  /** Longest JSON line, in bytes (default 64 MiB): longer is an invalid line (`line-too-long`). */
  maxLineBytes: number;
  /**
   * UTF-8 bytes of each record that are rated when a request names no `capBytes` (default 16 KiB,
   * at most {@link MAX_SCORE_CAP_BYTES}). A cap above `maxLineBytes` is lowered to it: no text of
   * a valid line is longer, so the manifest records the cap that could bind.
   */
  scoreCapBytes: number;
}

/** The defaults of {@link ScoreLimits}. */
export const DEFAULT_SCORE_LIMITS: ScoreLimits = {
  maxIdBytes: 1024,
  maxDecompressedBytes: 64 * 2 ** 30,
  maxExpansion: 64,
  maxLines: 100_000_000,
  maxLineBytes: 64 * 2 ** 20,
  scoreCapBytes: DEFAULT_SCORE_CAP_BYTES,
};

/** Longest id quoted in an error message or a manifest header's list of invalid lines. */
const MAX_QUOTED_ID_CHARS = 100;
/** Longest reason stored per invalid line in a manifest header (the list holds at most 100). */
const MAX_INVALID_REASON_CHARS = 300;

/** The decompressed-bytes limit for an input of `storedBytes` (see {@link ScoreLimits}). */
export function decompressedLimit(limits: ScoreLimits, storedBytes: number): number {
  return Math.min(
    limits.maxDecompressedBytes,
    Math.max(limits.maxExpansion * storedBytes, limits.maxExpansion * 2 ** 20),
  );
}

/** What {@link scoreShard} needs. */
export interface ScoreDeps {
  storage: Storage;
  models: ModelCache;
  pool: InferencePool;
  metrics: ScoringMetrics;
  batchSize: number;
  /** Batches in flight to the pool while the next one is read and encoded. */
  pipelineDepth: number;
  maxInputBytes: number;
  /** Folder for manifest spool files (default: the system's temporary folder). */
  spoolDir?: string;
  /** Per-request limits (each defaults to {@link DEFAULT_SCORE_LIMITS}). */
  limits?: Partial<ScoreLimits>;
}

/** Decides keep/drop for one scored record. */
export interface Decider {
  /** The raw-score threshold (keep iff score >= threshold); null for per-record policies. */
  threshold: number | null;
  keep(id: string, score: number): boolean;
}

/** The keep/drop rule of a policy under a model's calibration. */
export function makeDecider(policy: Policy, calibration: ScoreCalibration): Decider {
  switch (policy.kind) {
    case "keepFraction": {
      const t = thresholdForKeepFraction(calibration, policy.fraction);
      return { threshold: Number.isFinite(t) ? t : null, keep: (_id, s) => s >= t };
    }
    case "threshold": {
      const t = policy.threshold;
      return { threshold: t, keep: (_id, s) => s >= t };
    }
    case "topK": {
      const { k, b, seed } = policy;
      return {
        threshold: null,
        keep: (id, s) =>
          deterministicUniform(id, seed) < acceptProbability(percentileOf(calibration, s), k, b),
      };
    }
  }
}

/**
 * The header of the manifest already at `uri`, or null if there is none; storage failures and
 * objects that are not manifests become the API's errors.
 */
async function existingManifest(storage: Storage, uri: string): Promise<ManifestHeader | null> {
  try {
    return await readManifestHeaderIfExists(storage, uri);
  } catch (e) {
    if (e instanceof ManifestError) {
      throw new ApiError(
        "conflict",
        `output ${uri} exists and is not a manifest (${e.message}): ` +
          "choose another output URI; it is never overwritten",
        { field: "output", uri },
      );
    }
    throw new ApiError("storage_error", `cannot read ${uri}: ${(e as Error).message}`, { uri });
  }
}

/**
 * An existing manifest answers the request if it was written for the same model, input (same
 * version), policy, fields and invalid-line handling; otherwise the request conflicts with it.
 */
export function resultFromExisting(
  header: ManifestHeader,
  req: ScoreRequest,
  model: LoadedModel,
  input: ObjectInfo,
  cap?: number,
): ScoreResult {
  const diffs: string[] = [];
  if (header.model.sha256 !== model.sha256) {
    diffs.push(
      `it was written by model sha256 ${header.model.sha256}, this request's is ${model.sha256}`,
    );
  }
  if (header.input.uri !== req.input) {
    diffs.push(`it was written for input ${header.input.uri}`);
  } else if (header.input.etag && input.etag && header.input.etag !== input.etag) {
    diffs.push(`the input changed since (ETag ${header.input.etag}, now ${input.etag})`);
  }
  const differs = (what: string, theirs: unknown, ours: unknown) =>
    diffs.push(`its ${what} is ${JSON.stringify(theirs)}, this request's ${JSON.stringify(ours)}`);
  if (!sameJson(header.policy, req.policy)) differs("policy", header.policy, req.policy);
  if (!sameJson(header.fields, req.fields)) differs("fields", header.fields, req.fields);
  if (header.onInvalid !== req.onInvalid) differs("onInvalid", header.onInvalid, req.onInvalid);
  if (cap !== undefined && header.scoring?.cap !== cap) {
    differs("scoring cap", header.scoring?.cap ?? null, cap);
  }
  if (diffs.length) {
    throw new ApiError(
      "conflict",
      `manifest ${req.output} already exists for a different request (${diffs.join("; ")}): ` +
        "it is never overwritten; write to another output URI or delete it first",
      {
        field: "output",
        uri: req.output,
        existing: { model: header.model, policy: header.policy },
      },
    );
  }
  return resultFromHeader(req.output, header, true);
}

function resultFromHeader(uri: string, h: ManifestHeader, cached: boolean): ScoreResult {
  return {
    manifest: uri,
    cached,
    model: { uri: h.model.uri, sha256: h.model.sha256 },
    input: { uri: h.input.uri, etag: h.input.etag, sha256: h.input.sha256 },
    policy: h.policy,
    threshold: h.threshold,
    counts: h.counts,
    scores: h.scores,
    scoring: h.scoring,
  };
}

async function statInput(storage: Storage, uri: string): Promise<ObjectInfo> {
  let info: ObjectInfo | null;
  try {
    info = await storage.stat(uri);
  } catch (e) {
    throw new ApiError("storage_error", `cannot read input ${uri}: ${(e as Error).message}`, {
      uri,
    });
  }
  if (!info) {
    throw new ApiError("not_found", `input ${uri} does not exist`, { field: "input", uri });
  }
  return info;
}

function recordErrorToApi(e: RecordError, uri: string): ApiError {
  return new ApiError(
    "invalid_record",
    `input ${uri} ${
      truncateForMessage(e.message, MAX_INVALID_REASON_CHARS)
    }; fix the line, or send "onInvalid": "skip" to skip and count invalid lines`,
    { field: "input", uri, line: e.line, kind: e.kind },
  );
}

/**
 * Scores one shard and writes its manifest (see the module documentation). Throws
 * {@link ApiError} for every failure the caller should see. `signal` aborts (a timeout).
 */
export async function scoreShard(
  deps: ScoreDeps,
  req: ScoreRequest,
  signal: AbortSignal,
): Promise<ScoreResult> {
  const { storage, metrics } = deps;
  const limits: ScoreLimits = { ...DEFAULT_SCORE_LIMITS, ...deps.limits };
  const input = await statInput(storage, req.input);
  if (input.size > deps.maxInputBytes) {
    throw new ApiError(
      "payload_too_large",
      `input ${req.input} is ${input.size} bytes, over the ${deps.maxInputBytes}-byte limit ` +
        "(DATARATER_MAX_INPUT_BYTES): split the shard",
      { field: "input", uri: req.input, size: input.size },
    );
  }
  const cap = Math.min(
    req.capBytes ?? limits.scoreCapBytes,
    MAX_SCORE_CAP_BYTES,
    limits.maxLineBytes,
  );
  const model = await deps.models.get(req.model);
  const existing = await existingManifest(storage, req.output);
  if (existing) return resultFromExisting(existing, req, model, input, cap);
  const plan: WindowPlan = { window: model.scoring.window, stride: model.scoring.stride, cap };
  const aggregation = model.scoring.aggregation;

  const decider = makeDecider(req.policy, model.calibration);
  const spool = await ManifestSpool.create(deps.spoolDir);
  try {
    let raw: ReadableStream<Uint8Array>;
    try {
      raw = await storage.read(req.input);
    } catch (e) {
      if (e instanceof NotFoundError) {
        throw new ApiError("not_found", `input ${req.input} does not exist`, {
          field: "input",
          uri: req.input,
        });
      }
      throw new ApiError(
        "storage_error",
        `cannot read input ${req.input}: ${(e as Error).message}`,
        {
          field: "input",
          uri: req.input,
        },
      );
    }
    // Abort the download itself on timeout, not just the loop around it.
    const abortable = raw.pipeThrough(new TransformStream<Uint8Array, Uint8Array>(), { signal });
    const hashed = hashingStream(abortable);

    const invalid: { line: number; error: string }[] = [];
    let skippedInvalid = 0;
    const skip = (line: number, error: string) => {
      skippedInvalid++;
      if (invalid.length < MAX_REPORTED_INVALID) {
        invalid.push({ line, error: truncateForMessage(error, MAX_INVALID_REASON_CHARS) });
      }
    };
    const records = readRecords(storage, hashed.stream, {
      idField: req.fields.id,
      textField: req.fields.text,
      onInvalid: req.onInvalid,
      onSkip: (e) => skip(e.line, e.message.replace(/^line \d+: /, "")),
      // Parquet: rows come from ranged reads of the input (only its id and text columns), while
      // this stream is still read whole, so the hash covers every stored byte and aborts apply.
      uri: req.input,
      size: input.size,
      // Ranged reads are pinned to the version whose ETag the manifest records.
      etag: input.etag,
      columns: [],
      maxIdBytes: limits.maxIdBytes,
      maxDecompressedBytes: decompressedLimit(limits, input.size),
      maxLines: limits.maxLines,
      maxLineBytes: limits.maxLineBytes,
      // The model reads cap bytes of each text (one more tells a cut record): a 60 MB text need
      // not reach this thread whole.
      textHead: cap + 1,
    });

    const summary = new ScoreSummaryBuilder();
    let kept = 0;
    let dropped = 0;
    const seen = new Map<string, number>();
    // A chunk of records: their windows, one after another, are scored in one pool call.
    type Chunk = {
      ids: string[];
      lines: number[];
      spans: Window[][];
      truncated: boolean[];
      windows: Uint8Array[];
    };
    type Pending = Chunk & { scores: Promise<Float32Array> };
    const queue: Pending[] = [];
    const newChunk = (): Chunk => ({ ids: [], lines: [], spans: [], truncated: [], windows: [] });
    let chunk = newChunk();

    const drainOne = async () => {
      const p = queue.shift()!;
      const scores = await p.scores;
      let at = 0;
      for (let i = 0; i < p.ids.length; i++) {
        const windows = p.spans[i];
        const windowScores = scores.subarray(at, at + windows.length);
        at += windows.length;
        const score = windowScores.every(Number.isFinite)
          ? aggregateScores(windowScores, windows, aggregation)
          : NaN;
        if (!Number.isFinite(score)) {
          throw new ApiError(
            "inference_error",
            `model ${req.model} produced a non-finite score (${
              windowScores.find((s) => !Number.isFinite(s)) ?? score
            }) for line ${p.lines[i]} of ` +
              `${req.input}: the rater is diverged; re-export it`,
            { line: p.lines[i] },
          );
        }
        const keep = decider.keep(p.ids[i], score);
        if (keep) kept++;
        else dropped++;
        summary.add(score);
        const spans: Span[] = windows.map(([start, end], j) => [start, end, windowScores[j]]);
        await spool.add({
          id: p.ids[i],
          line: p.lines[i],
          score,
          keep,
          spans,
          truncated: p.truncated[i] || undefined,
        });
      }
    };
    const dispatch = async () => {
      const batch = encodeBatch(chunk.windows, plan.window);
      const scores = deps.pool.score(model.sha256, batch);
      scores.catch(() => {}); // awaited in order by drainOne; don't report it unhandled meanwhile
      queue.push({ ...chunk, windows: [], scores });
      chunk = newChunk();
      while (queue.length > deps.pipelineDepth) await drainOne();
    };

    try {
      for await (const r of records) {
        if (r.invalidUtf8) {
          const why = "is not valid UTF-8";
          if (req.onInvalid === "fail") {
            throw new ApiError(
              "invalid_record",
              `input ${req.input} line ${r.line} ${why}; fix the encoding, or send "onInvalid": "skip"`,
              { field: "input", uri: req.input, line: r.line, kind: "invalid-utf8" },
            );
          }
          skip(r.line, why);
          continue;
        }
        const first = seen.get(r.id);
        if (first !== undefined) {
          const quoted = truncateForMessage(JSON.stringify(r.id), MAX_QUOTED_ID_CHARS);
          const why = `duplicate id ${quoted} (first at line ${first})`;
          if (req.onInvalid === "fail") {
            throw new ApiError(
              "duplicate_id",
              `input ${req.input} line ${r.line}: ${why}; ids must be unique within a shard, ` +
                `or send "onInvalid": "skip" to keep the first and skip the rest`,
              {
                field: "input",
                uri: req.input,
                line: r.line,
                id: truncateForMessage(r.id, MAX_QUOTED_ID_CHARS),
                firstLine: first,
              },
            );
          }
          skip(r.line, why);
          continue;
        }
        seen.set(r.id, r.line);
        // One byte past the cap says whether the record is longer than it.
        const bytes = headBytes(r.text, cap + 1);
        const { spans, truncated } = cutWindows(bytes, plan, chunk.windows);
        chunk.ids.push(r.id);
        chunk.lines.push(r.line);
        chunk.spans.push(spans);
        chunk.truncated.push(truncated);
        if (chunk.windows.length >= deps.batchSize) await dispatch();
      }
      if (chunk.ids.length) await dispatch();
      while (queue.length) await drainOne();
    } catch (e) {
      await records.return(undefined).catch(() => {});
      if (signal.aborted) throw signal.reason;
      if (e instanceof RecordError) throw recordErrorToApi(e, req.input);
      if (e instanceof ShardError) {
        throw e.kind === "corrupt-gzip"
          ? new ApiError(
            "invalid_record",
            `input ${req.input} ${e.message}: it is truncated or corrupt; re-upload it`,
            { field: "input", uri: req.input, kind: e.kind },
          )
          : new ApiError(
            "payload_too_large",
            `input ${req.input}: ${e.message}, the limit for this request ` +
              `(${
                e.kind === "too-many-lines" ? "maxLines" : "maxDecompressedBytes, maxExpansion"
              }` +
              "): split the shard",
            { field: "input", uri: req.input, kind: e.kind, limit: e.limit },
          );
      }
      if (e instanceof ParquetError) {
        throw new ApiError(
          e.kind === "row-group-too-large" ? "payload_too_large" : "invalid_record",
          `cannot read Parquet input: ${e.message}`,
          { field: "input", uri: req.input, kind: e.kind },
        );
      }
      if (e instanceof InferenceError) {
        throw new ApiError("inference_error", `scoring ${req.input} failed: ${e.message}`, {
          uri: req.input,
        });
      }
      if (e instanceof ApiError) throw e;
      throw new ApiError(
        "storage_error",
        `reading input ${req.input} failed mid-shard: ${(e as Error).message}; nothing was written`,
        { field: "input", uri: req.input },
      );
    }

    const records_ = kept + dropped;
    if (records_ === 0 && skippedInvalid === 0) {
      throw new ApiError(
        "empty_shard",
        `input ${req.input} has no records (it is empty or only blank lines): nothing to score, ` +
          "and no manifest was written",
        { field: "input", uri: req.input },
      );
    }
    metrics.records.inc({ outcome: "kept" }, kept);
    metrics.records.inc({ outcome: "dropped" }, dropped);
    metrics.records.inc({ outcome: "skipped" }, skippedInvalid);

    const header: ManifestHeader = {
      kind: MANIFEST_KIND,
      version: MANIFEST_VERSION,
      createdAt: new Date().toISOString(),
      model: {
        uri: req.model,
        sha256: model.sha256,
        format: model.format,
        maxLength: model.seqLen,
      },
      input: { uri: req.input, etag: input.etag, sha256: hashed.digest(), size: hashed.size() },
      fields: req.fields,
      onInvalid: req.onInvalid,
      policy: req.policy,
      threshold: decider.threshold,
      counts: { records: records_, kept, dropped, skippedInvalid },
      invalid,
      scores: summary.summary(),
      scoring: { ...model.scoring, cap },
    };
    if (signal.aborted) throw signal.reason;
    try {
      // Known length: S3 gets one streaming PUT instead of a buffered body.
      const contentLength = await spool.byteLength(header);
      await storage.write(req.output, spool.stream(header), {
        ifNoneMatch: "*",
        contentType: "application/x-ndjson",
        contentLength,
      });
    } catch (e) {
      if (e instanceof PreconditionFailedError) {
        // Someone else wrote it meanwhile: theirs stands; answer as for an existing manifest.
        const theirs = await existingManifest(storage, req.output);
        if (theirs) return resultFromExisting(theirs, req, model, input);
      }
      throw new ApiError(
        "storage_error",
        `writing manifest ${req.output} failed: ${(e as Error).message}`,
        { field: "output", uri: req.output },
      );
    }
    return resultFromHeader(req.output, header, false);
  } finally {
    await spool.dispose();
  }
}
