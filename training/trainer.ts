/**
 * The meta-training loop: resume or start, run meta-steps over the population, checkpoint, and at
 * the end choose the rater to export. What it reports (metrics, progress, the bar) is
 * `training/reporting.ts`'s; how the rater is calibrated and written is `training/export.ts`'s.
 *
 * One meta-step (see `training/meta-step.ts` for the meta-gradient itself):
 * 1. members due for their staggered reset are re-initialised;
 * 2. each member gets K inner batches from `train` and a held-out batch from `heldout`;
 * 3. each member's meta-gradient goes through *its own* meta-optimiser (clip → Adam → decoupled
 *    weight decay → warm-up) and the resulting *updates* are averaged into η (`averageUpdates`);
 * 4. η's exponential moving average is updated (an export candidate).
 *
 * Export: the final η and its moving average are compared by a measurement — the mean held-out
 * loss after K rater-weighted inner steps, from every member's current state, on batches drawn
 * from a generator of their own — and the better one is exported by `exportRater`, the procedure
 * `deno task export` runs on a checkpoint.
 *
 * @example
 * ```ts
 * const result = await train(storageFromEnv(Deno.env.toObject()), parseTrainConfig(json), {
 *   steps: 100,
 * });
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import { configDigest, raterSeqLen, type TrainConfig } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { useBackend } from "./backend.ts";
import {
  CheckpointError,
  loadLatestCheckpoint,
  type MemberCheckpoint,
  optStateFromArrays,
  optStateToArrays,
  saveCheckpoint,
  type TrainState,
} from "./checkpoint.ts";
import { type Dataset, describeStats, loadDataset, sampleBatch } from "./data.ts";
import { chooseRater, exportRater } from "./export.ts";
import { initLmArrays } from "./lm.ts";
import type { MetaBatches, MetaStepSettings } from "./meta-step.ts";
import {
  applyUpdates,
  averageUpdates,
  disposeState,
  innerOptimizer,
  metaOptimizer,
  type OptState,
  type PopulationOptimizer,
  stateTensors,
} from "./optim.ts";
import { disposeParams, type ParamArrays, type Params, toArrays, toTensors } from "./params.ts";
import {
  dueForReset,
  type LearnerArrays,
  LocalPopulation,
  type PopulationExecutor,
} from "./population.ts";
import { initRaterArrays } from "./rater.ts";
import {
  makeReporter,
  type ProgressMode,
  readMetrics,
  type StepMetrics,
  stepMetrics,
  writeMetrics,
  writeProgress,
} from "./reporting.ts";
import { Rng } from "./rng.ts";
import { WorkerPopulation } from "./worker-pool.ts";

export interface TrainOptions {
  /** Total meta-steps (overrides `config.meta.steps`). */
  steps?: number;
  /** Stop after this many completed steps (with a checkpoint), as a preempted run would. */
  stopAfter?: number;
  /** Datasets already in memory (tests); otherwise loaded from `config.data`. */
  datasets?: { train: Dataset; heldout: Dataset };
  /** Run the export at the end (default true). */
  export?: boolean;
  /** Progress output: `tty` (bar with ETA), `json` (JSON lines), `none`. Default: by stdout. */
  progress?: ProgressMode;
  /** Where JSON progress lines and notices go (default stdout). */
  log?: (line: string) => void;
}

export type { StepMetrics };

export interface TrainResult {
  step: number;
  eta: ParamArrays;
  etaEma: ParamArrays;
  members: MemberCheckpoint[];
  metrics: StepMetrics[];
  exported?: { uri: string; sha256: string; chosen: string; candidates: Record<string, number> };
}

/** The config's digest (re-exported: it lives with the config so the operator can compute it). */
export { configDigest };

/**
 * Runs (or resumes) meta-training as configured; see the module comment. `storage` holds the data,
 * the checkpoints, the reports and the exported rater.
 */
