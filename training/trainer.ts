/**
 * The meta-training loop: resume or start, run meta-steps over the population, checkpoint, report
 * progress and metrics, and at the end choose and export the rater.
 *
 * One meta-step (see `training/meta-step.ts` for the meta-gradient itself):
 * 1. members due for their staggered reset are re-initialised;
 * 2. each member gets K inner batches from `train` and a held-out batch from `heldout`;
 * 3. each member's meta-gradient goes through *its own* meta-optimiser (clip → Adam → decoupled
 *    weight decay → warm-up) and the resulting *updates* are averaged into η;
 * 4. η's exponential moving average is updated (an export candidate).
 *
 * Export: the final η and its moving average are compared by a measurement — the mean held-out
 * loss after K rater-weighted inner steps, from every member's current state, on batches drawn
 * from a generator of their own — and the better one is exported with a score calibration on a
 * reference sample of `train`.
 *
 * @example
 * ```ts
 * const result = await train(storageFromEnv(Deno.env.toObject()), parseTrainConfig(json), {
 *   steps: 100,
 * });
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import cliProgress from "cli-progress";
import { quantileCalibration } from "../lib/calibration.ts";
import {
  configDigest,
  joinUri,
  raterSeqLen,
  RUN_LAYOUT,
  type TrainConfig,
  type TrainerArtifacts,
  type TrainerProgress,
} from "../lib/config.ts";
import { encodeBatch } from "../lib/bytes.ts";
import { NotFoundError, type Storage } from "../lib/storage.ts";
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
import { type Dataset, describeStats, loadDataset, recordAt, sampleBatch } from "./data.ts";
import { exportRaterOnnx, sha256Hex } from "./export-onnx.ts";
import { initLmArrays } from "./lm.ts";
import type { MetaBatches, MetaStepSettings } from "./meta-step.ts";
import { disposeParams, type ParamArrays, type Params, toArrays, toTensors } from "./params.ts";
import {
  applyUpdates,
  averageUpdates,
  disposeState,
  innerOptimizer,
  metaOptimizer,
  type OptState,
  stateTensors,
} from "./optim.ts";
import {
  dueForReset,
  type LearnerArrays,
  LocalPopulation,
  type PopulationExecutor,
} from "./population.ts";
import { initRaterArrays, raterScores } from "./rater.ts";
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
  progress?: "tty" | "json" | "none";
  /** Where JSON progress lines and notices go (default stdout). */
  log?: (line: string) => void;
}

