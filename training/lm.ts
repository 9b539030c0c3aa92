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
  blockShapes,
  embed,
  initArrays,
  layerNorm,
  linear,
  MASK_BIAS,
  oneHotFloat,
  type ParamArrays,
  type Params,
  transformerBlock,
} from "./nn.ts";
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
  const d = cfg.dModel;
  let shapes: Record<string, number[]> = {
    embed: [LM_INPUT_VOCAB, d],
    pos: [seqLen, d],
  };
  for (let i = 0; i < cfg.layers; i++) {
    shapes = { ...shapes, ...blockShapes(i, d, cfg.ffn) };
  }
  return {
    ...shapes,
    "lnf.g": [d],
    "lnf.b": [d],
    "head.w": [d, BYTE_VOCAB],
    "head.b": [BYTE_VOCAB],
  };
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
 * Per-record mean next-byte NLL (nats per byte) over each record's real bytes: shape [batch].
 * Records with one byte still predict that byte from BOS.
 */
export function lmLossPerRecord(
  params: Params,
  cfg: LmSizes,
  batch: ByteBatch,
): tf.Tensor1D {
  const { batch: b, seqLen: len } = batch;
  const inputs = tf.tensor1d(lmInputs(batch), "int32");
  const targets = tf.tensor1d(batch.tokens, "int32");
  const mask = tf.tensor2d(batch.mask, [b, len]);
  const lengths = tf.tensor1d(Float32Array.from(batch.lengths));
  let x = tf.add(
    tf.reshape(embed(inputs, params.embed, LM_INPUT_VOCAB), [
      b,
      len,
      cfg.dModel,
    ]),
    params.pos,
  );
  x = tf.reshape(x, [b * len, cfg.dModel]);
  const bias = causalBias(len);
  for (let i = 0; i < cfg.layers; i++) {
    x = transformerBlock(x, params, i, b, len, cfg.heads, bias);
  }
  const logits = linear(
    layerNorm(x, params["lnf.g"], params["lnf.b"]),
    params["head.w"],
    params["head.b"],
  );
  const logp = tf.logSoftmax(logits, -1);
  const picked = tf.sum(tf.mul(logp, oneHotFloat(targets, BYTE_VOCAB)), -1);
  const nll = tf.neg(tf.reshape(picked, [b, len]));
  return tf.div(tf.sum(tf.mul(nll, mask), 1), lengths) as tf.Tensor1D;
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