export async function train(
  storage: Storage,
  config: TrainConfig,
  opts: TrainOptions = {},
): Promise<TrainResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const totalSteps = opts.steps ?? config.meta.steps;
  const settings: MetaStepSettings = { rater: config.rater, inner: config.inner };
  await useBackend(config.backend);
  const { train: trainSet, heldout } = opts.datasets ?? await loadDatasets(storage, config, log);

  const rng = new Rng(config.seed);
  const metaOpt = averageUpdates(metaOptimizer(config.meta));
  const population: PopulationExecutor = config.workers > 1
    ? await WorkerPopulation.start(config.workers, config.backend, settings)
    : new LocalPopulation(settings);
  let run: Run | null = null;
  try {
    run = await startOrResume(storage, config, rng, metaOpt, population, log);
    const stopAt = Math.min(totalSteps, opts.stopAfter ?? Infinity);
    const reporter = makeReporter(opts.progress, totalSteps, run.step, log);

    while (run.step < stopAt) {
      const started = performance.now();
      await resetDueMembers(config, run, population, rng);
      const batches = drawBatches(config, trainSet, heldout, rng);
      const results = await population.metaGradients(await toArrays(run.eta), batches);
      const metaLr = metaLrAt(config, run.metaStates[0]);
      const metaGradNorm = await metaUpdate(run, results, metaOpt, config.meta.paramEma);
      for (let i = 0; i < run.ages.length; i++) run.ages[i]++;
      run.step++;

      const m = stepMetrics(run.step, results, run.ages, run.resets, metaGradNorm, metaLr, started);
      if (!Number.isFinite(m.metaLoss)) {
        throw new Error(
          `meta-loss is ${m.metaLoss} at step ${run.step}: training diverged; lower meta.lr or inner.lr`,
        );
      }
      run.metrics.push(m);
      run.lastMetaLoss = m.metaLoss;
      reporter.step(m, config.logEvery);

      if (run.step % config.checkpointEvery === 0 || run.step === stopAt) {
        await checkpoint(storage, config, run, population, rng, totalSteps);
      }
    }
    reporter.stop();
    if (run.step === 0) await writeProgress(storage, config, 0, totalSteps, null, "training");

    const result: TrainResult = {
      step: run.step,
      eta: await toArrays(run.eta),
      etaEma: await toArrays(run.etaEma),
      members: await members(run, population),
      metrics: run.metrics,
    };
    if (run.step >= totalSteps && opts.export !== false) {
      result.exported = await exportChosenRater(
        storage,
        config,
        result,
        population,
        trainSet,
        heldout,
        log,
      );
    }
    return result;
  } finally {
    await population.close();
    if (run) disposeRun(run);
  }
}

/** The run between meta-steps: η, its average and the meta-optimiser states live on the backend. */
interface Run {
  step: number;
  eta: Params;
  etaEma: Params;
  /** One meta-optimiser state per member. */
  metaStates: OptState[];
  ages: number[];
  resets: number[];
  lastMetaLoss: number | null;
  metrics: StepMetrics[];
}

/** The run from its newest checkpoint, or a new one; the population is loaded either way. */
async function startOrResume(
  storage: Storage,
  config: TrainConfig,
  rng: Rng,
  metaOpt: PopulationOptimizer,
  population: PopulationExecutor,
  log: (line: string) => void,
): Promise<Run> {
  const state = await loadLatestCheckpoint(storage, config.output);
  if (state) {
    if (state.configDigest !== configDigest(config)) {
      throw new CheckpointError(
        `the checkpoint at step ${state.step} under ${config.output} was written by a different ` +
          `configuration; use a new output prefix, or restore the original config`,
      );
    }
    rng.state = state.rngState;
    await population.load(state.members.map((m) => ({ params: m.params, opt: m.opt })));
    const metrics = await readMetrics(storage, config.output, state.step);
    log(JSON.stringify({ event: "resumed", step: state.step, output: config.output }));
    return {
      step: state.step,
      eta: toTensors(state.eta),
      etaEma: toTensors(state.etaEma),
      metaStates: state.metaOpt.map(optStateFromArrays),
      ages: state.members.map((m) => m.age),
      resets: state.members.map((m) => m.resets),
      lastMetaLoss: state.metaLoss,
      metrics,
    };
  }
  // The draw order (rater, then each member) is part of the run's reproducibility.
  const N = config.meta.population;
  const etaArrays = initRaterArrays(config.rater, raterSeqLen(config), rng);
  const learners: LearnerArrays[] = [];
  for (let i = 0; i < N; i++) learners.push(await freshLearner(config, rng));
  await population.load(learners);
  const eta = toTensors(etaArrays);
  return {
    step: 0,
    eta,
    etaEma: toTensors(etaArrays),
    metaStates: metaOpt.init(eta, N),
    ages: new Array(N).fill(0),
    resets: new Array(N).fill(0),
    lastMetaLoss: null,
    metrics: [],
  };
}

