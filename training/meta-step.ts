/**
 * The meta-gradient: how the held-out loss of a learner, after K inner updates weighted by the
 * rater, changes with the rater's parameters η. This is the heart of the DataRater method.
 *
 * For one inner model θ with optimiser state s (both carried across meta-steps):
 *
 * ```
 * for k in 0..K-1:
 *   w       = softmax(φ_η(x_k))                 batch softmax over the inner batch, no temperature
 *   g       = ∇_θ Σ_i w_i ℓ(x_k,i; θ)           a weighted sum: the softmax already normalises
 *   θ, s    = Adam(g, s, θ)                     differentiable: θ and s depend on η
 * L_outer   = mean_j ℓ(y_j; θ)                  held-out batch
 * ∂L_outer/∂η                                   exact: tfjs differentiates through the inner
 *                                               gradients themselves (second-order terms)
 * ```
 *
 * The updated θ and s are returned too: the inner model keeps training from there.
 *
 * @example
 * ```ts
 * const r = await metaGradient(eta, model, { inner: [x0, x1], outer: y }, settings);
 * r.metaLoss; r.grads["mlp.w1"]; r.next.params;
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import type { ByteBatch } from "../lib/bytes.ts";
import type { InnerConfig, RaterConfig } from "../lib/config.ts";
import {
  disposeLmBatch,
  type LmBatchConstants,
  lmLossFromConstants,
  lmTokenNll,
  prepareLmBatch,
} from "./lm.ts";
import type { Params } from "./params.ts";
import { applyUpdates, innerOptimizer, type Optimizer, type OptState } from "./optim.ts";
import {
  disposeRaterBatch,
  prepareRaterBatch,
  type RaterBatchConstants,
  raterScoresFromConstants,
} from "./rater.ts";

/** What the meta-step needs to know about the models. */
export interface MetaStepSettings {
  rater: RaterConfig;
  inner: InnerConfig;
}

/** A learner and its optimiser state (tensors owned by the holder). */
export interface LearnerState {
  params: Params;
  opt: OptState;
}

/** One meta-step's data for one inner model: K inner batches and a held-out batch. */
export interface MetaBatches {
  /** What the learner trains on at each of the K updates. */
  inner: ByteBatch[];
  /**
   * What the rater reads of those examples when its view length differs from the learner's (a
   * longer window around the learner's, `training/data.ts`); by default it rates `inner` itself.
   */
  raterInner?: ByteBatch[];
  outer: ByteBatch;
}

export interface MetaGradientResult {
  /** ∂L_outer/∂η, by rater parameter name. */
  grads: Params;
  /** L_outer: mean held-out NLL (nats/byte) after the K updates. */
  metaLoss: number;
  /** Unweighted mean inner-batch NLL before each of the K updates. */
  innerLosses: number[];
  /** Rater scores on each inner batch (for score statistics). */
  scores: Float32Array[];
  /** The learner after the K updates, detached from the tape. */
  next: LearnerState;
}

interface InnerStepResult {
  theta: Params;
  opt: OptState;
  meanLoss: tf.Scalar;
  scores: tf.Tensor1D;
}

/** Inner batches as constants: the learner's view and the rater's view of each. */
function prepareInner(
  batches: MetaBatches,
  settings: MetaStepSettings,
): { lm: LmBatchConstants; rater: RaterBatchConstants }[] {
  if (batches.raterInner && batches.raterInner.length !== batches.inner.length) {
    throw new Error(
      `raterInner has ${batches.raterInner.length} batches for ${batches.inner.length} inner batches`,
    );
  }
  return batches.inner.map((b, k) => ({
    lm: prepareLmBatch(b),
    rater: prepareRaterBatch(settings.rater, batches.raterInner?.[k] ?? b),
  }));
}

/**
 * One inner update, differentiable in η: rate the batch, take the gradient of the weighted loss
 * w.r.t. θ (tfjs records the gradient's own ops, so an enclosing tape sees through it), step.
 */
function innerStep(
  eta: Params,
  theta: Params,
  opt: OptState,
  x: { lm: LmBatchConstants; rater: RaterBatchConstants },
  optimizer: Optimizer,
  settings: MetaStepSettings,
): InnerStepResult {
  const scores = raterScoresFromConstants(eta, settings.rater, x.rater);
  const w = tf.softmax(scores);
  // Per-token weight of the inner loss: record weight × (mask / length).
  const tokenWeights = tf.mul(tf.expandDims(w, 1), x.lm.tokenWeights);
  const names = Object.keys(theta);
  let perRecord: tf.Tensor1D | undefined;
  const { grads } = tf.valueAndGrads((...values: tf.Tensor[]) => {
    const p: Params = Object.fromEntries(names.map((n, i) => [n, values[i]]));
    const nll = lmTokenNll(p, settings.inner, x.lm);
    // The unweighted per-record loss is a by-product, kept for metrics only.
    perRecord = tf.keep(tf.sum(tf.mul(nll, x.lm.tokenWeights), 1));
    return tf.sum(tf.mul(nll, tokenWeights)) as tf.Scalar;
  })(names.map((n) => theta[n]));
  const g: Params = Object.fromEntries(names.map((n, i) => [n, grads[i]]));
  const { updates, state } = optimizer.update(g, opt, theta);
  const meanLoss = tf.mean(perRecord!) as tf.Scalar;
  perRecord!.dispose();
  return { theta: applyUpdates(theta, updates), opt: state, meanLoss, scores };
}

