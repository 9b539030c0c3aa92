/**
 * The DataRater φ_η(x) → ℝ: one score per record, computed from the record's bytes.
 *
 * `transformer` (default): bytes are grouped into patches of `patch` bytes (one position each); a
 * position's input is the sum of its real bytes' (offset-in-patch, byte) embeddings plus a learned
 * position embedding; then non-causal pre-norm transformer blocks with a key-padding mask (a
 * position is real when its first byte is), final LayerNorm, mean-pool over real positions, linear
 * head. `patch: 1` is one byte per position.
 * `mlp`: byte embedding, mean-pool over real bytes, GELU MLP (sees no order; cheap).
 * The ONNX export (`training/export-onnx.ts`) mirrors this forward pass exactly.
 *
 * @example
 * ```ts
 * const eta = toTensors(initRaterArrays(cfg.rater, cfg.seqLen, new Rng(1)));
 * const scores = raterScores(eta, cfg.rater, encodeBatch(texts, cfg.seqLen)); // [batch]
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import type { RaterConfig } from "../lib/config.ts";
import { BYTE_VOCAB, type ByteBatch } from "../lib/bytes.ts";
import { gelu, layerNorm, linear, MASK_BIAS, transformerBlock, transformerShapes } from "./nn.ts";
import { initArrays, type ParamArrays, type Params } from "./params.ts";
import type { Rng } from "./rng.ts";

/** Positions the transformer rater runs on for `seqLen` bytes (the last patch may be short). */
export function raterPositions(cfg: Pick<RaterConfig, "patch">, seqLen: number): number {
  return Math.ceil(seqLen / (cfg.patch ?? 1));
}

/** Parameter shapes of a rater for records of at most `seqLen` bytes. */
export function raterShapes(
  cfg: RaterConfig,
  seqLen: number,
): Record<string, number[]> {
  const d = cfg.dModel;
  if (cfg.kind === "mlp") {
    return {
      embed: [BYTE_VOCAB, d],
      "mlp.w1": [d, cfg.hidden],
      "mlp.b1": [cfg.hidden],
      "mlp.w2": [cfg.hidden, 1],
      "mlp.b2": [1],
    };
  }
  return transformerShapes(cfg.patch * BYTE_VOCAB, raterPositions(cfg, seqLen), cfg, 1);
}

/** Freshly initialised rater parameters. */
export function initRaterArrays(
  cfg: RaterConfig,
  seqLen: number,
  rng: Rng,
): ParamArrays {
  return initArrays(raterShapes(cfg, seqLen), rng);
}

/**
 * A batch's constants for the rater, built once outside any gradient tape (the meta-gradient reuses
 * them in the forward and backward passes).
 */
export interface RaterBatchConstants {
  /**
   * mlp: [batch, 256] byte histogram / length, so the mean-pooled embedding is one matmul.
   * transformer: [batch*positions, patch·256 + positions]: per position, a one for each real byte
   * at column offset·256 + byte, and a one at its position's column.
   */
  inputs: tf.Tensor2D;
  /** transformer only: [batch, 1, 1, positions] additive key-padding bias. */
  keyBias?: tf.Tensor;
  /** transformer only: [batch, positions, 1] pooling weights (real positions / their count). */
  pool?: tf.Tensor3D;
  batch: number;
  /** Positions per record: bytes for mlp, ⌈bytes / patch⌉ for transformer. */
  seqLen: number;
}

