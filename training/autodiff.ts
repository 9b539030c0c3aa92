/**
 * Gradient registrations the meta-gradient depends on: tfjs's own gradients for a few kernels drop
 * second-order terms (see {@link installGradients}), and its bias gradients are slow on tfjs-wasm.
 * Importing this module changes nothing; the backend setup (`training/backend.ts`) installs them.
 *
 * @example
 * ```ts
 * installGradients(); // before the first tf.grad of a run
 * ```
 */
import * as tf from "@tensorflow/tfjs";

let gradientsInstalled = false;

/**
 * Registers gradients that make tfjs's second derivatives exact and its bias gradients fast:
 *
 * - Second order. tfjs saves a kernel's *output* for its gradient (Softmax, Exp, Tanh, Sigmoid,
 *   and Pow inside Rsqrt's gradient) as a clone recorded on the tape *before* the kernel's own
 *   node, so when an enclosing gradient filters the tape, the clone looks unreachable and every
 *   second-order term through that saved output is silently dropped (the meta-gradient came out
 *   ~20% off finite differences). These versions save the *input* and recompute the output inside
 *   the gradient, where it is recorded in order.
 * - Speed. A broadcast bias's gradient sums dy over rows; tfjs-wasm does that by transposing
 *   first, so Add, Sub and Multiply reduce over rows with a product by a row of ones instead.
 *
 * Idempotent; values of first-order gradients are unchanged. Called by the trainer's backend
 * setup, so importing this module has no side effects.
 */
export function installGradients(): void {
  if (gradientsInstalled) return;
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
