/**
 * The downstream trainer: a byte-level causal LM (the same model as the inner learners,
 * `training/lm.ts`) trained from scratch on a set of records with a fixed token budget, evaluated
 * periodically on test sets, with its training FLOPs counted analytically from the model config.
 *
 * Every run of the evaluation (baseline, each filter) uses this with the same model, optimiser,
 * batch, sequence length and number of steps; only the records differ. A training example is a
 * `seqLen`-byte window of a record at a random offset (the whole record when it is shorter), so a
 * long record contributes all of its bytes over the epochs, as packing would. Evaluation uses a
 * fixed sample of non-overlapping `seqLen`-byte windows spread over every test document
 * ({@link evalWindows}), the same for every run and seed.
 *
 * @example
 * ```ts
 * const result = await trainDownstream(texts, { testClean: cleanTexts }, { ...DEFAULT_DOWNSTREAM, steps: 100 });
 * result.curve.at(-1)!.losses.testClean; // nats per byte
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import { encodeBatch } from "../lib/bytes.ts";
import {
  initLmArrays,
  lmFlopsPerByte,
  type LmSizes,
  lmTokenNll,
  prepareLmBatch,
} from "../training/lm.ts";
import { disposeParams, type Params, toTensors } from "../training/params.ts";
import {
  addDecayedWeights,
  applyUpdates,
  chain,
  clipByGlobalNorm,
  disposeState,
  type OptState,
  scaleByAdam,
  scaleByLearningRate,
  warmupConstant,
} from "../training/optim.ts";
import { Rng } from "../training/rng.ts";

/** Settings of a downstream run (the same for every run compared). */
export interface DownstreamConfig {
  lm: LmSizes;
  seqLen: number;
  batch: number;
  /** Optimiser steps: the token budget is steps × batch × seqLen. */
  steps: number;
  lr: number;
  warmupSteps: number;
  weightDecay: number;
  clipNorm: number;
  /** Evaluate every this many steps (and at step 0 and the last step). */
  evalEvery: number;
  /**
   * Windows evaluated per test set: a fixed seeded sample of the non-overlapping `seqLen`-byte
   * windows of all its documents (all of them when there are fewer), see {@link evalWindows}.
   */
  evalWindows: number;
  /** Records per evaluation forward pass. */
  evalBatch: number;
  seed: number;
}

/** Defaults: the small downstream LM of the default preset. */
export const DEFAULT_DOWNSTREAM: DownstreamConfig = {
  lm: { dModel: 64, layers: 1, heads: 4, ffn: 256 },
  seqLen: 64,
  batch: 32,
  steps: 600,
  lr: 3e-3,
  warmupSteps: 30,
  weightDecay: 0,
  clipNorm: 1,
  evalEvery: 50,
  evalWindows: 2048,
  evalBatch: 64,
  seed: 0,
};

/** One evaluation: where the run was and the test losses (nats per byte) then. */
export interface EvalPoint {
  step: number;
  /** Cumulative training FLOPs (analytic). */
  flops: number;
  /** Real (unpadded) training bytes seen so far. */
  bytes: number;
  losses: Record<string, number>;
}

/** What a run returns. */
export interface DownstreamResult {
  curve: EvalPoint[];
  /** Training FLOPs per step (analytic: 3 × forward, over padded positions too). */
  flopsPerStep: number;
  trainRecords: number;
  trainBytes: number;
  finalLosses: Record<string, number>;
  /** Mean training loss over the last evaluation interval. */
  finalTrainLoss: number;
}

/** The data a run was asked to train on cannot be used. */
export class DownstreamDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DownstreamDataError";
  }
}

const encoder = new TextEncoder();

/** Training FLOPs per optimiser step of a config. */
export function trainFlopsPerStep(
  config: Pick<DownstreamConfig, "lm" | "seqLen" | "batch">,
): number {
  return lmFlopsPerByte(config.lm, config.seqLen).train * config.batch * config.seqLen;
}

/**
 * Draws training windows: records in a seeded random order, reshuffled every epoch; each draw is a
 * `seqLen`-byte window at a uniform offset.
 */
export class WindowSampler {
  private order: number[] = [];
  private next = 0;
  constructor(
    private readonly records: Uint8Array[],
    private readonly seqLen: number,
    private readonly rng: Rng,
  ) {
    if (records.length === 0) {
      throw new DownstreamDataError("no training records (the filter kept nothing)");
    }
  }

