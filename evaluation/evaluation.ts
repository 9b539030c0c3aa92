/**
 * The downstream evaluation (issue 6, step 4; protocol of issue 12): train byte-level LMs from
 * scratch, same model, optimiser and token budget, on all data (baseline), on each rater's filtered
 * data at each discard fraction (read through the filter manifests; several raters share one set of
 * baseline runs), and on the baselines' data (C4/Gopher heuristics, perplexity filtering, random
 * dropping, a DCLM-style fastText classifier, the source-label oracles); evaluate each on the test
 * sets; compute net compute gains per seed. Every run is a resumable stage: its result object is written
 * once at the end, and a rerun skips runs whose result exists.
 *
 * @example
 * ```ts
 * const result = await runEvaluation(storage, { variant: "mixture", train: "s3://b/c/train/", ... });
 * ```
 */
import { fileURLToPath } from "node:url";
import pMap from "p-map";
import { forEachLine, track } from "../lib/children.ts";
import { joinUri } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { type ComputeGain, computeGain, type SeedSummary, summarizeSeeds } from "./compute-gain.ts";
import { type EvalRecord, excerpt, loadRecords, loadScores, writeRecordShards } from "./data.ts";
import { DEFAULT_FASTTEXT, fastTextLine, trainFastTextClassifier } from "./fasttext.ts";
import {
  classifierFilter,
  type ClassifierScores,
  type FilterOutput,
  heuristicBaseline,
  keepRatesByPosition,
  keepRatesBySource,
  noCorruptOracleFilter,
  oracleFilter,
  perplexityFilter,
  perplexityScores,
  randomFilter,
} from "./filters.ts";
import type { RunData, RunResult, RunSpec } from "./run.ts";
import type { DownstreamConfig } from "./trainer.ts";
import { useBackend } from "../training/backend.ts";
import { Rng } from "../training/rng.ts";

/** Baseline filters the evaluation can run. */
export const BASELINE_METHODS = [
  "heuristic",
  "perplexity",
  "random",
  "fasttext",
  "oracle",
  "oracle-no-corrupt",
] as const;
/** One of {@link BASELINE_METHODS}. */
export type BaselineMethod = (typeof BASELINE_METHODS)[number];

/** A DataRater's filter manifests, evaluated beside the baselines. */
export interface RaterInput {
  /** Method name in runs and the report (`datarater` for the headline rater). */
  method: string;
  /** Manifests per discard fraction (`String(fraction)` → prefix of one manifest per shard). */
  manifests: Record<string, string>;
  /** The rater's inference FLOPs per record scored. */
  flopsPerRecord: number;
  /** Whether the larger LM of the transfer check trains on this rater's data too. */
  transfer: boolean;
}

/** A record in the report's example lists: a short excerpt, around the damage where it has one. */
export interface RatedExample {
  score: number;
  source: string;
  /** `head`, `body`, or `n/a` where the corpus does not say. */
  position: string;
  text: string;
}

/** What one rater's scores say about the train split. */
export interface RaterAnalysis {
  method: string;
  /** Mean score and count per source. */
  scoreBySource: Record<string, { mean: number; count: number }>;
  lowestRated: RatedExample[];
  highestRated: RatedExample[];
  /** `String(fraction)` → the raw-score threshold its manifests applied (keep iff score ≥ it). */
  thresholds: Record<string, number | null>;
}

/**
 * Records never seen in meta-training (the corpus's `unseen/` split: junk kinds the pool lacks, and
 * prose controls), scored by the headline rater and kept or not by its train-split thresholds.
 */
export interface UnseenAnalysis {
  /** Source → record count, mean score, and share kept at each fraction (`String(fraction)`). */
  bySource: Record<string, { count: number; meanScore: number; keep: Record<string, number> }>;
}

/** What to evaluate. */
export interface EvaluationInput {
  /** Name of this corpus variant (`mixture`, `clean-only`). */
  variant: string;
  train: string;
  /** Reference data for the perplexity filter's LM (the rater's held-out split). */
  heldout: string;
  /**
   * The target set: the fastText classifier's positives (the pool's train split gives its
   * negatives). Default: `heldout`.
   */
  target?: string;
  /** Test set name → prefix. */
  testSets: Record<string, string>;
  /** The test set the headline figures use. */
  primaryTest: string;
  /** The raters evaluated, each at every fraction; the first is the headline. */
  raters: RaterInput[];
  /**
   * The `unseen/` split and the headline rater's manifests of it (any policy: keep decisions use
   * the train split's thresholds); absent when the corpus has no such split.
   */
  unseen?: { records: string; manifests: string };
  baselines: BaselineMethod[];
  fractions: number[];
  seeds: number[];
  downstream: DownstreamConfig;
  /** The ≥4× larger LM of the transfer check (baseline + raters with `transfer` at every fraction). */
  transfer?: { downstream: DownstreamConfig; seeds: number[] };
  /** Prefix for filtered datasets, run specs and results. */
  output: string;
  /** Runs at once (each is a process on its own core). */
  jobs: number;
  /**
   * Environment of the run processes, which build their storage from it (e.g. `s3SettingsToEnv`
   * of the store's settings; default: this process's environment).
   */
  runEnv?: Record<string, string>;
}

