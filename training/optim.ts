/**
 * Optimisers as pure functions, optax-style: a transformation is `init(params) → state` and
 * `update(grads, state, params) → {updates, state}`; transformations compose with {@link chain}.
 *
 * The same code is the learners' *inner* optimiser, run inside the meta-gradient's tape (every
 * update is made of differentiable tfjs ops, so the meta-gradient sees through Adam and its state),
 * and the rater's *meta* optimiser, run outside any tape. Nothing here disposes tensors: callers
 * own their memory (a `tf.tidy` around an outer update, or the tape's lifetime for the inner one).
 *
 * @example
 * ```ts
 * const opt = chain(clipByGlobalNorm(0.01), scaleByAdam({ b1: 0.9, b2: 0.999, eps: 1e-8 }),
 *   addDecayedWeights(0.1), scaleByLearningRate(warmupConstant(5e-3, 100)));
 * let state = opt.init(params);
 * const { updates, state: next } = opt.update(grads, state, params);
 * params = applyUpdates(params, updates);
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import type { Params } from "./params.ts";

/**
 * One transformation's state: a step count and named slots of tensors shaped like the params
 * (Adam's `mu` and `nu`). The uniform shape makes every optimiser state checkpointable.
 */
export interface TransformState {
  count: number;
  slots: Record<string, Params>;
}

/** A chain's state is its transformations' states in order. */
export type OptState = TransformState[];

export interface GradientTransformation {
  init(params: Params): TransformState;
  update(
    grads: Params,
    state: TransformState,
    params: Params,
  ): { updates: Params; state: TransformState };
}

/** A composed optimiser: the state of each link, in order. */
export interface Optimizer {
  init(params: Params): OptState;
  update(
    grads: Params,
    state: OptState,
    params: Params,
  ): { updates: Params; state: OptState };
}

/** A learning rate as a function of the step count (0 for the first update). */
export type Schedule = (count: number) => number;

function mapParams(p: Params, f: (t: tf.Tensor, name: string) => tf.Tensor) {
  const out: Params = {};
  for (const name of Object.keys(p)) out[name] = f(p[name], name);
  return out;
}

/** Composes transformations left to right (clip → adam → decay → schedule). */
export function chain(...links: GradientTransformation[]): Optimizer {
  return {
    init: (params) => links.map((l) => l.init(params)),
    update(grads, state, params) {
      let updates = grads;
      const next: OptState = [];
      links.forEach((link, i) => {
        const r = link.update(updates, state[i], params);
        updates = r.updates;
        next.push(r.state);
      });
      return { updates, state: next };
    },
  };
}

/** Scales all gradients together so their global L2 norm is at most `maxNorm`. */
export function clipByGlobalNorm(maxNorm: number): GradientTransformation {
  return {
    init: () => ({ count: 0, slots: {} }),
    update(grads, state) {
      const sq = Object.values(grads).map((g) => tf.sum(tf.square(g)));
      const norm = tf.sqrt(tf.addN(sq));
      // trigger = min(1, maxNorm / norm), written without a data-dependent branch so it also works
      // inside a tape and on async backends.
      const scale = tf.minimum(
        tf.scalar(1),
        tf.div(maxNorm, tf.maximum(norm, 1e-30)),
      );
      return {
        updates: mapParams(grads, (g) => tf.mul(g, scale)),
        state: { count: state.count + 1, slots: {} },
      };
    },
  };
}

export interface AdamOptions {
  b1: number;
  b2: number;
  eps: number;
  /**
   * Added to ν̂ inside the square root (optax's `eps_root`). Differentiating through Adam needs it:
   * a gradient entry that is exactly 0 (a byte absent from the batch) makes d√ν/dν infinite at ν = 0.
   */
  epsRoot?: number;
}

/** Adam's rescaling (no learning rate): m̂ / (√(ν̂ + εroot) + ε), bias-corrected. */
export function scaleByAdam(opts: AdamOptions): GradientTransformation {
  const { b1, b2, eps } = opts;
  const epsRoot = opts.epsRoot ?? 0;
  return {
    init: (params) => ({
      count: 0,
      slots: {
        mu: mapParams(params, (p) => tf.zerosLike(p)),
        nu: mapParams(params, (p) => tf.zerosLike(p)),
      },
    }),
    update(grads, state) {
      const count = state.count + 1;
      const c1 = 1 / (1 - b1 ** count);
      const c2 = 1 / (1 - b2 ** count);
      const mu: Params = {};
      const nu: Params = {};
      const updates: Params = {};
      for (const name of Object.keys(grads)) {
        const g = grads[name];
        mu[name] = tf.add(tf.mul(state.slots.mu[name], b1), tf.mul(g, 1 - b1));
        nu[name] = tf.add(
          tf.mul(state.slots.nu[name], b2),
          tf.mul(tf.square(g), 1 - b2),
        );
        let vHat = tf.mul(nu[name], c2);
        if (epsRoot > 0) vHat = tf.add(vHat, epsRoot);
        updates[name] = tf.div(
          tf.mul(mu[name], c1),
          tf.add(tf.sqrt(vHat), eps),
        );
      }
      return { updates, state: { count, slots: { mu, nu } } };
    },
  };
}