  /** The next `n` windows. */
  take(n: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      if (this.next >= this.order.length) {
        this.order = this.records.map((_, j) => j);
        for (let j = this.order.length - 1; j > 0; j--) {
          const k = this.rng.int(j + 1);
          [this.order[j], this.order[k]] = [this.order[k], this.order[j]];
        }
        this.next = 0;
      }
      const bytes = this.records[this.order[this.next++]];
      const offset = bytes.length > this.seqLen ? this.rng.int(bytes.length - this.seqLen + 1) : 0;
      out.push(bytes.subarray(offset, offset + this.seqLen));
    }
    return out;
  }
}

/** Sum of masked NLL and of real bytes for a batch of byte strings (no gradient). */
function batchNll(
  params: Params,
  lm: LmSizes,
  texts: Uint8Array[],
  seqLen: number,
): [number, number] {
  const batch = encodeBatch(texts, seqLen);
  const c = prepareLmBatch(batch);
  try {
    const total = tf.tidy(() => {
      const nll = lmTokenNll(params, lm, c);
      return tf.sum(tf.mul(nll, tf.tensor2d(batch.mask, [batch.batch, seqLen])));
    });
    const value = total.dataSync()[0];
    total.dispose();
    return [value, batch.mask.reduce((a, b) => a + b, 0)];
  } finally {
    c.inputs.dispose();
    c.targets.dispose();
    c.tokenWeights.dispose();
  }
}

/** Mean next-byte NLL (nats per byte) of a model over byte strings (each cut to `seqLen`). */
export function evaluateNll(
  params: Params,
  lm: LmSizes,
  records: Uint8Array[],
  seqLen: number,
  evalBatch: number,
): number {
  let nll = 0;
  let bytes = 0;
  for (let i = 0; i < records.length; i += evalBatch) {
    const [s, n] = batchNll(params, lm, records.slice(i, i + evalBatch), seqLen);
    nll += s;
    bytes += n;
  }
  return bytes === 0 ? NaN : nll / bytes;
}

/** Per-record mean NLL (nats per byte) of each record's first `seqLen` bytes. */
export function perRecordNll(
  params: Params,
  lm: LmSizes,
  records: Uint8Array[],
  seqLen: number,
  evalBatch: number,
): Float64Array {
  const out = new Float64Array(records.length);
  for (let i = 0; i < records.length; i += evalBatch) {
    const chunk = records.slice(i, i + evalBatch);
    const batch = encodeBatch(chunk, seqLen);
    const c = prepareLmBatch(batch);
    const perRecord = tf.tidy(() => tf.sum(tf.mul(lmTokenNll(params, lm, c), c.tokenWeights), 1));
    out.set(perRecord.dataSync(), i);
    perRecord.dispose();
    c.inputs.dispose();
    c.targets.dispose();
    c.tokenWeights.dispose();
  }
  return out;
}

/** Seed of the evaluation sample: fixed, so every run and seed is measured on the same bytes. */
export const EVAL_SAMPLE_SEED = 777;

/**
 * The evaluation windows of a test set: every document cut into non-overlapping `seqLen`-byte
 * windows (a document's last window may be shorter; one of under 2 bytes predicts nothing and is
 * left out), then a seeded sample of `count` of them (all when there are fewer), in document order.
 * Junk or prose deep inside a multi-KB document is measured, not only the heads, and one long
 * document cannot crowd out the others more than its share of bytes.
 */
export function evalWindows(
  texts: readonly string[],
  seqLen: number,
  count: number,
  seed = EVAL_SAMPLE_SEED,
): Uint8Array[] {
  const all: Uint8Array[] = [];
  for (const t of texts) {
    const bytes = encoder.encode(t);
    for (let off = 0; off < bytes.length; off += seqLen) {
      const w = bytes.subarray(off, off + seqLen);
      if (w.length >= 2) all.push(w);
    }
  }
  if (all.length <= count) return all;
  const rng = new Rng(seed);
  const order = all.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order.slice(0, count).sort((a, b) => a - b).map((i) => all[i]);
}

/** Progress callback: called after every evaluation. */
export type DownstreamProgress = (point: EvalPoint & { trainLoss: number; steps: number }) => void;

/**
 * Trains an LM from scratch on `trainTexts` and evaluates it on each of `evalSets` (name → texts).
 * Returns the evaluation curve. The trained parameters are handed to `keep` (for reuse, e.g. the
 * perplexity filter's scorer) or disposed.
 */
