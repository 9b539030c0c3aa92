/**
 * The layers the rater and the learners are built from, as pure functions of a flat parameter map.
 *
 * Everything here is composed of ops whose gradients are themselves differentiable in TensorFlow.js,
 * so the meta-gradient can differentiate through the learners' own gradient steps (second order).
 * Embeddings are one-hot matmuls because tfjs-wasm's `gather` has no gradient kernel.
 * `training/export-onnx.ts` mirrors these definitions op for op: change both together.
 */
import * as tf from "@tensorflow/tfjs";
import type { Rng } from "./rng.ts";
import { wrapWasmKernel } from "./wasm-kernels.ts";

/** Parameters by name; names are stable (`l0.attn.wqkv`) and shared with checkpoints and ONNX. */
export type Params = Record<string, tf.Tensor>;
/** Parameter values outside any tensor backend, for checkpoints and export. */
export type ParamArrays = Record<
  string,
  { shape: number[]; values: Float32Array }
>;

export const LN_EPS = 1e-5;
/** Additive attention bias for masked keys: large enough to zero a softmax, finite for gradients. */
export const MASK_BIAS = -1e9;
const INIT_STD = 0.02;

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
 * Matrix product with the transposes done as explicit ops. tfjs-wasm's BatchMatMul is about ten
 * times slower when asked to transpose an operand than an explicit Transpose followed by a plain
 * product; {@link installGradients} makes the backward pass (and its derivative) use this too.
 */
export function matMul(
  a: tf.Tensor,
  b: tf.Tensor,
  transposeA = false,
  transposeB = false,
): tf.Tensor {
  // For 2-D products with one transposed operand, transpose whichever side is smaller:
  // aᵀb = (bᵀa)ᵀ and abᵀ = (baᵀ)ᵀ. Weight gradients (activationsᵀ · dy) then transpose the
  // narrower of the two [rows, ·] operands instead of, say, a [2048, 321] one-hot constant.
  if (a.rank === 2 && b.rank === 2 && transposeA !== transposeB) {
    if (transposeA && a.size > b.size) return tf.transpose(tf.matMul(swapLastAxes(b), a));
    if (transposeB && b.size > a.size) return tf.transpose(tf.matMul(b, swapLastAxes(a)));
  }
  // Batched products (attention's gradients) run as one XNNPACK product per batch entry on wasm
  // (see installFastWasmBatchMatMul), which is ~2× faster with the output's rows outnumbering
  // its columns (e.g. [64, 64]·[64, 16] rather than [16, 64]·[64, 64]): for an output with
  // fewer rows, compute its transpose and transpose back.
  if (a.rank >= 3 && b.rank >= 3 && transposeA !== transposeB) {
    const rows = transposeA ? a.shape[a.rank - 1] : a.shape[a.rank - 2];
    const cols = transposeA ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
    if (rows < cols) {
      return swapLastAxes(
        transposeA ? tf.matMul(swapLastAxes(b), a) : tf.matMul(b, swapLastAxes(a)),
      );
    }
  }
  return tf.matMul(
    transposeA ? swapLastAxes(a) : a,
    transposeB ? swapLastAxes(b) : b,
  );
}

function swapLastAxes(t: tf.Tensor): tf.Tensor {
  const perm = t.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return tf.transpose(t, perm);
}

let gradientsInstalled = false;

/**
 * Registers gradients that make tfjs's second derivatives exact and its matmuls fast:
 *
 * - Second order. tfjs saves a kernel's *output* for its gradient (Softmax, Exp, Tanh, Sigmoid,
 *   and Pow inside Rsqrt's gradient) as a clone recorded on the tape *before* the kernel's own
 *   node, so when an enclosing gradient filters the tape, the clone looks unreachable and every
 *   second-order term through that saved output is silently dropped (the meta-gradient came out
 *   ~20% off finite differences). These versions save the *input* and recompute the output inside
 *   the gradient, where it is recorded in order.
 * - BatchMatMul's gradient uses {@link matMul} (explicit transposes; see there).
 *
 * Idempotent; values of first-order gradients are unchanged. Called by the trainer's backend
 * setup, so importing this module has no side effects.
 */