/** A run reduced to what the report needs. */
export interface RunSummary {
  name: string;
  method: string;
  fraction: number | null;
  seed: number;
  size: "small" | "large";
  trainRecords: number;
  finalLosses: Record<string, number>;
  curve: { flops: number; losses: Record<string, number> }[];
  trainFlops: number;
  wallSeconds: number;
}

/** Gains of one method (at one fraction) over the baseline, per test set. */
export interface MethodGain {
  method: string;
  fraction: number | null;
  size: "small" | "large";
  /** Seeds of `perSeed` and `finalLossPerSeed`, in order (pair methods by seed with these). */
  seeds: number[];
  /** Extra FLOPs charged (the rater's or the perplexity LM's inference over every record scored). */
  filterFlops: number;
  byTest: Record<
    string,
    {
      perSeed: ComputeGain[];
      summary: SeedSummary;
      finalLoss: SeedSummary;
      finalLossPerSeed: number[];
    }
  >;
}

/** Everything the report is written from. */
export interface EvaluationResult {
  variant: string;
  primaryTest: string;
  testSets: string[];
  fractions: number[];
  seeds: number[];
  trainRecords: number;
  runs: RunSummary[];
  gains: MethodGain[];
  /** `method@fraction` → source → share kept. */
  keepRates: Record<string, Record<string, number>>;
  /** `method@fraction` → source → position of the junk (`head`, `body`, `n/a`) → share kept. */
  keepByPosition: Record<string, Record<string, Record<string, number>>>;
  /** Per rater (in input order; the first is the headline). */
  raters: RaterAnalysis[];
  /** The headline rater on the `unseen/` split; null when the corpus has none. */
  unseen: UnseenAnalysis | null;
  heuristicReasons: Record<string, number>;
  /** The fastText baseline's classifier, when it ran. */
  classifier?: ClassifierStats;
  config: {
    downstream: DownstreamConfig;
    transfer?: DownstreamConfig;
    /** Rater method → inference FLOPs per record. */
    raterFlopsPerRecord: Record<string, number>;
  };
}

/** What the fastText baseline's classifier was trained on and how fast it scores. */
export interface ClassifierStats {
  positives: number;
  negatives: number;
  trainSeconds: number;
  /** Bytes of the train split scored. */
  scoredBytes: number;
  /** Scoring throughput on one thread (fastText's predict is single-threaded here). */
  mbPerSecondPerCore: number;
}

/**
 * fastText's forward FLOPs for one text: one `dim`-wide add per word and word bigram (plus the
 * end-of-line token fastText appends), the average, and the two-label output layer.
 */
export function fastTextFlops(text: string, dim: number): number {
  const words = fastTextLine(text).split(/\s+/).filter(Boolean).length + 1;
  return (2 * words - 1) * dim + dim + 2 * 2 * dim;
}

const RUN_SCRIPT = fileURLToPath(new URL("./run.ts", import.meta.url));

/** `25` for 0.25: fraction labels in names. */
export function pct(f: number): string {
  return String(Math.round(f * 100));
}