/** Re-initialises the members whose staggered reset falls on this step. */
async function resetDueMembers(
  config: TrainConfig,
  run: Run,
  population: PopulationExecutor,
  rng: Rng,
): Promise<void> {
  const N = run.ages.length;
  for (let i = 0; i < N; i++) {
    if (dueForReset(run.step, i, N, config.meta.resetEvery)) {
      await population.replace(i, await freshLearner(config, rng));
      run.ages[i] = 0;
      run.resets[i]++;
    }
  }
}

/**
 * Moves η by the members' averaged meta-updates and its moving average towards it; returns the
 * mean over members of the meta-gradient's global norm.
 */
async function metaUpdate(
  run: Run,
  results: { grads: ParamArrays }[],
  metaOpt: PopulationOptimizer,
  paramEma: number,
): Promise<number> {
  const { eta, etaEma } = run;
  let nextEta: Params = {};
  let nextEma: Params = {};
  let nextStates: OptState[] = [];
  let gradNorm = tf.scalar(0);
  tf.tidy(() => {
    const grads = results.map((r) => toTensors(r.grads));
    let sq = tf.scalar(0);
    for (const t of grads.flatMap(Object.values)) sq = tf.add(sq, tf.sum(tf.square(t)));
    const averaged = metaOpt.update(grads, run.metaStates, eta);
    nextStates = averaged.state;
    nextEta = applyUpdates(eta, averaged.updates);
    const d = paramEma;
    nextEma = Object.fromEntries(
      Object.keys(eta).map((k) => [k, tf.add(tf.mul(etaEma[k], d), tf.mul(nextEta[k], 1 - d))]),
    );
    gradNorm.dispose();
    gradNorm = tf.div(tf.sqrt(sq), results.length);
    // What survives the scope: the new η, its average, the optimiser states, the norm.
    for (const t of [...Object.values(nextEta), ...Object.values(nextEma), gradNorm]) tf.keep(t);
    for (const st of nextStates) for (const t of stateTensors(st)) tf.keep(t);
  });
  disposeRun(run);
  run.eta = nextEta;
  run.etaEma = nextEma;
  run.metaStates = nextStates;
  const norm = (await gradNorm.data())[0];
  gradNorm.dispose();
  return norm;
}

/** Writes the run's metrics, a checkpoint and its progress, in an order that survives a crash. */
async function checkpoint(
  storage: Storage,
  config: TrainConfig,
  run: Run,
  population: PopulationExecutor,
  rng: Rng,
  totalSteps: number,
): Promise<void> {
  const state: TrainState = {
    step: run.step,
    rngState: rng.state,
    configDigest: configDigest(config),
    eta: await toArrays(run.eta),
    etaEma: await toArrays(run.etaEma),
    metaOpt: await Promise.all(run.metaStates.map(optStateToArrays)),
    members: await members(run, population),
    metaLoss: run.lastMetaLoss,
  };
  // Metrics first: after a crash between the two writes, a resume drops metric lines past its
  // checkpoint; the other order would leave a gap.
  await writeMetrics(storage, config.output, run.metrics);
  await saveCheckpoint(storage, config.output, state);
  await writeProgress(storage, config, run.step, totalSteps, run.lastMetaLoss, "training");
}

/** The members as checkpointed: the population's learners with their ages and resets. */
async function members(run: Run, population: PopulationExecutor): Promise<MemberCheckpoint[]> {
  const learners = await population.save();
  return learners.map((l, i) => ({ ...l, age: run.ages[i], resets: run.resets[i] }));
}

function disposeRun(run: Run): void {
  disposeParams(run.eta);
  disposeParams(run.etaEma);
  for (const s of run.metaStates) disposeState(s);
}

/**
 * Chooses final η or its average by held-out loss, on batches from a generator of their own (the
 * measurement must not shift the training stream), and exports the chosen one.
 */