export function installGradients(): void {
  if (gradientsInstalled) return;
  tf.registerGradient({
    kernelName: tf.BatchMatMul,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as unknown as {
        transposeA: boolean;
        transposeB: boolean;
      };
      const g = dy as tf.Tensor;
      if (!transposeA && !transposeB) {
        return { a: () => matMul(g, b, false, true), b: () => matMul(a, g, true, false) };
      }
      if (!transposeA && transposeB) {
        return { a: () => matMul(g, b, false, false), b: () => matMul(g, a, true, false) };
      }
      if (transposeA && !transposeB) {
        return { a: () => matMul(b, g, false, true), b: () => matMul(a, g, false, false) };
      }
      return { a: () => matMul(b, g, true, true), b: () => matMul(g, a, true, true) };
    },
  });
  tf.registerGradient({
    kernelName: tf.Softmax,
    inputsToSave: ["logits"],
    gradFunc: (dy, saved, attrs) => {
      const [logits] = saved;
      const { dim } = attrs as unknown as { dim: number };
      const y = tf.softmax(logits, dim);
      const dyTimesY = tf.mul(dy as tf.Tensor, y);
      return { logits: () => tf.sub(dyTimesY, tf.mul(tf.sum(dyTimesY, [dim], true), y)) };
    },
  });
  tf.registerGradient({
    kernelName: tf.Exp,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as tf.Tensor, tf.exp(saved[0])) }),
  });
  tf.registerGradient({
    kernelName: tf.Tanh,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => {
      const y = tf.tanh(saved[0]);
      return { x: () => tf.mul(tf.sub(1, tf.mul(y, y)), dy as tf.Tensor) };
    },
  });
  tf.registerGradient({
    kernelName: tf.Sigmoid,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => {
      const y = tf.sigmoid(saved[0]);
      return { x: () => tf.mul(dy as tf.Tensor, tf.mul(y, tf.sub(1, y))) };
    },
  });
  tf.registerGradient({
    kernelName: tf.Rsqrt,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => {
      const r = tf.rsqrt(saved[0]);
      return { x: () => tf.mul(dy as tf.Tensor, tf.mul(tf.mul(tf.mul(r, r), r), -0.5)) };
    },
  });
  // Broadcasting ops: a bias's gradient sums dy over rows. tfjs-wasm sums over axis 0 by
  // transposing first (~7× slower than a row of ones times dy, which xnnpack does fast).
  const { assertAndGetBroadcastShape, getReductionAxes } = tf.broadcast_util;
  const reduceTo = (res: tf.Tensor, shape: number[], outShape: number[]): tf.Tensor => {
    const axes = getReductionAxes(shape, outShape);
    if (axes.length === 0) return tf.reshape(res, shape);
    if (res.rank === 2 && axes.length === 1 && axes[0] === 0) {
      return tf.reshape(tf.matMul(tf.ones([1, res.shape[0]]), res as tf.Tensor2D), shape);
    }
    return tf.reshape(tf.sum(res, axes), shape);
  };
  const broadcastGrad = (
    kernelName: string,
    dA: (dy: tf.Tensor, b: tf.Tensor) => tf.Tensor,
    dB: (dy: tf.Tensor, a: tf.Tensor) => tf.Tensor,
  ) =>
    tf.registerGradient({
      kernelName,
      inputsToSave: ["a", "b"],
      gradFunc: (dy, saved) => {
        const [a, b] = saved;
        const out = assertAndGetBroadcastShape(a.shape, b.shape);
        return {
          a: () => reduceTo(dA(dy as tf.Tensor, b), a.shape, out),
          b: () => reduceTo(dB(dy as tf.Tensor, a), b.shape, out),
        };
      },
    });
  broadcastGrad(tf.Add, (dy) => dy, (dy) => dy);
  broadcastGrad(tf.Sub, (dy) => dy, (dy) => tf.neg(dy));
  broadcastGrad(tf.Multiply, (dy, b) => tf.mul(dy, b), (dy, a) => tf.mul(dy, a));
  gradientsInstalled = true;
}