/** Spawns one run as a process; resolves when its result exists. */
async function spawnRun(
  specUri: string,
  name: string,
  env: Record<string, string> | undefined,
  log: (l: string) => void,
): Promise<void> {
  const child = track(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", RUN_SCRIPT, specUri],
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  let stderr = "";
  const [status] = await Promise.all([
    child.status,
    forEachLine(child.stdout, log),
    forEachLine(child.stderr, (l) => (stderr += l + "\n")),
  ]);
  if (!status.success) {
    throw new Error(`downstream run ${name} failed (exit ${status.code}):\n${stderr.slice(-4000)}`);
  }
}

/** Runs tasks with at most `jobs` at once; rejects with the first failure after the rest settle. */
export async function pool<T>(
  items: T[],
  jobs: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  try {
    // Not stopping on an error: the runs already started finish and keep their outputs, so a
    // rerun resumes from them.
    await pMap(items, work, { concurrency: Math.max(1, jobs), stopOnError: false });
  } catch (e) {
    throw e instanceof AggregateError && e.errors.length > 0 ? e.errors[0] : e;
  }
}

function summarizeRun(r: RunResult): RunSummary {
  return {
    name: r.spec.name,
    method: r.spec.meta.method,
    fraction: r.spec.meta.fraction,
    seed: r.spec.meta.seed,
    size: r.spec.meta.size,
    trainRecords: r.trainRecords,
    finalLosses: r.finalLosses,
    curve: r.curve.map((p) => ({ flops: p.flops, losses: p.losses })),
    trainFlops: r.curve[r.curve.length - 1].flops,
    wallSeconds: r.wallSeconds,
  };
}

/**
 * Builds the baselines' filtered datasets (reusing finished ones), plans every run, runs the
 * missing ones, and computes gains and the rater analysis.
 */
export async function runEvaluation(
  storage: Storage,
  input: EvaluationInput,
  log: (line: string) => void = (l) => console.error(l),
): Promise<EvaluationResult> {
  const out = (name: string) => joinUri(input.output, name);
  log(`[${input.variant}] loading ${input.train}`);
  const train = await loadRecords(storage, input.train);
  const filterFlops: Record<string, number> = {};
  const keepRates: Record<string, Record<string, number>> = {};
  const keepByPosition: EvaluationResult["keepByPosition"] = {};
  let heuristicReasons: Record<string, number> = {};
  let classifier: ClassifierStats | undefined;

  // --- Baseline filters, materialised as record shards (a finished one has `_done.json`).
  const datasets: { key: string; method: string; fraction: number | null; data: RunData }[] = [
    {
      key: "baseline",
      method: "baseline",
      fraction: null,
      data: { kind: "records", prefix: input.train },
    },
  ];
  const materialise = async (key: string, make: () => Promise<FilterOutput> | FilterOutput) => {
    const prefix = out(`filtered/${key}/`);
    const done = await storage.readJsonIfExists<
      {
        inferenceFlops: number;
        keepRates: Record<string, number>;
        keepByPosition?: Record<string, Record<string, number>>;
        reasons?: Record<string, number>;
      }
    >(
      joinUri(prefix, "_done.json"),
    );
    if (done) {
      filterFlops[key] = done.inferenceFlops;
      keepRates[key] = done.keepRates;
      // A filtered set written before positions were recorded has none: reported as n/a.
      if (done.keepByPosition) keepByPosition[key] = done.keepByPosition;
      if (done.reasons) heuristicReasons = done.reasons;
      return prefix;
    }
    const f = await make();
    const rates = keepRatesBySource(train, f.kept);
    const byPosition = keepRatesByPosition(train, f.kept);
    await writeRecordShards(storage, prefix, f.kept, {
      inferenceFlops: f.inferenceFlops,
      keepRates: rates,
      keepByPosition: byPosition,
      reasons: f.reasons,
    });
    filterFlops[key] = f.inferenceFlops;
    keepRates[key] = rates;
    keepByPosition[key] = byPosition;
    if (f.reasons) heuristicReasons = f.reasons;
    log(`[${input.variant}] filter ${key}: kept ${f.kept.length} of ${train.length}`);
    return prefix;
  };
  // Baselines with one setting (no fraction): each a filter over the whole train split.
  const whole: [BaselineMethod, () => FilterOutput | Promise<FilterOutput>][] = [
    ["heuristic", () => heuristicBaseline(train)],
    ["oracle", () => oracleFilter(train)],
    ["oracle-no-corrupt", () => noCorruptOracleFilter(train)],
  ];
  for (const [method, filter] of whole) {
    if (!input.baselines.includes(method)) continue;
    const prefix = await materialise(method, filter);
    datasets.push({ key: method, method, fraction: null, data: { kind: "records", prefix } });
  }
  // Baselines with a discard fraction. A scorer is built once, lazily: a rerun that finds every
  // filtered set of a method already written never builds it.
  const perFraction = async <S>(
    method: BaselineMethod,
    scorer: () => Promise<S>,
    filter: (scores: S, fraction: number) => FilterOutput,
  ) => {
    let scores: Promise<S> | null = null;
    for (const f of input.fractions) {
      const key = `${method}@${pct(f)}`;
      const prefix = await materialise(key, async () => filter(await (scores ??= scorer()), f));
      datasets.push({ key, method, fraction: f, data: { kind: "records", prefix } });
    }
  };
  if (input.baselines.includes("random")) {
    await perFraction("random", () => Promise.resolve(train), (t, f) => randomFilter(t, f, 1234));
  }
  if (input.baselines.includes("perplexity")) {
    await perFraction("perplexity", async () => {
      log(`[${input.variant}] training the perplexity filter's LM on ${input.heldout}`);
      await useBackend("wasm");
      const heldout = (await loadRecords(storage, input.heldout)).map((r) => r.text);
      return await perplexityScores(heldout, train, { ...input.downstream, seed: 4321 });
    }, (scores, f) => perplexityFilter(train, scores, f));
  }
  if (input.baselines.includes("fasttext")) {
    const statsUri = out("filtered/fasttext-classifier.json");
    await perFraction(
      "fasttext",
      () => fastTextScores(storage, input, train, statsUri, log),
      (scores, f) => classifierFilter(train, scores, f),
    );
    classifier = (await storage.readJsonIfExists<ClassifierStats>(statsUri)) ?? undefined;
  }
  for (const rater of input.raters) {
    for (const f of input.fractions) {
      const manifests = rater.manifests[String(f)];
      if (!manifests) throw new Error(`no ${rater.method} manifests for discard fraction ${f}`);
      const key = `${rater.method}@${pct(f)}`;
      filterFlops[key] = train.length * rater.flopsPerRecord;
      datasets.push({
        key,
        method: rater.method,
        fraction: f,
        data: { kind: "manifests", prefix: manifests },
      });
    }
  }

  // --- Rater analysis: keep rates per source and position, score statistics, extremes.
  const raters: RaterAnalysis[] = [];
  for (const rater of input.raters) {
    let rated: (RatedExample & { record: EvalRecord })[] = [];
    const thresholds: Record<string, number | null> = {};
    for (const f of input.fractions) {
      // Join by shard and line; fall back to the id where the scorer spelled the shard URI differently.
      const { scores, byId, threshold } = await loadScores(storage, rater.manifests[String(f)]);
      thresholds[String(f)] = threshold;
      const kept: EvalRecord[] = [];
      const scoredRecords: (RatedExample & { record: EvalRecord })[] = [];
      for (const r of train) {
        const s = scores.get(`${r.shard}#${r.line}`) ?? byId.get(r.id);
        if (!s) continue;
        if (s.keep) kept.push(r);
        scoredRecords.push({
          score: s.score,
          source: r.source,
          position: r.position ?? "n/a",
          text: "",
          record: r,
        });
      }
      if (scoredRecords.length === 0) {
        throw new Error(
          `the manifests under ${
            rater.manifests[String(f)]
          } describe none of the records under ${input.train}`,
        );
      }
      const key = `${rater.method}@${pct(f)}`;
      keepRates[key] = keepRatesBySource(train, kept);
      keepByPosition[key] = keepRatesByPosition(train, kept);
      rated = scoredRecords;
    }
    const sums: Record<string, [number, number]> = {};
    for (const r of rated) {
      const s = (sums[r.source] ??= [0, 0]);
      s[0] += r.score;
      s[1]++;
    }
    const scoreBySource: Record<string, { mean: number; count: number }> = {};
    for (const [src, [sum, n]] of Object.entries(sums).sort()) {
      scoreBySource[src] = { mean: sum / n, count: n };
    }
    rated.sort((a, b) => a.score - b.score);
    const clip = ({ record, ...r }: RatedExample & { record: EvalRecord }): RatedExample => ({
      ...r,
      text: excerpt(record),
    });
    raters.push({
      method: rater.method,
      scoreBySource,
      lowestRated: rated.slice(0, 5).map(clip),
      highestRated: rated.slice(-5).reverse().map(clip),
      thresholds,
    });
  }
  const unseen = input.unseen && input.raters.length > 0
    ? await unseenAnalysis(storage, input.unseen, raters[0].thresholds)
    : null;

  // --- Plan and execute the runs.
  const specs: RunSpec[] = [];
  const plan = (
    d: (typeof datasets)[number],
    seed: number,
    size: "small" | "large",
    config: DownstreamConfig,
  ) => {
    const name = `${input.variant}-${d.key.replace("@", "-")}-${size}-s${seed}`;
    specs.push({
      name,
      data: d.data,
      evalSets: input.testSets,
      config: { ...config, seed },
      output: out(`runs/${name}.json`),
      meta: { method: d.method, fraction: d.fraction, seed, size, variant: input.variant },
    });
  };
  for (const seed of input.seeds) {
    for (const d of datasets) plan(d, seed, "small", input.downstream);
  }
  if (input.transfer) {
    const transferred = new Set(input.raters.filter((r) => r.transfer).map((r) => r.method));
    for (const seed of input.transfer.seeds) {
      for (
        const d of datasets.filter((d) => d.method === "baseline" || transferred.has(d.method))
      ) {
        plan(d, seed, "large", input.transfer.downstream);
      }
    }
  }
  const todo: RunSpec[] = [];
  for (const s of specs) if (!(await storage.stat(s.output))) todo.push(s);
  log(
    `[${input.variant}] ${specs.length} downstream runs, ${
      specs.length - todo.length
    } already finished`,
  );
  let finished = 0;
  await pool(todo, input.jobs, async (spec) => {
    const specUri = out(`specs/${spec.name}.json`);
    await storage.write(specUri, JSON.stringify(spec) + "\n");
    await spawnRun(specUri, spec.name, input.runEnv, (line) => {
      try {
        const p = JSON.parse(line) as {
          step?: number;
          steps?: number;
          losses?: Record<string, number>;
        };
        if (p.step !== undefined && p.losses) {
          const losses = Object.entries(p.losses).map(([k, v]) => `${k}=${v.toFixed(3)}`).join(" ");
          log(`  ${spec.name} step ${p.step}/${p.steps} ${losses}`);
        }
      } catch {
        log(`  ${spec.name}: ${line}`);
      }
    });
    finished++;
    log(`[${input.variant}] finished ${spec.name} (${finished}/${todo.length})`);
  });
  const results: RunResult[] = [];
  for (const s of specs) {
    const r = await storage.readJsonIfExists<RunResult>(s.output);
    if (!r) throw new Error(`run ${s.name} has no result at ${s.output}`);
    results.push(r);
  }

  // --- Gains over the baseline, per seed and test set.
  const gains: MethodGain[] = [];
  const curveFor = (r: RunResult, test: string) =>
    r.curve.map((p) => ({ flops: p.flops, loss: p.losses[test] }));
  for (const size of ["small", "large"] as const) {
    const ofSize = results.filter((r) => r.spec.meta.size === size);
    const baselineBySeed = new Map(
      ofSize.filter((r) => r.spec.meta.method === "baseline").map((r) => [r.spec.meta.seed, r]),
    );
    const groups = new Map<string, RunResult[]>();
    for (const r of ofSize) {
      const key = `${r.spec.meta.method}@${r.spec.meta.fraction ?? ""}`;
      groups.set(key, [...(groups.get(key) ?? []), r]);
    }
    for (const unsorted of groups.values()) {
      // Seed order, so per-seed figures of two methods pair up by index.
      const runs = [...unsorted].sort((a, b) => a.spec.meta.seed - b.spec.meta.seed);
      const { method, fraction } = runs[0].spec.meta;
      const fkey = fraction === null ? method : `${method}@${pct(fraction)}`;
      const flops = method === "baseline" ? 0 : filterFlops[fkey] ?? 0;
      const byTest: MethodGain["byTest"] = {};
      for (const test of Object.keys(input.testSets)) {
        const perSeed = runs.map((r) =>
          computeGain(
            curveFor(baselineBySeed.get(r.spec.meta.seed)!, test),
            curveFor(r, test),
            flops,
          )
        );
        byTest[test] = {
          perSeed,
          summary: summarizeSeeds(perSeed.map((g) => g.netComputeGain)),
          finalLoss: summarizeSeeds(runs.map((r) => r.finalLosses[test])),
          finalLossPerSeed: runs.map((r) => r.finalLosses[test]),
        };
      }
      const seeds = runs.map((r) => r.spec.meta.seed);
      gains.push({ method, fraction, size, seeds, filterFlops: flops, byTest });
    }
  }

  return {
    variant: input.variant,
    primaryTest: input.primaryTest,
    testSets: Object.keys(input.testSets),
    fractions: input.fractions,
    seeds: input.seeds,
    trainRecords: train.length,
    runs: results.map(summarizeRun),
    gains,
    keepRates,
    keepByPosition,
    raters,
    unseen,
    heuristicReasons,
    classifier,
    config: {
      downstream: input.downstream,
      transfer: input.transfer?.downstream,
      raterFlopsPerRecord: Object.fromEntries(
        input.raters.map((r) => [r.method, r.flopsPerRecord]),
      ),
    },
  };
}

/**
 * Trains the DCLM-style classifier (the target set as positives, an equal-sized seeded sample of
 * the train split as negatives, as DCLM balances them), scores every train record by P(hq), and
 * writes what it was trained on and its scoring throughput to `statsUri`.
 */
async function fastTextScores(
  storage: Storage,
  input: EvaluationInput,
  train: readonly EvalRecord[],
  statsUri: string,
  log: (line: string) => void,
): Promise<ClassifierScores> {
  const target = input.target ?? input.heldout;
  log(`[${input.variant}] training the fastText classifier: positives ${target}`);
  const positives = (await loadRecords(storage, target)).map((r) => r.text);
  const rng = new Rng(4321);
  const order = train.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const negatives = order.slice(0, Math.min(train.length, positives.length)).map((i) =>
    train[i].text
  );
  const clf = await trainFastTextClassifier(positives, negatives, DEFAULT_FASTTEXT);
  try {
    const texts = train.map((r) => r.text);
    const start = performance.now();
    const scores = clf.score(texts);
    const seconds = (performance.now() - start) / 1000;
    const encoder = new TextEncoder();
    const scoredBytes = texts.reduce((n, t) => n + encoder.encode(t).length, 0);
    const stats: ClassifierStats = {
      positives: positives.length,
      negatives: negatives.length,
      trainSeconds: clf.trainSeconds,
      scoredBytes,
      mbPerSecondPerCore: scoredBytes / 1e6 / Math.max(seconds, 1e-9),
    };
    await storage.write(statsUri, JSON.stringify(stats) + "\n");
    log(
      `[${input.variant}] fastText: ${positives.length} positives, ${negatives.length} negatives, ` +
        `trained in ${stats.trainSeconds.toFixed(1)} s, scores ${
          stats.mbPerSecondPerCore.toFixed(1)
        } MB/s per core`,
    );
    return {
      scores,
      inferenceFlops: texts.reduce((n, t) => n + fastTextFlops(t, DEFAULT_FASTTEXT.dim), 0),
    };
  } finally {
    clf.dispose();
  }
}

/** Reads the `unseen/` split and its manifests, then {@link unseenKeepRates}. */
async function unseenAnalysis(
  storage: Storage,
  unseen: { records: string; manifests: string },
  thresholds: Record<string, number | null>,
): Promise<UnseenAnalysis> {
  const records = await loadRecords(storage, unseen.records);
  const { scores, byId } = await loadScores(storage, unseen.manifests);
  const out = unseenKeepRates(
    records,
    (r) => (scores.get(`${r.shard}#${r.line}`) ?? byId.get(r.id))?.score,
    thresholds,
  );
  if (Object.keys(out.bySource).length === 0) {
    throw new Error(`the manifests under ${unseen.manifests} describe none of ${unseen.records}`);
  }
  return out;
}

/**
 * Keep rates of records never seen in meta-training under a rater's train-split thresholds: a
 * record counts as kept at a fraction when its score reaches the threshold the train split's
 * manifests applied at that fraction (keep iff score ≥ threshold), as it would be had it been in
 * the pool. Records without a score are left out; fractions without a threshold are not reported.
 *
 * @example
 * ```ts
 * unseenKeepRates(records, (r) => scores.get(r.id), { "0.5": 0.1 }).bySource["prose"].keep["0.5"];
 * ```
 */
export function unseenKeepRates(
  records: readonly Pick<EvalRecord, "source">[],
  scoreOf: (r: EvalRecord) => number | undefined,
  thresholds: Record<string, number | null>,
): UnseenAnalysis {
  const acc: Record<string, { n: number; sum: number; kept: Record<string, number> }> = {};
  const fractions = Object.entries(thresholds).filter((e): e is [string, number] => e[1] !== null);
  for (const r of records) {
    const score = scoreOf(r as EvalRecord);
    if (score === undefined) continue;
    const a = (acc[r.source] ??= { n: 0, sum: 0, kept: {} });
    a.n++;
    a.sum += score;
    for (const [f, t] of fractions) if (score >= t) a.kept[f] = (a.kept[f] ?? 0) + 1;
  }
  const bySource: UnseenAnalysis["bySource"] = {};
  for (const [src, a] of Object.entries(acc).sort()) {
    bySource[src] = {
      count: a.n,
      meanScore: a.sum / a.n,
      keep: Object.fromEntries(fractions.map(([f]) => [f, (a.kept[f] ?? 0) / a.n])),
    };
  }
  return { bySource };
}
