/**
 * How a whole record is rated: its UTF-8 bytes, up to a cap, are cut into windows of the rater's
 * width (`window` bytes, every `stride` bytes); the rater scores each window, and the record's score
 * is an aggregate of the window scores. Each window's score is kept as a span
 * `[start, end, score]` (byte offsets into the record's UTF-8 text, end exclusive), so a trainer that
 * packs sequences can drop a bad span and keep the rest.
 *
 * The same plan is used by the meta-trainer's tests, the scorer and the ONNX export's metadata, so
 * the unit the rater rates when scoring is the unit the learners train on.
 *
 * @example
 * ```ts
 * const { spans, truncated } = windowSpans(150, { window: 64, stride: 64, cap: 16384 });
 * // spans: [[0, 64], [64, 128], [128, 150]], truncated: false
 * aggregateScores([1, 2, 4], spans, "mean"); // byte-weighted mean
 * ```
 */

/** How a record's window scores become its score. */
export const AGGREGATIONS = ["mean", "min"] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

/** The scored bytes per record when nothing else is said (16 KiB). */
export const DEFAULT_SCORE_CAP_BYTES = 16 * 1024;

export interface WindowPlan {
  /** Bytes the rater reads per window. */
  window: number;
  /** Bytes between window starts (`window` tiles the record exactly). */
  stride: number;
  /** Bytes of a record that are scored; bytes past it are not read. */
  cap: number;
}

/** A window: byte offsets `[start, end)` into a record's UTF-8 bytes. */
export type Window = [start: number, end: number];

/**
 * The windows that cover the first `min(byteLength, cap)` bytes of a record. Starts are
 * `0, stride, 2·stride, …` while they fall inside the covered bytes; a window ends at
 * `min(start + window, covered)`. An empty record has one empty window `[0, 0]` so that every record
 * has a score. With `stride === window` the windows tile the covered bytes exactly.
 */
export function windowSpans(
  byteLength: number,
  plan: WindowPlan,
): { spans: Window[]; truncated: boolean } {
  const { window, stride, cap } = plan;
  if (!(window >= 1 && stride >= 1 && stride <= window && cap >= 1)) {
    throw new RangeError(
      `window plan needs 1 ≤ stride ≤ window and cap ≥ 1 (window ${window}, stride ${stride}, cap ${cap})`,
    );
  }
  const covered = Math.min(byteLength, cap);
  const spans: Window[] = [];
  for (let start = 0; start < covered; start += stride) {
    const end = Math.min(start + window, covered);
    spans.push([start, end]);
    if (end === covered) break; // a later start would only re-read the tail
  }
  if (spans.length === 0) spans.push([0, 0]);
  return { spans, truncated: byteLength > cap };
}

/**
 * {@link windowSpans} of a record's `bytes`, each window's bytes (views of `bytes`) appended to
 * `into`: what every scorer of whole records feeds its model.
 */
export function cutWindows(
  bytes: Uint8Array,
  plan: WindowPlan,
  into: Uint8Array[],
): { spans: Window[]; truncated: boolean } {
  const cut = windowSpans(bytes.length, plan);
  for (const [start, end] of cut.spans) into.push(bytes.subarray(start, end));
  return cut;
}

/**
 * A record's score from its window scores. `mean` weighs each window by the bytes it adds that no
 * earlier window covered (so overlapping strides do not count a byte twice; an empty record's one
 * window weighs 1); `min` is the worst window, the strictest policy for a junk block.
 */
export function aggregateScores(
  scores: ArrayLike<number>,
  spans: readonly Window[],
  aggregation: Aggregation,
): number {
  if (scores.length !== spans.length || spans.length === 0) {
    throw new RangeError(`${scores.length} scores for ${spans.length} windows`);
  }
  if (aggregation === "min") {
    let m = Infinity;
    for (let i = 0; i < scores.length; i++) m = Math.min(m, scores[i]);
    return m;
  }
  let sum = 0;
  let weight = 0;
  let coveredTo = 0;
  for (let i = 0; i < spans.length; i++) {
    const [start, end] = spans[i];
    const w = Math.max(end - Math.max(start, coveredTo), 0) || (end === start ? 1 : 0);
    coveredTo = Math.max(coveredTo, end);
    sum += w * scores[i];
    weight += w;
  }
  return weight > 0 ? sum / weight : scores[0];
}