/** The parts of tfjs-backend-wasm's backend object the batched product below reaches into. */
interface WasmBackendInternals {
  wasm: {
    _malloc(bytes: number): number;
    _register_tensor(id: number, size: number, memoryOffset: number): void;
    _dispose_data(id: number): void;
    _BatchMatMul(
      aId: number,
      aShapePtr: number,
      aRank: number,
      bId: number,
      bShapePtr: number,
      bRank: number,
      transposeA: number,
      transposeB: number,
      outId: number,
    ): void;
    HEAP32: Int32Array;
  };
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } | undefined };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: "float32"): tf.TensorInfo;
}

/** Below this many multiply-adds per product, the per-product set-up costs more than it saves. */
const MIN_SLICED_MACS = 4096;
/** Per wasm module: 6 int32s holding the shapes [1, m, k] and [1, k, n] passed to the kernel. */
const shapeScratch = new WeakMap<object, number>();
let fastBatchMatMulInstalled = false;

/**
 * Replaces tfjs-wasm's BatchMatMul kernel with one that runs a batched product as one XNNPACK
 * 2-D product per batch entry. The stock kernel sends every product with a batch dimension > 1
 * (attention's q·kᵀ and attn·v over [batch·heads, len, dh], and their gradients) to a scalar loop
 * at ~2 GFLOP/s, while its 2-D path (XNNPACK) runs at 15–25; per entry, this registers views of
 * the operands' and output's slices as temporary tensor ids (the wasm heap is shared, so nothing
 * is copied) and calls the kernel's 2-D path on them. The op, its gradient and its results (up to
 * float32 summation order) are unchanged; only the kernel is. Products with transposed operands,
 * general broadcasting or tiny matrices go to the stock kernel.
 *
 * Relies on tfjs-backend-wasm internals (pinned at 4.22.0); if they are missing, it leaves the stock
 * kernel in place. Call after the wasm backend is registered; idempotent.
 */
export function installFastWasmBatchMatMul(): void {
  if (fastBatchMatMulInstalled) return;
  fastBatchMatMulInstalled = wrapWasmKernel(tf.BatchMatMul, (stock) => (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as {
      transposeA: boolean;
      transposeB: boolean;
    };
    const backend = args.backend as unknown as WasmBackendInternals;
    const out = !transposeA && !transposeB && a.dtype === "float32" &&
        b.dtype === "float32" && typeof backend.wasm?._BatchMatMul === "function"
      ? slicedBatchMatMul(a, b, backend)
      : null;
    return out ?? stock.kernelFunc(args);
  });
}