/** One meta-step's figures (a line of `metrics.jsonl`). */
export interface StepMetrics {
  step: number;
  metaLoss: number;
  /** Per member, its meta-loss. */
  memberMetaLoss: number[];
  /** Mean over members of the unweighted inner-batch loss before each unrolled update. */
  innerLoss: number[];
  scoreMean: number;
  scoreStd: number;
  scoreMin: number;
  scoreMax: number;
  metaGradNorm: number;
  metaLr: number;
  ages: number[];
  resets: number[];
  msPerStep: number;
}

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
  const digest = configDigest(config);
  await useBackend(config.backend);

  const { train: trainSet, heldout } = opts.datasets ?? await loadDatasets(storage, config, log);

  // ---- start or resume ------------------------------------------------------------------------
  const rng = new Rng(config.seed);
  let state: TrainState | null = await loadLatestCheckpoint(storage, config.output);
  const population: PopulationExecutor = config.workers > 1
    ? await WorkerPopulation.start(config.workers, config.backend, settings)
    : new LocalPopulation(settings);
  const N = config.meta.population;
  const metaOpt = metaOptimizer(config.meta);
  let eta: Params = {};
  let etaEma: Params = {};
  let metaStates: OptState[] = [];
  let ages: number[];
  let resets: number[];
  let lastMetaLoss: number | null = null;
  let metrics: StepMetrics[] = [];
  try {
    if (state) {
      if (state.configDigest !== digest) {
        throw new CheckpointError(
          `the checkpoint at step ${state.step} under ${config.output} was written by a different ` +
            `configuration; use a new output prefix, or restore the original config`,
        );
      }
      rng.state = state.rngState;
      eta = toTensors(state.eta);
      etaEma = toTensors(state.etaEma);
      metaStates = state.metaOpt.map(optStateFromArrays);
      await population.load(state.members.map((m) => ({ params: m.params, opt: m.opt })));
      ages = state.members.map((m) => m.age);
      resets = state.members.map((m) => m.resets);
      lastMetaLoss = state.metaLoss;
      metrics = await readMetrics(storage, config.output, state.step);
      log(JSON.stringify({ event: "resumed", step: state.step, output: config.output }));
    } else {
      const etaArrays = initRaterArrays(config.rater, raterSeqLen(config), rng);
      eta = toTensors(etaArrays);
      etaEma = toTensors(etaArrays);
      metaStates = Array.from({ length: N }, () => metaOpt.init(eta));
      const learners: LearnerArrays[] = [];
      for (let i = 0; i < N; i++) learners.push(await freshLearner(config, rng));
      await population.load(learners);
      ages = new Array(N).fill(0);
      resets = new Array(N).fill(0);
    }
    let step = state?.step ?? 0;
    const captureState = async (): Promise<TrainState> => {
      const learners = await population.save();
      return {
        step,
        rngState: rng.state,
        configDigest: digest,
        eta: await toArrays(eta),
        etaEma: await toArrays(etaEma),
        metaOpt: await Promise.all(metaStates.map(optStateToArrays)),
        members: learners.map((l, i) => ({ ...l, age: ages[i], resets: resets[i] })),
        metaLoss: lastMetaLoss,
      };
    };
    const stopAt = Math.min(totalSteps, opts.stopAfter ?? Infinity);
    const reporter = makeReporter(opts.progress, totalSteps, step, log);

    // ---- the loop -----------------------------------------------------------------------------
    while (step < stopAt) {
      const started = performance.now();
      for (let i = 0; i < N; i++) {
        if (dueForReset(step, i, N, config.meta.resetEvery)) {
          await population.replace(i, await freshLearner(config, rng));
          ages[i] = 0;
          resets[i]++;
        }
      }
      const batches = drawBatches(config, trainSet, heldout, rng);
      const etaArrays = await toArrays(eta);
      const results = await population.metaGradients(etaArrays, batches);

      // Each member's meta-gradient through its own meta-optimiser; the *updates* are averaged.
      const metaLr = metaLrAt(config, metaStates[0]);
      let nextEta: Params = {};
      let nextEma: Params = {};
      const nextStates: OptState[] = [];
      let gradNorm = tf.scalar(0);
      tf.tidy(() => {
        const grads = results.map((r) => toTensors(r.grads));
        let sq = tf.scalar(0);
        for (const t of grads.flatMap(Object.values)) sq = tf.add(sq, tf.sum(tf.square(t)));
        const averaged = averageUpdates(metaOpt).update(grads, metaStates, eta);
        nextStates.push(...averaged.state);
        nextEta = applyUpdates(eta, averaged.updates);
        const d = config.meta.paramEma;
        nextEma = Object.fromEntries(
          Object.keys(eta).map((k) => [k, tf.add(tf.mul(etaEma[k], d), tf.mul(nextEta[k], 1 - d))]),
        );
        gradNorm.dispose();
        gradNorm = tf.div(tf.sqrt(sq), N);
        // What survives the scope: the new η, its average, the optimiser states, the norm.
        for (const t of [...Object.values(nextEta), ...Object.values(nextEma), gradNorm]) {
          tf.keep(t);
        }
        for (const st of nextStates) for (const t of stateTensors(st)) tf.keep(t);
      });
      disposeParams(eta);
      disposeParams(etaEma);
      for (const s of metaStates) disposeState(s);
      eta = nextEta;
      etaEma = nextEma;
      metaStates = nextStates;
      const metaGradNorm = (await gradNorm.data())[0];
      gradNorm.dispose();
      for (let i = 0; i < N; i++) ages[i]++;
      step++;

      const m = stepMetrics(step, results, ages, resets, metaGradNorm, metaLr, started);
      if (!Number.isFinite(m.metaLoss)) {
        throw new Error(
          `meta-loss is ${m.metaLoss} at step ${step}: training diverged; lower meta.lr or inner.lr`,
        );
      }
      metrics.push(m);
      lastMetaLoss = m.metaLoss;
      reporter.step(m, config.logEvery);

      if (step % config.checkpointEvery === 0 || step === stopAt) {
        state = await captureState();
        // Metrics first: after a crash between the two writes, a resume drops metric lines past
        // its checkpoint; the other order would leave a gap.
        await writeMetrics(storage, config.output, metrics);
        await saveCheckpoint(storage, config.output, state);
        await writeProgress(storage, config, step, totalSteps, lastMetaLoss, "training");
      }
    }
    reporter.stop();
    if (step === 0) await writeProgress(storage, config, 0, totalSteps, null, "training");

    const result: TrainResult = {
      step,
      eta: await toArrays(eta),
      etaEma: await toArrays(etaEma),
      members: (await captureState()).members,
      metrics,
    };
    if (step >= totalSteps && opts.export !== false) {
      result.exported = await exportRater(
        storage,
        config,
        digest,
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
    disposeParams(eta);
    disposeParams(etaEma);
    for (const s of metaStates) disposeState(s);
  }
}

async function loadDatasets(
  storage: Storage,
  config: TrainConfig,
  log: (line: string) => void,
): Promise<{ train: Dataset; heldout: Dataset }> {
  const opts = {
    seqLen: config.seqLen,
    idField: config.data.idField,
    textField: config.data.textField,
    maxBytes: Math.max(
      raterSeqLen(config),
      config.data.window === "random" ? config.data.maxRecordBytes : config.seqLen,
    ),
  };
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

/** K inner batches from train and one held-out batch, for each member, in member order. */
function drawBatches(
  config: TrainConfig,
  train: Dataset,
  heldout: Dataset,
  rng: Rng,
): MetaBatches[] {
  const { seqLen, data: { window } } = config;
  const raterView = raterSeqLen(config);
  const separate = window === "random" || raterView !== seqLen;
  const out: MetaBatches[] = [];
  for (let i = 0; i < config.meta.population; i++) {
    const inner = [];
    const raterInner = [];
    for (let k = 0; k < config.meta.unroll; k++) {
      const b = sampleBatch(train, config.meta.innerBatch, rng, seqLen, window, raterView);
      inner.push(b.lm);
      raterInner.push(b.rater);
    }
    const outer = sampleBatch(heldout, config.meta.outerBatch, rng, seqLen, window).lm;
    out.push(separate ? { inner, raterInner, outer } : { inner, outer });
  }
  return out;
}

/** The learning rate the meta-optimiser applies at its next update (warm-up aware). */
function metaLrAt(config: TrainConfig, state: OptState): number {
  const count = state[state.length - 1].count;
  const w = config.meta.warmupSteps;
  return w <= 0 ? config.meta.lr : config.meta.lr * Math.min(1, (count + 1) / w);
}

function stepMetrics(
  step: number,
  results: { metaLoss: number; innerLosses: number[]; scores: Float32Array[] }[],
  ages: number[],
  resets: number[],
  metaGradNorm: number,
  metaLr: number,
  started: number,
): StepMetrics {
  const n = results.length;
  const K = results[0].innerLosses.length;
  const innerLoss = Array.from(
    { length: K },
    (_, k) => results.reduce((s, r) => s + r.innerLosses[k], 0) / n,
  );
  let count = 0, sum = 0, sumSq = 0, min = Infinity, max = -Infinity;
  for (const r of results) {
    for (const s of r.scores) {
      for (const v of s) {
        count++;
        sum += v;
        sumSq += v * v;
        if (v < min) min = v;
        if (v > max) max = v;
      }
    }
  }
  const mean = sum / count;
  return {
    step,
    metaLoss: results.reduce((s, r) => s + r.metaLoss, 0) / n,
    memberMetaLoss: results.map((r) => r.metaLoss),
    innerLoss,
    scoreMean: mean,
    scoreStd: Math.sqrt(Math.max(0, sumSq / count - mean * mean)),
    scoreMin: min,
    scoreMax: max,
    metaGradNorm,
    metaLr,
    ages: [...ages],
    resets: [...resets],
    msPerStep: performance.now() - started,
  };
}

async function readMetrics(storage: Storage, output: string, upTo: number): Promise<StepMetrics[]> {
  try {
    const text = await storage.readText(joinUri(output, RUN_LAYOUT.metrics));
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as StepMetrics)
      .filter((m) => m.step <= upTo);
  } catch (e) {
    if (e instanceof NotFoundError) return [];
    throw e;
  }
}

async function writeMetrics(
  storage: Storage,
  output: string,
  metrics: StepMetrics[],
): Promise<void> {
  await storage.write(
    joinUri(output, RUN_LAYOUT.metrics),
    metrics.map((m) => JSON.stringify(m)).join("\n") + "\n",
    { contentType: "application/x-ndjson" },
  );
}

async function writeProgress(
  storage: Storage,
  config: TrainConfig,
  step: number,
  totalSteps: number,
  metaLoss: number | null,
  phase: TrainerProgress["phase"],
): Promise<void> {
  const progress: TrainerProgress = {
    step,
    totalSteps,
    metaLoss,
    updatedAt: new Date().toISOString(),
    phase,
    configDigest: configDigest(config),
  };
  await storage.write(
    joinUri(config.output, RUN_LAYOUT.progress),
    JSON.stringify(progress, null, 2) + "\n",
    {
      contentType: "application/json",
    },
  );
}

interface Reporter {
  step(m: StepMetrics, logEvery: number): void;
  stop(): void;
}

/** A progress bar with ETA on a terminal; JSON lines (every `logEvery` steps) otherwise. */
function makeReporter(
  mode: TrainOptions["progress"],
  total: number,
  start: number,
  log: (line: string) => void,
): Reporter {
  const kind = mode ?? (Deno.stdout.isTerminal() ? "tty" : "json");
  if (kind === "none") return { step() {}, stop() {} };
  if (kind === "tty") {
    const bar = new cliProgress.SingleBar({
      format:
        "meta-training |{bar}| {value}/{total} steps | meta-loss {loss} | {ms} ms/step | ETA {eta_formatted}",
      etaBuffer: 20,
      hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    bar.start(total, start, { loss: "-", ms: "-" });
    return {
      step(m) {
        bar.update(m.step, { loss: m.metaLoss.toFixed(4), ms: m.msPerStep.toFixed(0) });
      },
      stop() {
        bar.stop();
      },
    };
  }
  const t0 = performance.now();
  let first = start;
  return {
    step(m, logEvery) {
      if (m.step % logEvery !== 0 && m.step !== total) return;
      const elapsed = (performance.now() - t0) / 1000;
      const rate = (m.step - first) / Math.max(elapsed, 1e-9);
      log(JSON.stringify({
        event: "progress",
        step: m.step,
        totalSteps: total,
        metaLoss: Number(m.metaLoss.toFixed(5)),
        innerLoss: m.innerLoss.map((x) => Number(x.toFixed(5))),
        scoreStd: Number(m.scoreStd.toFixed(5)),
        msPerStep: Math.round(m.msPerStep),
        etaSeconds: Math.round((total - m.step) / Math.max(rate, 1e-9)),
      }));
    },
    stop() {
      first = total;
    },
  };
}

/** Chooses the rater to export by a measurement, calibrates it and writes the ONNX artifacts. */
async function exportRater(
  storage: Storage,
  config: TrainConfig,
  digest: string,
  result: TrainResult,
  population: PopulationExecutor,
  trainSet: Dataset,
  heldout: Dataset,
  log: (line: string) => void,
): Promise<NonNullable<TrainResult["exported"]>> {
  await writeProgress(
    storage,
    config,
    result.step,
    result.step,
    result.metrics.at(-1)?.metaLoss ?? null,
    "exporting",
  );
  // The measurement draws from its own generator: it must not shift the training stream.
  const evalRng = new Rng(config.seed + 0x5eed);
  const rounds = 2;
  const evalBatches = Array.from(
    { length: rounds },
    () => drawBatches(config, trainSet, heldout, evalRng),
  );
  const candidates: Record<string, ParamArrays> = { final: result.eta };
  if (config.meta.paramEma > 0) candidates.ema = result.etaEma;
  const losses: Record<string, number> = {};
  for (const [name, params] of Object.entries(candidates)) {
    let total = 0;
    for (const batches of evalBatches) {
      const l = await population.heldOutLosses(params, batches);
      total += l.reduce((a, b) => a + b, 0) / l.length;
    }
    losses[name] = total / rounds;
  }
  const chosen = Object.keys(losses).reduce((a, b) => (losses[b] < losses[a] ? b : a));
  const params = candidates[chosen];

  const scores = scoreReferenceSample(config, params, trainSet, evalRng);
  const calibration = quantileCalibration(scores);
  const onnx = exportRaterOnnx({
    params,
    rater: config.rater,
    seqLen: raterSeqLen(config),
    calibration,
    configDigest: digest,
  });
  const sha256 = sha256Hex(onnx);
  const onnxUri = joinUri(config.output, RUN_LAYOUT.onnx);
  await storage.write(onnxUri, onnx, { contentType: "application/octet-stream" });
  await storage.write(`${onnxUri}.sha256`, `${sha256}  ${RUN_LAYOUT.onnx}\n`, {
    contentType: "text/plain",
  });
  const artifacts: TrainerArtifacts = {
    onnx: onnxUri,
    sha256,
    calibration: { samples: calibration.samples, quantiles: calibration.quantiles },
    finishedAt: new Date().toISOString(),
  };
  await storage.write(
    joinUri(config.output, RUN_LAYOUT.artifacts),
    JSON.stringify(artifacts, null, 2) + "\n",
    { contentType: "application/json" },
  );
  await writeProgress(
    storage,
    config,
    result.step,
    result.step,
    result.metrics.at(-1)?.metaLoss ?? null,
    "done",
  );
  log(JSON.stringify({ event: "exported", onnx: onnxUri, sha256, chosen, heldOutLoss: losses }));
  return { uri: onnxUri, sha256, chosen, candidates: losses };
}

/** Scores of up to 4096 train records (all of them if fewer), for the score calibration. */
function scoreReferenceSample(
  config: TrainConfig,
  params: ParamArrays,
  trainSet: Dataset,
  rng: Rng,
): number[] {
  const n = Math.min(trainSet.count, 4096);
  const indices = trainSet.count <= 4096
    ? Array.from({ length: n }, (_, i) => i)
    : Array.from({ length: n }, () => rng.int(trainSet.count));
  const eta = toTensors(params);
  const scores: number[] = [];
  try {
    for (let at = 0; at < n; at += 256) {
      const chunk = indices.slice(at, at + 256).map((i) => recordAt(trainSet, i));
      const s = tf.tidy(() =>
        raterScores(eta, config.rater, encodeBatch(chunk, raterSeqLen(config)))
      );
      scores.push(...(s.dataSync() as Float32Array));
      s.dispose();
    }
  } finally {
    disposeParams(eta);
  }
  return scores;
}