/** Builds {@link RaterBatchConstants} (dispose with {@link disposeRaterBatch}). */
export function prepareRaterBatch(
  cfg: RaterConfig,
  batch: ByteBatch,
): RaterBatchConstants {
  const { batch: b, seqLen: len, tokens, mask, lengths } = batch;
  if (cfg.kind === "mlp") {
    const hist = new Float32Array(b * BYTE_VOCAB);
    for (let r = 0; r < b * len; r++) {
      const rec = Math.floor(r / len);
      hist[rec * BYTE_VOCAB + tokens[r]] += mask[r] / lengths[rec];
    }
    return { inputs: tf.tensor2d(hist, [b, BYTE_VOCAB]), batch: b, seqLen: len };
  }
  const patch = cfg.patch;
  const positions = raterPositions(cfg, len);
  const vocab = patch * BYTE_VOCAB;
  const width = vocab + positions;
  const inputs = new Float32Array(b * positions * width);
  const bias = new Float32Array(b * positions);
  const pool = new Float32Array(b * positions);
  for (let rec = 0; rec < b; rec++) {
    // Masks are prefixes (encodeBatch), so a position is real iff its first byte is.
    const realPositions = Math.ceil(lengths[rec] / patch);
    for (let p = 0; p < positions; p++) {
      const row = (rec * positions + p) * width;
      for (let j = 0; j < patch; j++) {
        const t = p * patch + j;
        if (t >= len) break;
        const at = rec * len + t;
        if (mask[at]) inputs[row + j * BYTE_VOCAB + tokens[at]] += mask[at];
      }
      inputs[row + vocab + p] = 1;
      const real = mask[rec * len + p * patch];
      bias[rec * positions + p] = (1 - real) * MASK_BIAS;
      pool[rec * positions + p] = real / realPositions;
    }
  }
  return {
    inputs: tf.tensor2d(inputs, [b * positions, width]),
    keyBias: tf.tensor4d(bias, [b, 1, 1, positions]),
    pool: tf.tensor3d(pool, [b, positions, 1]),
    batch: b,
    seqLen: positions,
  };
}

/** Disposes a batch's rater constants. */
export function disposeRaterBatch(c: RaterBatchConstants): void {
  c.inputs.dispose();
  c.keyBias?.dispose();
  c.pool?.dispose();
}

/**
 * Scores from precomputed constants: shape [batch]. Mathematically the forward pass described at
 * the top (embedding, masked mean-pool over real bytes, ...), written as matmuls with constants.
 */
export function raterScoresFromConstants(
  params: Params,
  cfg: RaterConfig,
  c: RaterBatchConstants,
): tf.Tensor1D {
  const { batch: b, seqLen: len } = c;
  if (cfg.kind === "mlp") {
    const pooled = tf.matMul(c.inputs, params.embed as tf.Tensor2D);
    const h = gelu(linear(pooled, params["mlp.w1"], params["mlp.b1"]));
    return tf.reshape(linear(h, params["mlp.w2"], params["mlp.b2"]), [b]) as tf.Tensor1D;
  }
  let x: tf.Tensor = tf.matMul(
    c.inputs,
    tf.concat([params.embed, params.pos], 0) as tf.Tensor2D,
  );
  for (let i = 0; i < cfg.layers; i++) {
    x = transformerBlock(x, params, i, b, len, cfg.heads, c.keyBias!);
  }
  const normed = layerNorm(x, params["lnf.g"], params["lnf.b"]);
  const pooled = tf.sum(tf.mul(tf.reshape(normed, [b, len, cfg.dModel]), c.pool!), 1);
  return tf.reshape(linear(pooled, params["head.w"], params["head.b"]), [b]) as tf.Tensor1D;
}

/** Scores of a batch of records: shape [batch]. */
export function raterScores(
  params: Params,
  cfg: RaterConfig,
  batch: ByteBatch,
): tf.Tensor1D {
  const c = prepareRaterBatch(cfg, batch);
  try {
    return raterScoresFromConstants(params, cfg, c);
  } finally {
    disposeRaterBatch(c);
  }
}

/**
 * Inference FLOPs per record of the exported rater (matmuls and attention; the embedding is a
 * gather in ONNX and costs no multiply-adds), for the compute-gain accounting.
 */
export function raterFlopsPerRecord(cfg: RaterConfig, seqLen: number): number {
  const d = cfg.dModel;
  if (cfg.kind === "mlp") return 2 * (d * cfg.hidden + cfg.hidden);
  seqLen = raterPositions(cfg, seqLen);
  const perLayer = seqLen * 2 * (d * 3 * d + d * d + 2 * d * cfg.ffn) +
    2 * 2 * seqLen * seqLen * d;
  return cfg.layers * perLayer + 2 * d;
}
