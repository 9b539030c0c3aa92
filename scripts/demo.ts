/**
 * `deno task demo [--quick] [--output DIR]`: the main job, end to end on embedded defaults (local
 * files and an S3-compatible server it starts; no cluster):
 *
 * 1. prepare the demo corpus into the embedded S3 store;
 * 2. meta-train two DataRaters on the pool with the trainer program the pods run, and export them
 *    to ONNX: the headline rater, whose outer objective is the user's target set (clean held-out
 *    prose, documents disjoint from every test split), and beside it the paper's same-distribution
 *    rater, whose outer objective is the pool's own heldout split (issue 12's protocol);
 * 3. start the scoring function and score every shard through `POST /v1/score` at each discard
 *    fraction (manifests land in the store), and the corpus's `unseen/` split when it has one;
 * 4. train downstream LMs (baseline, each rater at each fraction, heuristic, perplexity, random,
 *    fastText, the two oracles; the preset's seeds, sharing the baseline runs between raters; a 4×
 *    larger LM for the headline's transfer check);
 * 5. write `report.md`, `report.json` and SVG plots under the output folder it prints.
 *
 * Every stage leaves a marker only when it is complete (corpus.json, artifacts.json, one manifest
 * per shard, one result per run, the report last), and everything is written to a temporary name
 * and renamed or uploaded whole, so Ctrl-C leaves nothing half-written and a rerun reuses finished
 * stages.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";
import { forEachLine, stopChildrenOnSignal, track } from "../lib/children.ts";
import { joinUri, type TrainConfigInput, TrainerArtifactsSchema } from "../lib/config.ts";
import { createStorage, s3SettingsToEnv, type Storage, type UriStorage } from "../lib/storage.ts";
import { type S3Server, startS3Server } from "../lib/s3-server.ts";
import {
  CORPUS_LAYOUT,
  DEFAULT_CORPUS_OPTIONS,
  formatSummary,
  prepareCorpus,
} from "../corpus/prepare.ts";
import { scoreAll } from "./score.ts";
import { scoringClient } from "../functions/client.ts";
import { readRaterMetadata } from "../training/export-onnx.ts";
import { raterFlopsPerRecord } from "../training/rater.ts";
import { type EvaluationResult, pct, runEvaluation } from "../evaluation/evaluation.ts";
import { type DemoPreset, PRESETS } from "../evaluation/presets.ts";
import { HEADLINE, POOL_RATER, writeReport } from "../evaluation/report.ts";
import { hasObjects } from "../evaluation/data.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUCKET = "demo";
const STORE = `s3://${BUCKET}`;
/**
 * The corpus's split of junk kinds never seen in meta-training (with prose controls), where the
 * corpus builder writes one; read only when present.
 */
const UNSEEN_SPLIT = "unseen/";

/** Options of {@link runDemo}. */
export interface DemoOptions {
  preset: DemoPreset;
  /** Local folder for the embedded store and the report. */
  output: string;
  log?: (line: string) => void;
}

/**
 * Seconds spent on each stage, summed over every run of the demo into one output folder: a stage
 * reused from an earlier run adds ~0 and one interrupted and resumed counts both parts, so the
 * report states what building it cost even when its last run only rewrote the report. Kept in
 * `work/timings.json` (replaced whole after each stage).
 */
type Timings = Record<string, number>;

async function loadTimings(file: string): Promise<Timings> {
  try {
    return JSON.parse(await Deno.readTextFile(file)) as Timings;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    throw e;
  }
}

