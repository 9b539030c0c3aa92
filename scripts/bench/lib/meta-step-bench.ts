/**
 * What the meta-step benchmarks share: the step configs they measure and a timer that runs the
 * real trainer loop (batch sampling, meta-gradients, the per-member meta-Adam and the averaged
 * update) on in-memory prose. `scripts/bench/meta-step.ts` and the GPU kit's entry
 * (`scripts/gpu-kit/entry.ts`) both time steps with it, so their figures are the same measurement.
 *
 * @example
 * ```ts
 * const r = await benchMetaStep("meta-step-reference", { ...REFERENCE_STEP, backend: "wasm" }, 2, 8);
 * r.msPerStep;
 * ```
 */
import { parseTrainConfig, type TrainConfigInput } from "../../../lib/config.ts";
import { FileStorage } from "../../../lib/storage.ts";
import { datasetFromTexts } from "../../../training/data.ts";
import { train } from "../../../training/trainer.ts";
import { Rng } from "../../../training/rng.ts";

/** A step to time: a trainer config without data or output (the timer supplies both). */
export type StepConfig = Omit<TrainConfigInput, "data" | "output">;

/**
 * Issue 3's reference step — batch 32, 64 bytes, inner LM d=64 with 1 layer and 4 heads, MLP rater
 * (embedding 32, 64 hidden), 2 plain-SGD inner updates, 1 inner model. The same step written
 * plainly in PyTorch is `reference/meta_step_torch.py` (its `--size reference`).
 */
export const REFERENCE_STEP: StepConfig = {
  seqLen: 64,
  rater: { kind: "mlp", dModel: 32, hidden: 64 },
  inner: { dModel: 64, layers: 1, heads: 4, optimizer: "sgd", lr: 0.1 },
  meta: { population: 1, unroll: 2, innerBatch: 32, outerBatch: 32 },
};

/**
 * One population member of the GPU example (`k8s/examples/metatraining-gpu.yaml`): its sequence
 * length (256), inner model (d=128, 2 layers, 4 heads, ffn 512) and batches (128), with the
 * reference's MLP rater and plain SGD so that `reference/meta_step_torch.py --size large` is the
 * same step. Members run one after another on one device, so the example's population of 8 costs
 * about 8 of these per meta-step. tfjs-wasm cannot run it: its tape outgrows the 4 GiB wasm heap.
 */
export const LARGE_STEP: StepConfig = {
  seqLen: 256,
  rater: { kind: "mlp", dModel: 32, hidden: 64 },
  inner: { dModel: 128, layers: 2, heads: 4, ffn: 512, optimizer: "sgd", lr: 0.1 },
  meta: { population: 1, unroll: 2, innerBatch: 128, outerBatch: 128 },
};

/**
 * A smoke-test step (the GPU kit's `--quick`): the reference's shape at a size Deno's software
 * WebGPU adapter runs in seconds; `reference/meta_step_torch.py --size tiny` is the same step.
 */
export const TINY_STEP: StepConfig = {
  seqLen: 16,
  rater: { kind: "mlp", dModel: 32, hidden: 64 },
  inner: { dModel: 16, layers: 1, heads: 2, ffn: 32, optimizer: "sgd", lr: 0.1 },
  meta: { population: 1, unroll: 2, innerBatch: 8, outerBatch: 8 },
};

/** The process's peak resident set (VmHWM) in MiB; the current one where /proc is absent. */
export function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch { /* not Linux */ }
  return Math.round(Deno.memoryUsage().rss / 2 ** 20);
}

/** Prose-like records of ~100 bytes (the timing does not depend on their content). */
export function benchTexts(n: number, seed: number): string[] {
  const rng = new Rng(seed);
  const words = "the of and to in is was he for it with as his on be at by had not are but".split(
    " ",
  );
  return Array.from({ length: n }, () => {
    let s = "";
    while (s.length < 100) s += words[rng.int(words.length)] + " ";
    return s;
  });
}

/** One figure: the median of the measured steps' milliseconds. */
export interface MetaStepFigure {
  bench: string;
  msPerStep: number;
  steps: number;
  peakRssMiB: number;
}

/** Runs `warmup + measured` real trainer steps of `input` and returns the figure. */
export async function benchMetaStep(
  name: string,
  input: StepConfig,
  warmup: number,
  measured: number,
): Promise<MetaStepFigure> {
  const output = await Deno.makeTempDir({ prefix: "bench-meta-step-" });
  const config = parseTrainConfig({
    ...input,
    data: { train: "memory", heldout: "memory" },
    output,
    checkpointEvery: 1_000_000,
  });
  const seqLen = config.seqLen;
  // Data comes from memory (below); checkpoints and reports go to the temporary folder.
  const result = await train(new FileStorage(), config, {
    steps: warmup + measured,
    export: false,
    progress: "none",
    datasets: {
      train: datasetFromTexts("train", benchTexts(2000, 1), seqLen),
      heldout: datasetFromTexts("heldout", benchTexts(500, 2), seqLen),
    },
  });
  const times = result.metrics.slice(warmup).map((m) => m.msPerStep).sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  await Deno.remove(output, { recursive: true });
  return { bench: name, msPerStep: Math.round(median), steps: measured, peakRssMiB: peakRssMiB() };
}
