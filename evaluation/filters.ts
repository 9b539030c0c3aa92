/**
 * The baselines the DataRater is compared against, as keep decisions over a dataset's records:
 * C4/Gopher heuristics (which also rewrite a record, removing lines), perplexity filtering that
 * keeps the middle of the perplexity distribution, random dropping, quality-classifier filtering
 * that keeps the top scores (the fastText baseline, trained in `./fasttext.ts`), and the oracle
 * that keeps clean prose by its true source label (the ceiling; it reads `source`, which nothing
 * else does).
 *
 * @example
 * ```ts
 * const kept = randomFilter(records, 0.25, 0); // drops a seeded 25%
 * ```
 */
import { Rng } from "../training/rng.ts";
import { lmFlopsPerByte } from "../training/lm.ts";
import { disposeParams, type Params } from "../training/nn.ts";
import { aggregateScores, cutWindows, DEFAULT_SCORE_CAP_BYTES } from "../lib/windows.ts";
import type { EvalRecord } from "./data.ts";
import { heuristicFilter } from "./heuristics.ts";
import { type DownstreamConfig, perRecordNll, trainDownstream } from "./trainer.ts";

/** A filter's output: the records to train on (text possibly rewritten) and its inference cost. */
export interface FilterOutput {
  kept: EvalRecord[];
  /** FLOPs spent deciding (model inference over every record scored); 0 for rules. */
  inferenceFlops: number;
  /** Why records were dropped (heuristics), counted. */
  reasons?: Record<string, number>;
}

/** C4 line/document rules then Gopher's rules; kept records carry C4's cleaned text. */
export function heuristicBaseline(records: readonly EvalRecord[]): FilterOutput {
  const kept: EvalRecord[] = [];
  const reasons: Record<string, number> = {};
  for (const r of records) {
    const res = heuristicFilter(r.text);
    if (res.keep) kept.push({ ...r, text: res.text });
    else reasons[res.reason] = (reasons[res.reason] ?? 0) + 1;
  }
  return { kept, inferenceFlops: 0, reasons };
}

/** Drops a seeded random `discard` fraction (exactly round(n·discard) records). */
export function randomFilter(
  records: readonly EvalRecord[],
  discard: number,
  seed: number,
): FilterOutput {
  const rng = new Rng(seed);
  const order = records.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const dropped = new Set(order.slice(0, Math.round(records.length * discard)));
  return { kept: records.filter((_, i) => !dropped.has(i)), inferenceFlops: 0 };
}

/** Keeps records whose true source is clean prose (the ceiling: uses the label no filter sees). */
export function oracleFilter(records: readonly EvalRecord[]): FilterOutput {
  return { kept: records.filter((r) => r.source === "prose"), inferenceFlops: 0 };
}

/**
 * Drops exactly the corrupted records by their true source and keeps prose and email: what a filter
 * that removes only the junk can be worth (a second ceiling, for a rater whose objective includes
 * email).
 */
export function noCorruptOracleFilter(records: readonly EvalRecord[]): FilterOutput {
  return { kept: records.filter((r) => !r.source.startsWith("corrupt/")), inferenceFlops: 0 };
}

/**
 * Keeps the middle `1 - discard` of the scores: drops `discard/2` with the lowest and `discard/2`
 * with the highest (ties broken by position, so the result is deterministic).
 */
export function keepMiddle<T>(
  items: readonly T[],
  scores: ArrayLike<number>,
  discard: number,
): T[] {
  const order = items.map((_, i) => i).sort((a, b) => scores[a] - scores[b] || a - b);
  const drop = Math.round(items.length * discard);
  const low = Math.floor(drop / 2);
  const keep = new Set(order.slice(low, items.length - (drop - low)));
  return items.filter((_, i) => keep.has(i));
}

/**
 * Keeps the highest-scored `1 - discard`: drops exactly round(n·discard) records, the lowest scores
 * first (ties broken by position, so the result is deterministic).
 */
export function keepTop<T>(items: readonly T[], scores: ArrayLike<number>, discard: number): T[] {
  const order = items.map((_, i) => i).sort((a, b) => scores[a] - scores[b] || a - b);
  const dropped = new Set(order.slice(0, Math.round(items.length * discard)));
  return items.filter((_, i) => !dropped.has(i));
}

/** A quality classifier's P(hq) of every record of the train split, in order. */
export interface ClassifierScores {
  scores: Float64Array;
  /** Classifier inference FLOPs over all records scored (charged to the filter's gain). */
  inferenceFlops: number;
}

/** DCLM-style classifier filtering: keep the records the classifier rates most like the target. */
export function classifierFilter(
  records: readonly EvalRecord[],
  scorer: ClassifierScores,
  discard: number,
): FilterOutput {
  return { kept: keepTop(records, scorer.scores, discard), inferenceFlops: scorer.inferenceFlops };
}