/** Decoupled weight decay (AdamW): adds `rate · θ` to the update, before the learning rate. */
export function addDecayedWeights(rate: number): GradientTransformation {
  return {
    init: () => ({ count: 0, slots: {} }),
    update(grads, state, params) {
      if (rate === 0) return { updates: grads, state };
      return {
        updates: mapParams(grads, (u, name) => tf.add(u, tf.mul(params[name], rate))),
        state: { count: state.count + 1, slots: {} },
      };
    },
  };
}

/** Multiplies updates by `-schedule(count)` (descent). */
export function scaleByLearningRate(
  schedule: Schedule | number,
): GradientTransformation {
  const lr = typeof schedule === "number" ? () => schedule : schedule;
  return {
    init: () => ({ count: 0, slots: {} }),
    update(grads, state) {
      const rate = -lr(state.count);
      return {
        updates: mapParams(grads, (u) => tf.mul(u, rate)),
        state: { count: state.count + 1, slots: {} },
      };
    },
  };
}

/** Linear warm-up to `peak` over `warmupSteps` updates (the first update already uses peak/warmup), then constant. */
export function warmupConstant(peak: number, warmupSteps: number): Schedule {
  if (warmupSteps <= 0) return () => peak;
  return (count) => peak * Math.min(1, (count + 1) / warmupSteps);
}

/** θ + u for every parameter. */
export function applyUpdates(params: Params, updates: Params): Params {
  return mapParams(params, (p, name) => tf.add(p, updates[name]));
}

/** An optimiser over a population: one state per member, one update for the shared parameters. */
export interface PopulationOptimizer {
  init(params: Params, members: number): OptState[];
  /** `grads[i]` is member i's gradient; `states[i]` its optimiser state. */
  update(
    grads: Params[],
    states: OptState[],
    params: Params,
  ): { updates: Params; state: OptState[] };
}

/**
 * The members' updates, averaged: each member's gradient goes through its own copy of `inner`
 * (its own Adam moments, clipping and schedule), and the shared parameters move by the mean of
 * the resulting updates. Averaging updates rather than gradients keeps one member's large
 * gradient from dominating, since Adam normalises each member's separately.
 *
 * @example
 * ```ts
 * const opt = averageUpdates(metaOptimizer(cfg));
 * let states = opt.init(eta, members);
 * const { updates, state } = opt.update(memberGrads, states, eta);
 * eta = applyUpdates(eta, updates);
 * ```
 */
export function averageUpdates(inner: Optimizer): PopulationOptimizer {
  return {
    init: (params, members) => Array.from({ length: members }, () => inner.init(params)),
    update(grads, states, params) {
      if (grads.length === 0 || grads.length !== states.length) {
        throw new Error(
          `averageUpdates: ${grads.length} gradients for ${states.length} member states`,
        );
      }
      let sum: Params | null = null;
      const next: OptState[] = [];
      grads.forEach((g, i) => {
        const r = inner.update(g, states[i], params);
        next.push(r.state);
        const prev: Params | null = sum;
        sum = prev === null ? r.updates : mapParams(r.updates, (u, name) => tf.add(prev[name], u));
      });
      return {
        updates: mapParams(sum!, (u) => tf.div(u, grads.length)),
        state: next,
      };
    },
  };
}

/** Inner-loop optimiser of the learners: differentiable Adam, or plain SGD. */
export function innerOptimizer(cfg: {
  optimizer: "adam" | "sgd";
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
}): Optimizer {
  if (cfg.optimizer === "sgd") return chain(scaleByLearningRate(cfg.lr));
  return chain(
    scaleByAdam({ b1: cfg.beta1, b2: cfg.beta2, eps: cfg.eps, epsRoot: 1e-16 }),
    scaleByLearningRate(cfg.lr),
  );
}

/** The rater's meta-optimiser (one per inner model): clip → Adam → decoupled decay → warm-up. */
export function metaOptimizer(cfg: {
  clipNorm: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  lr: number;
  warmupSteps: number;
}): Optimizer {
  return chain(
    clipByGlobalNorm(cfg.clipNorm),
    scaleByAdam({ b1: cfg.beta1, b2: cfg.beta2, eps: cfg.eps }),
    addDecayedWeights(cfg.weightDecay),
    scaleByLearningRate(warmupConstant(cfg.lr, cfg.warmupSteps)),
  );
}

/** Every tensor held by an optimiser state. */
export function stateTensors(state: OptState): tf.Tensor[] {
  return state.flatMap((s) => Object.values(s.slots).flatMap((slot) => Object.values(slot)));
}

/** Disposes an optimiser state's tensors. */
export function disposeState(state: OptState): void {
  for (const t of stateTensors(state)) t.dispose();
}