/** a [..., m, k] · b [..., k, n] as one 2-D product per batch entry; null where not applicable. */
function slicedBatchMatMul(
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  backend: WasmBackendInternals,
): tf.TensorInfo | null {
  const ra = a.shape.length, rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const [m, k] = a.shape.slice(-2), [k2, n] = b.shape.slice(-2);
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = outerA.reduce((x, y) => x * y, 1);
  const batchB = outerB.reduce((x, y) => x * y, 1);
  if (k !== k2 || m * k * n < MIN_SLICED_MACS || m * k * n === 0) return null;
  // Same outer dims, or b shared by every entry of a (then a's entries are just more rows).
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  const bShared = batchB === 1 && outerB.length <= outerA.length;
  if (batchA <= 1 || (!sameOuter && !bShared)) return null;
  const aData = backend.dataIdMap.get(a.dataId);
  const bData = backend.dataIdMap.get(b.dataId);
  if (!aData || !bData) return null;
  const out = backend.makeOutput([...outerA, m, n], "float32");
  const outOffset = backend.dataIdMap.get(out.dataId)!.memoryOffset;
  const wasm = backend.wasm;
  let shapes = shapeScratch.get(wasm);
  if (shapes === undefined) {
    shapes = wasm._malloc(6 * 4) >>> 0;
    shapeScratch.set(wasm, shapes);
  }
  const rows = bShared ? batchA * m : m;
  wasm.HEAP32.set([1, rows, k, 1, k, n], shapes >>> 2);
  const products = bShared ? 1 : batchA;
  for (let i = 0; i < products; i++) {
    const aId = backend.dataIdNextNumber++;
    const bId = backend.dataIdNextNumber++;
    const outId = backend.dataIdNextNumber++;
    wasm._register_tensor(aId, rows * k, aData.memoryOffset + 4 * i * rows * k);
    wasm._register_tensor(bId, k * n, bData.memoryOffset + 4 * i * k * n);
    wasm._register_tensor(outId, rows * n, outOffset + 4 * i * rows * n);
    wasm._BatchMatMul(aId, shapes, 3, bId, shapes + 12, 3, 0, 0, outId);
    // Forgetting a view frees nothing (the JS side owns the memory) but drops the XNNPACK
    // operator cached on the b view, so no packed copy of a stale slice outlives this call.
    wasm._dispose_data(aId);
    wasm._dispose_data(bId);
    wasm._dispose_data(outId);
  }
  return out;
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

/** Token embedding by one-hot matmul (differentiable on every backend): [n] → [n, d]. */
export function embed(
  tokens: tf.Tensor1D,
  table: tf.Tensor,
  vocab: number,
): tf.Tensor {
  return tf.matMul(oneHotFloat(tokens, vocab), table as tf.Tensor2D);
}

/**
 * One-hot rows as float32. tfjs-wasm's OneHot kernel ignores a float32 dtype (it writes integer bit
 * patterns into a float buffer), so build int32 and cast.
 */
export function oneHotFloat(indices: tf.Tensor1D, depth: number): tf.Tensor2D {
  return tf.cast(tf.oneHot(indices, depth), "float32") as tf.Tensor2D;
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

/**
 * Initial values for named shapes: LayerNorm gains 1, biases 0, matrices N(0, 0.02²) drawn from the
 * seeded generator (not tfjs's RNG), so a run is reproducible across backends and resumes.
 */
export function initArrays(
  shapes: Record<string, number[]>,
  rng: Rng,
): ParamArrays {
  const out: ParamArrays = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const size = shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (name.endsWith(".g")) values = new Float32Array(size).fill(1);
    else if (shape.length === 1) values = new Float32Array(size);
    else values = rng.normals(size, INIT_STD);
    out[name] = { shape, values };
  }
  return out;
}

/** Uploads parameter arrays to the active backend. */
export function toTensors(arrays: ParamArrays): Params {
  const out: Params = {};
  for (const [name, { shape, values }] of Object.entries(arrays)) {
    out[name] = tf.tensor(values, shape, "float32");
  }
  return out;
}

/** Downloads parameters (synchronously where the backend allows; async on WebGPU). */
export async function toArrays(params: Params): Promise<ParamArrays> {
  const out: ParamArrays = {};
  for (const [name, t] of Object.entries(params)) {
    out[name] = {
      shape: [...t.shape],
      values: (await t.data()) as Float32Array,
    };
  }
  return out;
}

/** Disposes every tensor of a parameter map. */
export function disposeParams(params: Params): void {
  for (const t of Object.values(params)) t.dispose();
}

/** Total number of scalars in a set of shapes. */
export function countParams(shapes: Record<string, number[]>): number {
  return Object.values(shapes).reduce(
    (n, s) => n + s.reduce((a, b) => a * b, 1),
    0,
  );
}