async function exportChosenRater(
  storage: Storage,
  config: TrainConfig,
  result: TrainResult,
  population: PopulationExecutor,
  trainSet: Dataset,
  heldout: Dataset,
  log: (line: string) => void,
): Promise<NonNullable<TrainResult["exported"]>> {
  const metaLoss = result.metrics.at(-1)?.metaLoss ?? null;
  await writeProgress(storage, config, result.step, result.step, metaLoss, "exporting");
  const evalRng = new Rng(config.seed + 0x5eed);
  const rounds = Array.from({ length: 2 }, () => drawBatches(config, trainSet, heldout, evalRng));
  const candidates: Record<string, ParamArrays> = { final: result.eta };
  if (config.meta.paramEma > 0) candidates.ema = result.etaEma;
  const { chosen, losses } = await chooseRater(population, candidates, rounds);
  const exported = await exportRater(storage, {
    config,
    params: candidates[chosen],
    train: trainSet,
  });
  await writeProgress(storage, config, result.step, result.step, metaLoss, "done");
  log(JSON.stringify({
    event: "exported",
    onnx: exported.uri,
    sha256: exported.sha256,
    chosen,
    heldOutLoss: losses,
  }));
  return { uri: exported.uri, sha256: exported.sha256, chosen, candidates: losses };
}

/**
 * How the trainer (and `deno task export`, which must calibrate on the same bytes) loads a split:
 * each record up to `data.maxRecordBytes`, whatever the learners' window, because the export
 * calibrates on whole records as the scorer rates them (lib/windows.ts).
 */
export function datasetOptions(config: TrainConfig) {
  return {
    seqLen: config.seqLen,
    idField: config.data.idField,
    textField: config.data.textField,
    maxBytes: Math.max(raterSeqLen(config), config.data.maxRecordBytes),
  };
}

async function loadDatasets(
  storage: Storage,
  config: TrainConfig,
  log: (line: string) => void,
): Promise<{ train: Dataset; heldout: Dataset }> {
  const opts = datasetOptions(config);
  const [train, heldout] = await Promise.all([
    loadDataset(storage, config.data.train, { ...opts, name: "train" }),
    loadDataset(storage, config.data.heldout, { ...opts, name: "heldout" }),
  ]);
  for (const ds of [train, heldout]) {
    log(
      JSON.stringify({
        event: "data",
        split: ds.name,
        uri: ds.uri,
        summary: describeStats(ds.stats),
      }),
    );
    if (ds.count < config.meta.innerBatch) {
      log(JSON.stringify({
        event: "warning",
        message:
          `${ds.name} has only ${ds.count} records (fewer than a batch): batches repeat records`,
      }));
    }
  }
  return { train, heldout };
}

/** A newly initialised learner with a fresh inner-optimiser state. */
async function freshLearner(config: TrainConfig, rng: Rng): Promise<LearnerArrays> {
  const params = initLmArrays(config.inner, config.seqLen, rng);
  const t = toTensors(params);
  const opt = innerOptimizer(config.inner).init(t);
  const optArrays = await optStateToArrays(opt);
  disposeState(opt);
  disposeParams(t);
  return { params, opt: optArrays };
}

/**
 * K inner batches from train and one held-out batch, for each member, in member order. The rater
 * rates the windows the learner trains on (`sampleBatch`); it gets a batch of its own only when
 * its view length differs from the learners'.
 */
function drawBatches(
  config: TrainConfig,
  train: Dataset,
  heldout: Dataset,
  rng: Rng,
): MetaBatches[] {
  const { seqLen, data: { window } } = config;
  const raterView = raterSeqLen(config);
  const out: MetaBatches[] = [];
  for (let i = 0; i < config.meta.population; i++) {
    const inner = [];
    const raterInner = [];
    for (let k = 0; k < config.meta.unroll; k++) {
      const b = sampleBatch(train, config.meta.innerBatch, rng, seqLen, window, raterView);
      inner.push(b.lm);
      raterInner.push(b.rater);
    }
    // The outer objective is the held-out data as the language model reads it: windows too.
    const outer = sampleBatch(heldout, config.meta.outerBatch, rng, seqLen, window).lm;
    out.push(raterView !== seqLen ? { inner, raterInner, outer } : { inner, outer });
  }
  return out;
}

/** The learning rate the meta-optimiser applies at its next update (warm-up aware). */
function metaLrAt(config: TrainConfig, state: OptState): number {
  const count = state[state.length - 1].count;
  const w = config.meta.warmupSteps;
  return w <= 0 ? config.meta.lr : config.meta.lr * Math.min(1, (count + 1) / w);
}
