/**
 * Sizes of the end-to-end demo: `default` is the real measurement, `quick` the same steps at a
 * size that finishes well within ten minutes on two cores, `tiny` the CI smoke size (every stage and
 * every report section, numbers meaningless).
 *
 * The corpus composition and the evaluation protocol are the same in every preset; only sizes
 * change. They were fixed before looking at results.
 */
import type { TrainConfigInput } from "../lib/config.ts";
import type { DownstreamConfig } from "./trainer.ts";
import { DEFAULT_DOWNSTREAM } from "./trainer.ts";
import { BASELINE_METHODS, type BaselineMethod } from "./evaluation.ts";

/** One preset. */
export interface DemoPreset {
  name: string;
  corpus: { size: number; shardSize: number };
  /** Meta-training config fields (data and output are filled in by the demo). */
  metaTraining: Omit<TrainConfigInput, "data" | "output">;
  fractions: number[];
  seeds: number[];
  baselines: BaselineMethod[];
  downstream: DownstreamConfig;
  /** The ≥4× larger LM of the transfer check. */
  transfer: { downstream: DownstreamConfig; seeds: number[] };
  /** Runs of the clean-only corpus use these seeds (baseline and DataRater fractions only). */
  cleanOnlySeeds: number[];
  jobs: number;
}

const ALL_BASELINES: BaselineMethod[] = [...BASELINE_METHODS];

/**
 * Real measurement: about 62 minutes end to end on two cores (2026-11-25; three raters, 57
 * downstream runs, two at a time), before the fastText baseline added 8 runs (65 now).
 */
const DEFAULT: DemoPreset = {
  name: "default",
  corpus: { size: 15000, shardSize: 1000 },
  metaTraining: {
    seqLen: 64,
    rater: { kind: "transformer", dModel: 32, layers: 1, heads: 4, ffn: 64 },
    inner: { dModel: 32, layers: 1, heads: 4, ffn: 128, lr: 3e-3 },
    meta: {
      steps: 400,
      population: 4,
      resetEvery: 100,
      lr: 5e-3,
      warmupSteps: 50,
      innerBatch: 32,
      outerBatch: 32,
    },
    workers: 2,
  },
  fractions: [0.1, 0.25, 0.5, 0.75],
  seeds: [0, 1],
  baselines: ALL_BASELINES,
  downstream: { ...DEFAULT_DOWNSTREAM },
  transfer: {
    // d 64 → 128 at one layer: 4× the non-embedding parameters.
    downstream: {
      ...DEFAULT_DOWNSTREAM,
      lm: { dModel: 128, layers: 1, heads: 4, ffn: 512 },
      lr: 2e-3,
    },
    seeds: [0],
  },
  cleanOnlySeeds: [0, 1],
  jobs: 2,
};

const QUICK_DOWNSTREAM: DownstreamConfig = {
  ...DEFAULT_DOWNSTREAM,
  lm: { dModel: 32, layers: 1, heads: 4, ffn: 128 },
  batch: 16,
  steps: 150,
  evalEvery: 25,
  evalWindows: 128,
};

/** Same steps, small: measured 6 min 30 s on two otherwise idle cores (2026-11-30). */
const QUICK: DemoPreset = {
  name: "quick",
  corpus: { size: 3000, shardSize: 500 },
  metaTraining: {
    seqLen: 64,
    rater: { kind: "transformer", dModel: 16, layers: 1, heads: 2, ffn: 32 },
    inner: { dModel: 16, layers: 1, heads: 2, ffn: 64, lr: 3e-3 },
    meta: {
      steps: 60,
      population: 2,
      resetEvery: 30,
      lr: 1e-2,
      warmupSteps: 10,
      innerBatch: 16,
      outerBatch: 16,
    },
    workers: 2,
    checkpointEvery: 20,
  },
  fractions: [0.1, 0.25, 0.5, 0.75],
  seeds: [0, 1],
  baselines: ALL_BASELINES,
  downstream: QUICK_DOWNSTREAM,
  transfer: {
    downstream: { ...QUICK_DOWNSTREAM, lm: { dModel: 64, layers: 1, heads: 4, ffn: 256 } },
    seeds: [0],
  },
  cleanOnlySeeds: [0],
  jobs: 2,
};

const TINY_DOWNSTREAM: DownstreamConfig = {
  ...DEFAULT_DOWNSTREAM,
  lm: { dModel: 8, layers: 1, heads: 2, ffn: 16 },
  seqLen: 32,
  batch: 8,
  steps: 8,
  evalEvery: 4,
  evalWindows: 16,
  evalBatch: 16,
  warmupSteps: 2,
};

/** CI smoke size: every stage and report section, in about a minute. */
const TINY: DemoPreset = {
  name: "tiny",
  corpus: { size: 180, shardSize: 60 },
  metaTraining: {
    seqLen: 32,
    rater: { kind: "mlp", dModel: 8, layers: 0, heads: 1, ffn: 8, hidden: 8 },
    inner: { dModel: 8, layers: 1, heads: 2, ffn: 16, lr: 3e-3 },
    meta: {
      steps: 3,
      population: 2,
      resetEvery: 2,
      lr: 1e-2,
      warmupSteps: 1,
      innerBatch: 8,
      outerBatch: 8,
    },
    workers: 1,
    checkpointEvery: 3,
  },
  fractions: [0.25, 0.5],
  seeds: [0, 1],
  baselines: ALL_BASELINES,
  downstream: TINY_DOWNSTREAM,
  transfer: {
    downstream: { ...TINY_DOWNSTREAM, lm: { dModel: 16, layers: 1, heads: 2, ffn: 32 } },
    seeds: [0],
  },
  cleanOnlySeeds: [0],
  jobs: 2,
};

/** Presets by name. */
export const PRESETS: Record<string, DemoPreset> = { default: DEFAULT, quick: QUICK, tiny: TINY };
