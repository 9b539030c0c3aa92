/**
 * The rater's export, one procedure for the trainer's end of run and for `deno task export`:
 * choose the weights (the trainer, by a measurement), calibrate them, and write `rater.onnx`,
 * `rater.onnx.sha256` and `artifacts.json` under the run's output prefix.
 *
 * Calibration: the reference sample is up to {@link REFERENCE_SIZE} train records drawn *without
 * replacement* from a generator seeded with the config's seed (all of them when there are fewer),
 * scored by the exported ONNX graph itself. Without replacement, no record counts twice in the
 * quantiles, and a split smaller than the sample is used exactly once each. Scoring with the ONNX
 * graph rather than tfjs makes the serving thresholds quantiles of exactly what the scoring
 * function computes (onnxruntime and tfjs agree only to float tolerance). The sample depends only
 * on the config, the train split and the weights, so both callers write the same bytes for the same
 * checkpoint (test/export/one-export.test.ts).
 *
 * @example
 * ```ts
 * const exported = await exportRater(storage, { config, params: state.etaEma, train: trainSet });
 * console.log(exported.uri, exported.sha256);
 * ```
 */
import {
  configDigest,
  joinUri,
  raterSeqLen,
  RUN_LAYOUT,
  type TrainConfig,
  type TrainerArtifacts,
} from "../lib/config.ts";
import type { ScoreCalibration } from "../lib/calibration.ts";
import type { Storage } from "../lib/storage.ts";
import { type Dataset, recordAt } from "./data.ts";
import { exportCalibratedRater } from "./export-onnx.ts";
import type { MetaBatches } from "./meta-step.ts";
import type { ParamArrays } from "./params.ts";
import type { PopulationExecutor } from "./population.ts";
import { Rng } from "./rng.ts";

/** Records in the calibration's reference sample (at most; fewer when the split is smaller). */
export const REFERENCE_SIZE = 4096;

/**
 * `size` records of `train` (all of them if it has no more), drawn without replacement by a partial
 * Fisher-Yates shuffle from a generator seeded with `seed`.
 *
 * @example
 * ```ts
 * const reference = referenceSample(trainSet, 4096, config.seed);
 * ```
 */
export function referenceSample(train: Dataset, size: number, seed: number): Uint8Array[] {
  const n = Math.min(size, train.count);
  const order = Uint32Array.from({ length: train.count }, (_, i) => i);
  const rng = new Rng(seed);
  for (let i = 0; i < n; i++) {
    const j = i + rng.int(train.count - i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return Array.from(order.subarray(0, n), (i) => recordAt(train, i));
}

/** Inputs of {@link exportRater}. */
export interface ExportRaterOptions {
  /** The run's config: rater shape, seed and output prefix (`output` overrides the prefix). */
  config: TrainConfig;
  /** The rater's weights. */
  params: ParamArrays;
  /** The run's train split, whose records the calibration is computed on. */
  train: Dataset;
  /** Reference sample size (default {@link REFERENCE_SIZE}). */
  referenceSize?: number;
  /** The run's output prefix (default `config.output`). */
  output?: string;
  /** Write only the model, to this URI (artifacts.json describes the run's own export). */
  to?: string;
  /** The time `artifacts.json` records as `finishedAt` (default now). */
  finishedAt?: Date;
}

/** What {@link exportRater} wrote. */
export interface ExportedRater {
  /** Where the model is. */
  uri: string;
  sha256: string;
  bytes: number;
  calibration: ScoreCalibration;
}

/**
 * Calibrates and exports `params` (see the module comment); writes `<output>/rater.onnx`, its
 * `.sha256` and `<output>/artifacts.json`, or with `to` only the model there.
 */
export async function exportRater(
  storage: Storage,
  opts: ExportRaterOptions,
): Promise<ExportedRater> {
  const { config } = opts;
  const output = opts.output ?? config.output;
  const exported = await exportCalibratedRater({
    params: opts.params,
    rater: config.rater,
    seqLen: raterSeqLen(config),
    configDigest: configDigest(config),
    reference: referenceSample(opts.train, opts.referenceSize ?? REFERENCE_SIZE, config.seed),
  });
  const uri = opts.to ?? joinUri(output, RUN_LAYOUT.onnx);
  await storage.write(uri, exported.model, { contentType: "application/octet-stream" });
  if (!opts.to) {
    // The digest beside the model, then artifacts.json: its presence says the export is complete.
    await storage.write(`${uri}.sha256`, `${exported.sha256}  ${RUN_LAYOUT.onnx}\n`, {
      contentType: "text/plain",
    });
    const artifacts: TrainerArtifacts = {
      onnx: uri,
      sha256: exported.sha256,
      calibration: {
        samples: exported.calibration.samples,
        quantiles: exported.calibration.quantiles,
      },
      finishedAt: (opts.finishedAt ?? new Date()).toISOString(),
    };
    await storage.write(
      joinUri(output, RUN_LAYOUT.artifacts),
      JSON.stringify(artifacts, null, 2) + "\n",
      { contentType: "application/json" },
    );
  }
  return {
    uri,
    sha256: exported.sha256,
    bytes: exported.model.length,
    calibration: exported.calibration,
  };
}

/** The candidate weights' mean held-out losses and the name of the lowest. */
export interface RaterChoice {
  chosen: string;
  losses: Record<string, number>;
}

/**
 * Measures each candidate rater by the mean held-out loss after K rater-weighted inner steps from
 * every member's current state, over the given rounds of batches, and picks the lowest (the first
 * listed on a tie).
 */
export async function chooseRater(
  population: PopulationExecutor,
  candidates: Record<string, ParamArrays>,
  rounds: MetaBatches[][],
): Promise<RaterChoice> {
  const losses: Record<string, number> = {};
  for (const [name, params] of Object.entries(candidates)) {
    let total = 0;
    for (const batches of rounds) {
      const l = await population.heldOutLosses(params, batches);
      total += l.reduce((a, b) => a + b, 0) / l.length;
    }
    losses[name] = total / rounds.length;
  }
  const chosen = Object.keys(losses).reduce((a, b) => (losses[b] < losses[a] ? b : a));
  return { chosen, losses };
}
