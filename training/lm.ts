/**
 * The learner: a small causal byte-level transformer LM. The inner models of meta-training and the
 * downstream LMs of the evaluation are both this model.
 *
 * @example
 * ```ts
 * const params = toTensors(initLmArrays(cfg, 64, new Rng(0)));
 * const batch = encodeBatch(texts, 64);
 * const perRecord = lmLossPerRecord(params, cfg, batch); // [batch] mean NLL per byte, in nats
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import { BYTE_VOCAB, type ByteBatch, LM_INPUT_VOCAB, lmInputs } from "../lib/bytes.ts";
import {
  layerNorm,
  linear,
  logSoftmax,
  MASK_BIAS,
  transformerBlock,
  transformerShapes,
} from "./nn.ts";
import { initArrays, type ParamArrays, type Params } from "./params.ts";
import type { Rng } from "./rng.ts";

/** Model sizes of a learner (a subset of the inner-model config). */
export interface LmSizes {
  dModel: number;
  layers: number;
  heads: number;
  ffn: number;
}

/** Parameter shapes of an LM for sequences of `seqLen` bytes. */
export function lmShapes(
  cfg: LmSizes,
  seqLen: number,
): Record<string, number[]> {
  return transformerShapes(LM_INPUT_VOCAB, seqLen, cfg, BYTE_VOCAB);
}

/** Freshly initialised LM parameters. */
export function initLmArrays(
  cfg: LmSizes,
  seqLen: number,
  rng: Rng,
): ParamArrays {
  return initArrays(lmShapes(cfg, seqLen), rng);
}

const causalBiasCache = new Map<number, tf.Tensor>();

/** [len, len] additive causal mask; cached per length (kept out of tidy scopes). */
function causalBias(len: number): tf.Tensor {
  let bias = causalBiasCache.get(len);
  if (!bias || bias.isDisposed) {
    const values = new Float32Array(len * len);
    for (let i = 0; i < len; i++) {
      for (let j = i + 1; j < len; j++) values[i * len + j] = MASK_BIAS;
    }
    bias = tf.keep(tf.tensor(values, [len, len]));
    causalBiasCache.set(len, bias);
  }
  return bias;
}

/** Forgets cached constants (call after switching tfjs backends). */
export function resetLmCaches(): void {
  for (const t of causalBiasCache.values()) t.dispose();
  causalBiasCache.clear();
}

/**
 * A batch's constants for the LM, built once outside any gradient tape and reused across the
 * unrolled inner steps and the meta-gradient's backward pass (building one-hot inputs inside the
 * tape would redo the work at every use).
 */
export interface LmBatchConstants {
  /** [batch*len, 257 + len]: one-hot of the input byte (BOS = 256) and of the position. */
  inputs: tf.Tensor2D;
  /** [batch*len, 256]: one-hot of the target byte. */
  targets: tf.Tensor2D;
  /** [batch, len]: mask / length, so a record's mean NLL is Σ_t nll·tokenWeights. */
  tokenWeights: tf.Tensor2D;
  batch: number;
  seqLen: number;
}

/** Builds {@link LmBatchConstants} for a batch (dispose with {@link disposeLmBatch}). */
export function prepareLmBatch(batch: ByteBatch): LmBatchConstants {
  const { batch: b, seqLen: len } = batch;
  const width = LM_INPUT_VOCAB + len;
  const inputIds = lmInputs(batch);
  const inputs = new Float32Array(b * len * width);
  const targets = new Float32Array(b * len * BYTE_VOCAB);
  const weights = new Float32Array(b * len);
  for (let r = 0; r < b * len; r++) {
    inputs[r * width + inputIds[r]] = 1;
    inputs[r * width + LM_INPUT_VOCAB + (r % len)] = 1;
    targets[r * BYTE_VOCAB + batch.tokens[r]] = 1;
    weights[r] = batch.mask[r] / batch.lengths[Math.floor(r / len)];
  }
  return {
    inputs: tf.tensor2d(inputs, [b * len, width]),
    targets: tf.tensor2d(targets, [b * len, BYTE_VOCAB]),
    tokenWeights: tf.tensor2d(weights, [b, len]),
    batch: b,
    seqLen: len,
  };
}

/** Disposes a batch's constants. */
export function disposeLmBatch(c: LmBatchConstants): void {
  c.inputs.dispose();
  c.targets.dispose();
  c.tokenWeights.dispose();
}

/**
 * Next-byte NLL (nats) at every position: shape [batch, len], padded positions included (weight
 * them with `tokenWeights`). The embedding and the learned positions are one matmul of the
 * concatenated one-hots with the stacked tables.
 */
export function lmTokenNll(
  params: Params,
  cfg: LmSizes,
  c: LmBatchConstants,
): tf.Tensor2D {
  const { batch: b, seqLen: len } = c;
  let x = tf.matMul(c.inputs, tf.concat([params.embed, params.pos], 0) as tf.Tensor2D);
  const bias = causalBias(len);
  for (let i = 0; i < cfg.layers; i++) {
    x = transformerBlock(x, params, i, b, len, cfg.heads, bias);
  }
  const logits = linear(
    layerNorm(x, params["lnf.g"], params["lnf.b"]),
    params["head.w"],
    params["head.b"],
  );
  const picked = tf.sum(tf.mul(logSoftmax(logits), c.targets), -1);
  return tf.reshape(tf.neg(picked), [b, len]) as tf.Tensor2D;
}

/** Per-record mean NLL from precomputed constants: shape [batch]. */
export function lmLossFromConstants(
  params: Params,
  cfg: LmSizes,
  c: LmBatchConstants,
): tf.Tensor1D {
  return tf.sum(tf.mul(lmTokenNll(params, cfg, c), c.tokenWeights), 1) as tf.Tensor1D;
}

/**
 * Per-record mean next-byte NLL (nats per byte) over each record's real bytes: shape [batch].
 * Records with one byte still predict that byte from BOS.
 */
export function lmLossPerRecord(
  params: Params,
  cfg: LmSizes,
  batch: ByteBatch,
): tf.Tensor1D {
  const c = prepareLmBatch(batch);
  try {
    return lmLossFromConstants(params, cfg, c);
  } finally {
    // Inside a gradient tape the constants are saved for backward as clones, so disposing is safe.
    disposeLmBatch(c);
  }
}

/** Forward FLOPs per byte of an LM (matmuls only; attention counted over `seqLen`), ×3 for training. */
export function lmFlopsPerByte(
  cfg: LmSizes,
  seqLen: number,
): { forward: number; train: number } {
  const d = cfg.dModel;
  const perLayer = 2 * (d * 3 * d + d * d + 2 * d * cfg.ffn) +
    2 * 2 * seqLen * d;
  const forward = cfg.layers * perLayer + 2 * d * BYTE_VOCAB;
  return { forward, train: 3 * forward };
}