export async function trainDownstream(
  trainTexts: readonly string[],
  evalSets: Record<string, readonly string[]>,
  config: DownstreamConfig,
  onProgress: DownstreamProgress = () => {},
  keep?: (params: Params) => void,
): Promise<DownstreamResult> {
  const { lm, seqLen, batch, steps } = config;
  const rng = new Rng(config.seed);
  let params = toTensors(initLmArrays(lm, seqLen, rng));
  const sampler = new WindowSampler(trainTexts.map((t) => encoder.encode(t)), seqLen, rng.fork());
  const evalBytes = Object.fromEntries(
    Object.entries(evalSets).map((
      [name, texts],
    ) => [name, evalWindows(texts, seqLen, config.evalWindows)]),
  );
  const optimizer = chain(
    clipByGlobalNorm(config.clipNorm),
    scaleByAdam({ b1: 0.9, b2: 0.95, eps: 1e-8 }),
    addDecayedWeights(config.weightDecay),
    scaleByLearningRate(warmupConstant(config.lr, config.warmupSteps)),
  );
  let state: OptState = optimizer.init(params);
  const names = Object.keys(params);
  const flopsPerStep = trainFlopsPerStep(config);
  const curve: EvalPoint[] = [];
  let seenBytes = 0;
  let lossSum = 0;
  let lossCount = 0;
  let lastTrainLoss = NaN;

  const evaluate = (step: number) => {
    const losses: Record<string, number> = {};
    for (const [name, records] of Object.entries(evalBytes)) {
      losses[name] = evaluateNll(params, lm, records, seqLen, config.evalBatch);
    }
    lastTrainLoss = lossCount > 0 ? lossSum / lossCount : NaN;
    const point = { step, flops: step * flopsPerStep, bytes: seenBytes, losses };
    curve.push(point);
    onProgress({ ...point, trainLoss: lastTrainLoss, steps });
    lossSum = 0;
    lossCount = 0;
  };

  const lossOf =
    (mask: tf.Tensor2D, c: ReturnType<typeof prepareLmBatch>) => (...ts: tf.Tensor[]) => {
      const p: Params = {};
      names.forEach((n, i) => (p[n] = ts[i]));
      return tf.div(tf.sum(tf.mul(lmTokenNll(p, lm, c), mask)), tf.sum(mask)) as tf.Scalar;
    };

  try {
    evaluate(0);
    for (let step = 1; step <= steps; step++) {
      const windows = sampler.take(batch);
      const b = encodeBatch(windows, seqLen);
      seenBytes += windows.reduce((a, w) => a + w.length, 0);
      const c = prepareLmBatch(b);
      const mask = tf.tensor2d(b.mask, [b.batch, seqLen]);
      type StepOut = { value: tf.Scalar; params: Params; state: OptState };
      // tidy keeps every tensor reachable from the returned object (the state's slots included).
      const out = tf.tidy(() => {
        const { value, grads } = tf.valueAndGrads(lossOf(mask, c))(names.map((n) => params[n]));
        const g: Params = {};
        names.forEach((n, i) => (g[n] = grads[i]));
        const { updates, state: next } = optimizer.update(g, state, params);
        return {
          value,
          params: applyUpdates(params, updates),
          state: next,
        } as unknown as tf.TensorContainer;
      }) as unknown as StepOut;
      mask.dispose();
      c.inputs.dispose();
      c.targets.dispose();
      c.tokenWeights.dispose();
      disposeParams(params);
      disposeState(state);
      params = out.params;
      state = out.state;
      const loss = (await out.value.data())[0];
      out.value.dispose();
      if (!Number.isFinite(loss)) {
        throw new Error(`downstream training diverged at step ${step} (loss ${loss}); lower lr`);
      }
      lossSum += loss;
      lossCount++;
      if (step % config.evalEvery === 0 || step === steps) evaluate(step);
    }
  } catch (e) {
    disposeParams(params);
    disposeState(state);
    throw e;
  }
  disposeState(state);
  if (keep) keep(params);
  else disposeParams(params);
  const last = curve[curve.length - 1];
  return {
    curve,
    flopsPerStep,
    trainRecords: trainTexts.length,
    trainBytes: trainTexts.reduce((a, t) => a + encoder.encode(t).length, 0),
    finalLosses: last.losses,
    finalTrainLoss: lastTrainLoss,
  };
}