async function timed<T>(
  timings: Timings,
  file: string,
  name: string,
  f: () => Promise<T>,
): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    timings[name] = (timings[name] ?? 0) + (performance.now() - t0) / 1000;
    timings["total"] = Object.entries(timings).reduce((a, [k, v]) => k === "total" ? a : a + v, 0);
    const tmp = `${file}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(timings, null, 2) + "\n");
    await Deno.rename(tmp, file);
  }
}

/** A child process running a deno script, its output prefixed into the log. */
async function runDeno(
  args: string[],
  env: Record<string, string>,
  log: (l: string) => void,
): Promise<void> {
  const child = track(new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn());
  let tail = "";
  const pump = (s: ReadableStream<Uint8Array>) =>
    forEachLine(s, (line) => {
      tail = (tail + line + "\n").slice(-4000);
      if (line.trim()) log(`  ${line.replace(/\r/g, "")}`);
    });
  const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
  if (!status.success) {
    throw new Error(`deno ${args.join(" ")} failed (exit ${status.code}):\n${tail}`);
  }
}

/**
 * Meta-trains a rater on `train`/`heldout` into `output` (skipped when `artifacts.json` exists) with
 * the trainer program the pods run, and returns the exported model's URI.
 */
async function metaTrain(
  storage: Storage,
  name: string,
  preset: DemoPreset,
  train: string,
  heldout: string,
  output: string,
  localDir: string,
  env: Record<string, string>,
  log: (l: string) => void,
): Promise<string> {
  const artifactsUri = joinUri(output, "artifacts.json");
  const existing = await storage.readJsonIfExists(artifactsUri);
  if (existing) {
    log(`[meta-train ${name}] reusing ${artifactsUri}`);
    return TrainerArtifactsSchema.parse(existing).onnx;
  }
  const config: TrainConfigInput = { ...preset.metaTraining, data: { train, heldout }, output };
  const configPath = join(localDir, `meta-train-${name}.json`);
  await Deno.mkdir(localDir, { recursive: true });
  await Deno.writeTextFile(configPath, JSON.stringify(config, null, 2));
  log(`[meta-train ${name}] ${JSON.stringify(preset.metaTraining.meta)} → ${output}`);
  // The same program the Kubernetes pod runs, as its own process.
  await runDeno(["training/main.ts", "--config", configPath], env, log);
  const artifacts = await storage.readJsonIfExists(artifactsUri);
  if (!artifacts) throw new Error(`meta-training finished but wrote no ${artifactsUri}`);
  return TrainerArtifactsSchema.parse(artifacts).onnx;
}

/** Starts the scoring function on a free port and waits until it is ready. */
async function startScoringFunction(env: Record<string, string>, log: (l: string) => void) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = track(new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "functions/main.ts"],
    cwd: ROOT,
    env: { ...env, PORT: String(port), DATARATER_ALLOWED_ROOTS: `${STORE}/` },
    stdout: "piped",
    stderr: "piped",
  }).spawn());
  const endpoint = `http://127.0.0.1:${port}`;
  // Drain its output so the pipes never fill (kept for errors).
  let tail = "";
  for (const s of [child.stdout, child.stderr]) {
    forEachLine(s, (line) => (tail = (tail + line + "\n").slice(-4000)));
  }
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (await scoringClient({ endpoint }).ready()) break; // false while not listening yet
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`the scoring function did not become ready on ${endpoint}:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  log(`[serve] scoring function ready at ${endpoint}`);
  return {
    endpoint,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
    },
  };
}

/** Scores `input` at every discard fraction; returns fraction → manifest prefix. */
async function scoreFractions(
  storage: Storage,
  name: string,
  endpoint: string,
  model: string,
  input: string,
  output: string,
  fractions: number[],
  log: (l: string) => void,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of fractions) {
    const prefix = joinUri(output, `discard-${pct(f)}/`);
    const { summary } = await scoreAll({
      endpoint,
      model,
      input,
      output: prefix,
      policy: { kind: "keepFraction", fraction: 1 - f },
      concurrency: 2,
    }, {
      fetch,
      storage,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      random: Math.random,
    });
    if (summary.failed) {
      throw new Error(
        `scoring ${input} failed for ${summary.failed} shard(s): ${JSON.stringify(summary)}`,
      );
    }
    log(`[score ${name}] discard ${pct(f)}%: ${JSON.stringify(summary).slice(0, 300)}`);
    out[String(f)] = prefix;
  }
  return out;
}

/** Runs the whole demo; returns the report folder. */
export async function runDemo(
  options: DemoOptions,
): Promise<{ reportDir: string; report: unknown }> {
  const { preset } = options;
  const log = options.log ?? ((l: string) => console.error(l));
  const output = resolve(options.output);
  const timingsFile = join(output, "work", "timings.json");
  await Deno.mkdir(join(output, "work"), { recursive: true });
  const timings = await loadTimings(timingsFile);
  let s3: S3Server | null = null;
  let storage: UriStorage | null = null;
  let scoring: { endpoint: string; stop(): Promise<void> } | null = null;
  try {
    s3 = await startS3Server({ dir: join(output, "s3"), buckets: [BUCKET] });
    // This process reaches the store through `storage`; its children (trainer, scoring function,
    // downstream runs) build theirs from `env`, given to each as its environment.
    storage = createStorage({ s3: s3.settings });
    const store = storage;
    const env = s3SettingsToEnv(s3.settings);
    log(`[store] embedded S3 at ${s3.endpoint} (files in ${join(output, "s3")})`);

    const corpus = `${STORE}/corpus/`;
    const summary = await timed(
      timings,
      timingsFile,
      "prepare",
      () =>
        prepareCorpus(
          store,
          corpus,
          { ...DEFAULT_CORPUS_OPTIONS, ...preset.corpus },
          log,
        ),
    );
    log(`[prepare] ${summary.reused ? "reused" : "wrote"} ${corpus}\n${formatSummary(summary)}`);
    const c = (k: keyof typeof CORPUS_LAYOUT) => joinUri(corpus, CORPUS_LAYOUT[k]);

    const localDir = join(output, "work");
    // Headline: the user's target set (clean held-out prose) as the outer objective.
    const targetModel = await timed(
      timings,
      timingsFile,
      "meta-train (target set)",
      () =>
        metaTrain(
          store,
          "target-set",
          preset,
          c("train"),
          c("cleanOnlyHeldout"),
          `${STORE}/runs/target-set/`,
          localDir,
          env,
          log,
        ),
    );
    // Beside it, the paper's same-distribution protocol: the pool's heldout split as the objective.
    const model = await timed(
      timings,
      timingsFile,
      "meta-train (mixture)",
      () =>
        metaTrain(
          store,
          "mixture",
          preset,
          c("train"),
          c("heldout"),
          `${STORE}/runs/mixture/`,
          localDir,
          env,
          log,
        ),
    );

    scoring = await startScoringFunction(env, log);
    const targetManifests = await timed(
      timings,
      timingsFile,
      "score (target set)",
      () =>
        scoreFractions(
          store,
          "target-set",
          scoring!.endpoint,
          targetModel,
          c("train"),
          `${STORE}/manifests/target-set/`,
          preset.fractions,
          log,
        ),
    );
    const manifests = await timed(
      timings,
      timingsFile,
      "score (mixture)",
      () =>
        scoreFractions(
          store,
          "mixture",
          scoring!.endpoint,
          model,
          c("train"),
          `${STORE}/manifests/mixture/`,
          preset.fractions,
          log,
        ),
    );
    // Junk kinds never seen in meta-training, where the corpus has them: scored by the headline
    // rater once (the policy is immaterial: keep rates use the train split's thresholds).
    const unseenRecords = joinUri(corpus, UNSEEN_SPLIT);
    const unseen = (await hasObjects(store, unseenRecords))
      ? {
        records: unseenRecords,
        manifests: (await timed(
          timings,
          timingsFile,
          "score (unseen)",
          () =>
            scoreFractions(
              store,
              "unseen",
              scoring!.endpoint,
              targetModel,
              unseenRecords,
              `${STORE}/manifests/unseen/`,
              [0.5],
              log,
            ),
        ))["0.5"],
      }
      : undefined;
    await scoring.stop();
    scoring = null;

    const flopsOf = async (uri: string) => {
      const meta = readRaterMetadata(await store.readBytes(uri));
      return raterFlopsPerRecord(meta.rater, meta.seqLen);
    };
    const mixture: EvaluationResult = await timed(
      timings,
      timingsFile,
      "downstream",
      async () =>
        runEvaluation(store, {
          variant: "mixture",
          train: c("train"),
          // The baselines that need reference data get the user's target set, as the headline
          // rater does: the perplexity filter's LM and the fastText classifier's positives.
          heldout: c("cleanOnlyHeldout"),
          target: c("cleanOnlyHeldout"),
          testSets: { testClean: c("testClean"), test: c("test") },
          primaryTest: "testClean",
          raters: [
            {
              method: HEADLINE,
              manifests: targetManifests,
              flopsPerRecord: await flopsOf(targetModel),
              transfer: true,
            },
            {
              method: POOL_RATER,
              manifests,
              flopsPerRecord: await flopsOf(model),
              transfer: false,
            },
          ],
          unseen,
          baselines: preset.baselines,
          fractions: preset.fractions,
          seeds: preset.seeds,
          downstream: preset.downstream,
          transfer: preset.transfer,
          output: `${STORE}/evaluation/mixture/`,
          jobs: preset.jobs,
          runEnv: env,
        }, log),
    );

    const reportDir = join(output, "report") + "/";
    const { json } = await writeReport(store, reportDir, {
      preset: preset.name,
      mixture,
      timings,
      setup: [
        `Corpus: ${summary.options.size} records (train ${summary.datasets.train.records}, heldout ${summary.datasets.heldout.records}, test ${summary.datasets.test.records}), ` +
        `a third each clean Brown prose, SpamAssassin email (ham and spam as the package has them), corrupted prose (${
          summary.corruptions.map((k) => k.kind).join(", ")
        }); seed ${summary.options.seed}.`,
        `test-clean: ${summary.datasets.testClean.records} clean prose records from the test documents (never seen by meta-training or tuning).`,
        `Headline rater (\`${HEADLINE}\`): ${
          JSON.stringify(preset.metaTraining.rater)
        }, meta-trained ${preset.metaTraining.meta?.steps} steps ` +
        `(population ${preset.metaTraining.meta?.population}) on the pool with the user's target set as the outer objective: the clean-only heldout prose (documents disjoint from every test split); model ${targetModel}.`,
        `Same-distribution rater (\`${POOL_RATER}\`): the same trainer and pool, outer objective the pool's own heldout split; model ${model}.`,
        `Perplexity filter's LM and fastText's positives: the same target set as the headline rater.`,
        unseen
          ? `Unseen junk kinds: ${unseen.records}, scored by the headline rater.`
          : `Unseen junk kinds: n/a (the corpus has no ${UNSEEN_SPLIT} split).`,
        `Store: embedded S3 (s3rver) at ${
          join(output, "s3")
        }; scoring through POST /v1/score with keepFraction policies.`,
      ],
    });
    // The report in the store too, beside the data it describes.
    await store.write(`${STORE}/report/report.json`, JSON.stringify(json, null, 2) + "\n");
    return { reportDir, report: json };
  } finally {
    if (scoring) await scoring.stop();
    storage?.close();
    if (s3) await s3.stop();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      preset: { type: "string" },
      output: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log("usage: deno task demo [--quick | --preset default|quick|tiny] [--output DIR]");
    Deno.exit(0);
  }
  const name = values.preset ?? (values.quick ? "quick" : "default");
  const preset = PRESETS[name];
  if (!preset) {
    console.error(`unknown preset ${name}; choose one of ${Object.keys(PRESETS).join(", ")}`);
    Deno.exit(2);
  }
  const output = values.output ?? join(".demo", name);
  // Ctrl-C or a kill of this process stops the trainer, runs and servers it started too.
  stopChildrenOnSignal();
  try {
    const { reportDir } = await runDemo({ preset, output });
    console.log(`report: ${join(reportDir, "report.md")}`);
  } catch (e) {
    console.error(e instanceof Error ? e.stack ?? e.message : e);
    Deno.exit(1);
  }
}
