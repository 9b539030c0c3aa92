/**
 * The layers the rater and the learners are built from, as pure functions of a flat parameter map.
 *
 * Everything here is composed of ops whose gradients are themselves differentiable in TensorFlow.js,
 * so the meta-gradient can differentiate through the learners' own gradient steps (second order).
 * Embeddings are one-hot matmuls because tfjs-wasm's `gather` has no gradient kernel.
 * The second derivatives are exact only with the gradients `training/autodiff.ts` registers (the
 * backend setup installs them). `training/export-onnx.ts` mirrors these definitions op for op:
 * change both together.
 */
import * as tf from "@tensorflow/tfjs";
import type { Params } from "./params.ts";

// Parameter maps live in training/params.ts; these names are re-exported because the evaluation
// harness and some tests import them from here. The tensor<->array conversion is imported from
// params.ts only.
export { disposeParams, initArrays, type ParamArrays, type Params } from "./params.ts";

export const LN_EPS = 1e-5;
/** Additive attention bias for masked keys: large enough to zero a softmax, finite for gradients. */
export const MASK_BIAS = -1e9;

/** Layer normalisation over the last axis. */
export function layerNorm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const mu = tf.mean(x, -1, true);
  const xc = tf.sub(x, mu);
  const variance = tf.mean(tf.mul(xc, xc), -1, true);
  return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, LN_EPS))), g), b);
}

/** GELU, tanh approximation (smooth, so finite-difference checks of the meta-gradient hold). */
export function gelu(x: tf.Tensor): tf.Tensor {
  // x·x·x rather than pow(x, 3): tfjs-wasm's Pow is several times slower than two multiplies.
  // ½(1 + tanh z) = sigmoid(2z): the same function, and tfjs-wasm's Sigmoid is ~4× faster than Tanh.
  const twoZ = tf.mul(
    tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)),
    2 * Math.sqrt(2 / Math.PI),
  );
  return tf.mul(x, tf.sigmoid(twoZ));
}

/**
 * max over the last axis (keeping it) treated as a constant: its gradient is zero. tfjs has no
 * stop_gradient; a custom gradient whose forward pass is not recorded on the tape is one.
 */
const constantRowMax: (x: tf.Tensor) => tf.Tensor = tf.customGrad(
  // deno-lint-ignore no-explicit-any
  ((x: tf.Tensor) => ({ value: tf.max(x, -1, true), gradFunc: () => tf.zerosLike(x) })) as any,
) as unknown as (x: tf.Tensor) => tf.Tensor;

/**
 * Log-softmax over the last axis as x − m − log Σ exp(x − m) with m = max(x) held constant: the
 * result does not depend on m, so this is exact at every order, and it is built from ops whose
 * gradients are themselves differentiable (tfjs's logSoftmax is a custom-gradient op whose saved
 * output breaks second derivatives, and Max's gradient goes through Equal, which has none).
 */
export function logSoftmax(x: tf.Tensor): tf.Tensor {
  const shifted = tf.sub(x, constantRowMax(x));
  return tf.sub(shifted, tf.log(tf.sum(tf.exp(shifted), -1, true)));
}

/** `x @ w + b` for x of shape [n, in]. */
export function linear(x: tf.Tensor, w: tf.Tensor, b?: tf.Tensor): tf.Tensor {
  const y = tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D);
  return b ? tf.add(y, b) : y;
}

/**
 * Multi-head self-attention on x [batch*len, d]. `bias` is added to the scores and broadcasts to
 * [batch, heads, len, len]: a causal mask for the learners, a key-padding mask for the rater.
 */
