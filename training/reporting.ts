/**
 * What a run reports while it trains: one line of figures per meta-step (`metrics.jsonl`), the
 * progress the operator polls (`progress.json`), and what a person watching sees (a progress bar
 * on a terminal, JSON lines otherwise).
 *
 * @example
 * ```ts
 * const reporter = makeReporter("json", config.meta.steps, 0, console.log);
 * reporter.step(stepMetrics(1, results, ages, resets, gradNorm, lr, started), config.logEvery);
 * await writeMetrics(storage, config.output, metrics);
 * await writeProgress(storage, config, 1, config.meta.steps, metrics[0].metaLoss, "training");
 * ```
 */
import cliProgress from "cli-progress";
import {
  configDigest,
  joinUri,
  RUN_LAYOUT,
  type TrainConfig,
  type TrainerProgress,
} from "../lib/config.ts";
import { NotFoundError, type Storage } from "../lib/storage.ts";
import type { MemberStepResult } from "./population.ts";

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

/** The figures of the meta-step that started at `started` (a `performance.now()` time). */
export function stepMetrics(
  step: number,
  results: MemberStepResult[],
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

/** The metric lines of steps up to `upTo` (a resume drops those past its checkpoint). */
export async function readMetrics(
  storage: Storage,
  output: string,
  upTo: number,
): Promise<StepMetrics[]> {
  try {
    const text = await storage.readText(joinUri(output, RUN_LAYOUT.metrics));
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as StepMetrics)
      .filter((m) => m.step <= upTo);
  } catch (e) {
    if (e instanceof NotFoundError) return [];
    throw e;
  }
}

/** Rewrites `metrics.jsonl` whole (object stores have no append). */
export async function writeMetrics(
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

/** Writes `progress.json`, which the operator reads for the MetaTraining's status. */
export async function writeProgress(
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
    { contentType: "application/json" },
  );
}

/** How progress is shown: a bar with ETA, JSON lines, or nothing. */
export type ProgressMode = "tty" | "json" | "none";

/** Shows each meta-step's progress. */
export interface Reporter {
  step(m: StepMetrics, logEvery: number): void;
  stop(): void;
}

/**
 * A progress bar with ETA on a terminal; JSON lines (every `logEvery` steps and the last) otherwise.
 * Without a mode, a terminal on stdout gets the bar.
 */
export function makeReporter(
  mode: ProgressMode | undefined,
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