/** Per-record perplexity scores from a small LM trained on held-out data. */
export interface PerplexityScorer {
  /** Mean NLL per byte of each record (all its bytes up to the scorer's cap), in the order given. */
  nll: Float64Array;
  /** Inference FLOPs over all records scored. */
  inferenceFlops: number;
  /** The scorer's own final NLL on the held-out data it was trained on. */
  trainLoss: number;
}

/**
 * Trains a small LM on `heldout` (the reference data) with `config` and scores every record of
 * `records` by its NLL per byte (the log of perplexity).
 */
export async function perplexityScores(
  heldout: readonly string[],
  records: readonly EvalRecord[],
  config: DownstreamConfig,
  onProgress?: (step: number, steps: number) => void,
): Promise<PerplexityScorer> {
  let params: Params | null = null;
  const result = await trainDownstream(
    heldout,
    {},
    config,
    (p) => onProgress?.(p.step, p.steps),
    (p) => (params = p),
  );
  try {
    return {
      ...wholeRecordNll(params!, config, records),
      trainLoss: result.finalTrainLoss,
    };
  } finally {
    disposeParams(params!);
  }
}

/**
 * Each record's NLL per byte over all its bytes up to the scorer's cap, read in `seqLen` windows
 * as the DataRater scorer reads it (lib/windows.ts), so the perplexity baseline sees a junk body
 * too; the byte-weighted mean of the windows' NLLs is the record's.
 */
function wholeRecordNll(
  params: Params,
  config: DownstreamConfig,
  records: readonly EvalRecord[],
): Omit<PerplexityScorer, "trainLoss"> {
  const plan = { window: config.seqLen, stride: config.seqLen, cap: DEFAULT_SCORE_CAP_BYTES };
  const encoder = new TextEncoder();
  const windows: Uint8Array[] = [];
  const perRecord = records.map((r) => {
    const bytes = encoder.encode(r.text);
    return cutWindows(bytes, plan, windows).spans;
  });
  const windowNll = perRecordNll(params, config.lm, windows, config.seqLen, config.evalBatch);
  let next = 0;
  const nll = Float64Array.from(perRecord, (spans) => {
    const scores = windowNll.subarray(next, next + spans.length);
    next += spans.length;
    return aggregateScores(scores, spans, "mean");
  });
  const scoredBytes = perRecord.reduce((a, spans) => a + spans[spans.length - 1][1], 0);
  return {
    nll,
    inferenceFlops: scoredBytes * lmFlopsPerByte(config.lm, config.seqLen).forward,
  };
}

/** Perplexity filtering: keep the middle `1 - discard` of the perplexity distribution. */
export function perplexityFilter(
  records: readonly EvalRecord[],
  scorer: PerplexityScorer,
  discard: number,
): FilterOutput {
  return { kept: keepMiddle(records, scorer.nll, discard), inferenceFlops: scorer.inferenceFlops };
}

/** Fraction of each source's records that a filter kept. */
export function keepRatesBySource(
  all: readonly EvalRecord[],
  kept: readonly { source: string }[],
): Record<string, number> {
  const total: Record<string, number> = {};
  const k: Record<string, number> = {};
  for (const r of all) total[r.source] = (total[r.source] ?? 0) + 1;
  for (const r of kept) k[r.source] = (k[r.source] ?? 0) + 1;
  return Object.fromEntries(
    Object.keys(total).sort().map((s) => [s, (k[s] ?? 0) / total[s]]),
  );
}

/**
 * Fraction of each source's records a filter kept, split by where a record's junk sits (`head`,
 * `body`; `n/a` where the corpus does not say, e.g. clean prose, email, or a corpus without the
 * field). Kept records are matched by shard and line, so a filter that rewrites text counts too.
 */
export function keepRatesByPosition(
  all: readonly EvalRecord[],
  kept: readonly Pick<EvalRecord, "shard" | "line">[],
): Record<string, Record<string, number>> {
  const keptKeys = new Set(kept.map((r) => `${r.shard}#${r.line}`));
  const total: Record<string, Record<string, [number, number]>> = {};
  for (const r of all) {
    const c = ((total[r.source] ??= {})[r.position ?? "n/a"] ??= [0, 0]);
    c[0]++;
    if (keptKeys.has(`${r.shard}#${r.line}`)) c[1]++;
  }
  return Object.fromEntries(
    Object.keys(total).sort().map((s) => [
      s,
      Object.fromEntries(
        Object.keys(total[s]).sort().map((p) => [p, total[s][p][1] / total[s][p][0]]),
      ),
    ]),
  );
}
