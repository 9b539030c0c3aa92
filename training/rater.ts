/**
 * The DataRater φ_η(x) → ℝ: one score per record, computed from the record's bytes.
 *
 * `transformer` (default): byte embedding + learned positions, non-causal pre-norm transformer
 * blocks with a key-padding mask, final LayerNorm, mean-pool over real bytes, linear head.
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
import {
  blockShapes,
  embed,
  gelu,
  initArrays,
  layerNorm,
  linear,
  MASK_BIAS,
  type ParamArrays,
  type Params,
  transformerBlock,
} from "./nn.ts";
import type { Rng } from "./rng.ts";

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
  let shapes: Record<string, number[]> = {
    embed: [BYTE_VOCAB, d],
    pos: [seqLen, d],
  };
  for (let i = 0; i < cfg.layers; i++) {
    shapes = { ...shapes, ...blockShapes(i, d, cfg.ffn) };
  }
  return {
    ...shapes,
    "lnf.g": [d],
    "lnf.b": [d],
    "head.w": [d, 1],
    "head.b": [1],
  };
}

/** Freshly initialised rater parameters. */
export function initRaterArrays(
  cfg: RaterConfig,
  seqLen: number,
  rng: Rng,
): ParamArrays {
  return initArrays(raterShapes(cfg, seqLen), rng);
}

/** Mean over each record's real bytes: x [b*len, d] → [b, d]. */
function maskedMeanPool(
  x: tf.Tensor,
  mask: tf.Tensor2D,
  lengths: tf.Tensor1D,
  b: number,
  len: number,
) {
  const d = x.shape[x.shape.length - 1]!;
  const summed = tf.sum(
    tf.mul(tf.reshape(x, [b, len, d]), tf.expandDims(mask, 2)),
    1,
  );
  return tf.div(summed, tf.expandDims(lengths, 1));
}

/** Scores of a batch of records: shape [batch]. */
export function raterScores(
  params: Params,
  cfg: RaterConfig,
  batch: ByteBatch,
): tf.Tensor1D {
  const { batch: b, seqLen: len } = batch;
  const tokens = tf.tensor1d(batch.tokens, "int32");
  const mask = tf.tensor2d(batch.mask, [b, len]);
  const lengths = tf.tensor1d(Float32Array.from(batch.lengths));
  let x = embed(tokens, params.embed, BYTE_VOCAB);
  if (cfg.kind === "mlp") {
    const pooled = maskedMeanPool(x, mask, lengths, b, len);
    const h = gelu(linear(pooled, params["mlp.w1"], params["mlp.b1"]));
    return tf.reshape(linear(h, params["mlp.w2"], params["mlp.b2"]), [
      b,
    ]) as tf.Tensor1D;
  }
  x = tf.reshape(tf.add(tf.reshape(x, [b, len, cfg.dModel]), params.pos), [
    b * len,
    cfg.dModel,
  ]);
  // Padded keys get a large negative bias: [b, 1, 1, len] broadcasts over heads and queries.
  const bias = tf.reshape(tf.mul(tf.sub(1, mask), MASK_BIAS), [b, 1, 1, len]);
  for (let i = 0; i < cfg.layers; i++) {
    x = transformerBlock(x, params, i, b, len, cfg.heads, bias);
  }
  const pooled = maskedMeanPool(
    layerNorm(x, params["lnf.g"], params["lnf.b"]),
    mask,
    lengths,
    b,
    len,
  );
  return tf.reshape(linear(pooled, params["head.w"], params["head.b"]), [
    b,
  ]) as tf.Tensor1D;
}

/**
 * Inference FLOPs per record of the exported rater (matmuls and attention; the embedding is a
 * gather in ONNX and costs no multiply-adds), for the compute-gain accounting.
 */
export function raterFlopsPerRecord(cfg: RaterConfig, seqLen: number): number {
  const d = cfg.dModel;
  if (cfg.kind === "mlp") return 2 * (d * cfg.hidden + cfg.hidden);
  const perLayer = seqLen * 2 * (d * 3 * d + d * d + 2 * d * cfg.ffn) +
    2 * 2 * seqLen * seqLen * d;
  return cfg.layers * perLayer + 2 * d;
}