export function selfAttention(
  x: tf.Tensor,
  p: Params,
  prefix: string,
  batch: number,
  len: number,
  heads: number,
  bias: tf.Tensor,
): tf.Tensor {
  const d = x.shape[1]!;
  const dh = d / heads;
  const qkv = linear(x, p[`${prefix}.wqkv`], p[`${prefix}.bqkv`]);
  // [b*len, d] → [b, len, heads, dh] → per-head layouts; k is laid out already transposed
  // ([b·heads, dh, len]) so no product needs a transpose flag (slow on tfjs-wasm).
  const [q, k, v] = tf.split(qkv, 3, 1).map((t) => tf.reshape(t, [batch, len, heads, dh]));
  const qh = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [batch * heads, len, dh]);
  const kt = tf.reshape(tf.transpose(k, [0, 2, 3, 1]), [batch * heads, dh, len]);
  const vh = tf.reshape(tf.transpose(v, [0, 2, 1, 3]), [batch * heads, len, dh]);
  const scores = tf.mul(tf.matMul(qh as tf.Tensor3D, kt as tf.Tensor3D), 1 / Math.sqrt(dh));
  const masked = tf.add(tf.reshape(scores, [batch, heads, len, len]), bias);
  const attn = tf.reshape(tf.softmax(masked, -1), [batch * heads, len, len]) as tf.Tensor3D;
  const out = tf.reshape(
    tf.transpose(tf.reshape(tf.matMul(attn, vh as tf.Tensor3D), [batch, heads, len, dh]), [
      0,
      2,
      1,
      3,
    ]),
    [batch * len, d],
  );
  return linear(out, p[`${prefix}.wo`], p[`${prefix}.bo`]);
}

/** One pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(·)). */
export function transformerBlock(
  x: tf.Tensor,
  p: Params,
  layer: number,
  batch: number,
  len: number,
  heads: number,
  bias: tf.Tensor,
): tf.Tensor {
  const l = `l${layer}`;
  const h = tf.add(
    x,
    selfAttention(
      layerNorm(x, p[`${l}.ln1.g`], p[`${l}.ln1.b`]),
      p,
      `${l}.attn`,
      batch,
      len,
      heads,
      bias,
    ),
  );
  const m = linear(
    gelu(
      linear(
        layerNorm(h, p[`${l}.ln2.g`], p[`${l}.ln2.b`]),
        p[`${l}.mlp.w1`],
        p[`${l}.mlp.b1`],
      ),
    ),
    p[`${l}.mlp.w2`],
    p[`${l}.mlp.b2`],
  );
  return tf.add(h, m);
}

/**
 * Shapes of a transformer over a token vocabulary: embedding, learned positions, `layers` blocks,
 * final LayerNorm and a linear head of width `out` (the learner's next-byte logits, the rater's
 * score). The learner and the rater differ only in vocabulary, head width and masking.
 */
export function transformerShapes(
  vocab: number,
  seqLen: number,
  cfg: { dModel: number; layers: number; ffn: number },
  out: number,
): Record<string, number[]> {
  const d = cfg.dModel;
  let shapes: Record<string, number[]> = { embed: [vocab, d], pos: [seqLen, d] };
  for (let i = 0; i < cfg.layers; i++) shapes = { ...shapes, ...blockShapes(i, d, cfg.ffn) };
  return { ...shapes, "lnf.g": [d], "lnf.b": [d], "head.w": [d, out], "head.b": [out] };
}

/** Shapes of one transformer block's parameters. */
export function blockShapes(
  layer: number,
  d: number,
  ffn: number,
): Record<string, number[]> {
  const l = `l${layer}`;
  return {
    [`${l}.ln1.g`]: [d],
    [`${l}.ln1.b`]: [d],
    [`${l}.attn.wqkv`]: [d, 3 * d],
    [`${l}.attn.bqkv`]: [3 * d],
    [`${l}.attn.wo`]: [d, d],
    [`${l}.attn.bo`]: [d],
    [`${l}.ln2.g`]: [d],
    [`${l}.ln2.b`]: [d],
    [`${l}.mlp.w1`]: [d, ffn],
    [`${l}.mlp.b1`]: [ffn],
    [`${l}.mlp.w2`]: [ffn, d],
    [`${l}.mlp.b2`]: [d],
  };
}