/**
 * The exact meta-gradient for one inner model (see the module comment). Does not dispose `eta` or
 * `learner`; the caller owns the returned tensors (`grads`, `next`).
 */
export async function metaGradient(
  eta: Params,
  learner: LearnerState,
  batches: MetaBatches,
  settings: MetaStepSettings,
): Promise<MetaGradientResult> {
  const optimizer = innerOptimizer(settings.inner);
  // Constants (one-hots, masks) are built once, outside the tape.
  const inner = prepareInner(batches, settings);
  const outer = prepareLmBatch(batches.outer);
  const etaNames = Object.keys(eta);

  let kept: tf.Tensor[] = [];
  let next: LearnerState | undefined;
  let innerLosses: tf.Scalar[] = [];
  let scores: tf.Tensor1D[] = [];
  try {
    const { value, grads } = tf.tidy(() =>
      tf.valueAndGrads((...values: tf.Tensor[]) => {
        const etaP: Params = Object.fromEntries(
          etaNames.map((n, i) => [n, values[i]]),
        );
        let theta = learner.params;
        let opt = learner.opt;
        innerLosses = [];
        scores = [];
        for (const x of inner) {
          const r = innerStep(etaP, theta, opt, x, optimizer, settings);
          theta = r.theta;
          opt = r.opt;
          innerLosses.push(tf.keep(r.meanLoss));
          scores.push(tf.keep(r.scores));
        }
        const metaLoss = tf.mean(lmLossFromConstants(theta, settings.inner, outer)) as tf.Scalar;
        // The updated learner survives the tape's scopes; the tape itself is dropped afterwards.
        next = { params: theta, opt };
        kept = collectTensors(next);
        for (const t of kept) tf.keep(t);
        return metaLoss;
      })(etaNames.map((n) => eta[n]))
    );
    const metaLoss = (await value.data())[0];
    value.dispose();
    const result: MetaGradientResult = {
      grads: Object.fromEntries(etaNames.map((n, i) => [n, grads[i]])),
      metaLoss,
      innerLosses: await Promise.all(innerLosses.map(async (t) => (await t.data())[0])),
      scores: await Promise.all(scores.map(async (t) => (await t.data()) as Float32Array)),
      next: next!,
    };
    kept = [];
    return result;
  } finally {
    for (const t of kept) t.dispose();
    for (const t of [...innerLosses, ...scores]) t.dispose();
    for (const x of inner) {
      disposeLmBatch(x.lm);
      disposeRaterBatch(x.rater);
    }
    disposeLmBatch(outer);
  }
}

/** All tensors of a learner state. */
export function collectTensors(s: LearnerState): tf.Tensor[] {
  return [
    ...Object.values(s.params),
    ...s.opt.flatMap((t) => Object.values(t.slots).flatMap((slot) => Object.values(slot))),
  ];
}

/**
 * The held-out loss after K rater-weighted inner updates, without the meta-gradient: the
 * measurement used to choose which rater snapshot to export. The learner is not modified. The
 * mean over records is taken in float64, so finite differences of it resolve small changes.
 */
export async function heldOutMetaLoss(
  eta: Params,
  learner: LearnerState,
  batches: MetaBatches,
  settings: MetaStepSettings,
): Promise<number> {
  const optimizer = innerOptimizer(settings.inner);
  const inner = prepareInner(batches, settings);
  const outer = prepareLmBatch(batches.outer);
  try {
    const perRecord = tf.tidy(() => {
      let theta = learner.params;
      let opt = learner.opt;
      for (const x of inner) {
        const r = innerStep(eta, theta, opt, x, optimizer, settings);
        theta = r.theta;
        opt = r.opt;
      }
      return lmLossFromConstants(theta, settings.inner, outer);
    });
    const values = await perRecord.data();
    perRecord.dispose();
    let sum = 0;
    for (const v of values) sum += v;
    return sum / values.length;
  } finally {
    for (const x of inner) {
      disposeLmBatch(x.lm);
      disposeRaterBatch(x.rater);
    }
    disposeLmBatch(outer);
  }
}
