/**
 * `deno task score`: score every shard under a prefix by calling the scoring function once per
 * shard, with bounded concurrency, retries (exponential backoff with full jitter) on transient
 * failures, a progress bar, and skipping of shards whose manifest already exists.
 *
 *   deno task score --endpoint http://localhost:8080 --model s3://b/run1/rater.onnx \
 *     --input s3://b/shards/ --output s3://b/manifests/run1/ [--keep-fraction 0.5]
 *
 * Policy: `--keep-fraction F` (default 0.5), or `--threshold T`, or `--top-k K --of B [--seed S]`.
 * Other flags: `--concurrency N` (4), `--retries N` (5), `--on-invalid fail|skip`,
 * `--id-field`, `--text-field`, `--token` (or `DATARATER_TOKEN`). Each shard `…/NAME.jsonl[.gz]`,
 * `…/NAME.ndjson[.gz]` or `…/NAME.parquet` gets the manifest `OUTPUT/NAME.manifest.jsonl`. Prints
 * a JSON summary, writes the run summary `OUTPUT/_summary.json` (lib/run-summary.ts); exits 1 if
 * any shard failed.
 */
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import pMap from "p-map";
import pRetry, { AbortError } from "p-retry";
import { scoringClient, ScoringClientError } from "../functions/client.ts";
import { isShardName, SHARD_PATTERN } from "../lib/records.ts";
import type { Policy } from "../lib/manifest.ts";
import { writeRunSummary } from "../lib/run-summary.ts";
import { type Storage, storageFromEnv } from "../lib/storage.ts";

/** Object names treated as shards (the one pattern every shard lister uses). */
export { SHARD_PATTERN };

/** Options of {@link scoreAll}. */
export interface ScoreAllOptions {
  endpoint: string;
  model: string;
  input: string;
  output: string;
  policy: Policy;
  fields?: { id: string; text: string };
  onInvalid?: "fail" | "skip";
  token?: string;
  concurrency?: number;
  retries?: number;
  /** First backoff delay in ms (doubles per attempt, capped at `maxBackoffMs`, full jitter). */
  backoffMs?: number;
  maxBackoffMs?: number;
}

/** Injectable effects (tests replace them). */
export interface ScoreAllDeps {
  /** Under the scoring client (functions/client.ts). */
  fetch: typeof fetch;
  /** Lists the input prefix and checks for existing manifests. */
  storage: Storage;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  /** Called once the shards are listed (done = 0), then after each shard settles. */
  onShard?: (done: number, total: number, records: number) => void;
}

/** What happened to one shard. */
export interface ShardOutcome {
  shard: string;
  manifest: string;
  result: "created" | "cached" | "skipped" | "failed";
  attempts: number;
  counts?: { records: number; kept: number; dropped: number; skippedInvalid: number };
  status?: number;
  error?: string;
}

/** Totals over all shards. */
export interface ScoreSummary {
  shards: number;
  created: number;
  cached: number;
  skippedExisting: number;
  failed: number;
  records: number;
  kept: number;
  dropped: number;
  skippedInvalid: number;
  seconds: number;
  recordsPerSec: number;
  failures: { shard: string; status?: number; error?: string; attempts: number }[];
}

/** The manifest URI for a shard: the shard's path below the input prefix, under the output. */
export function manifestUriFor(shard: string, input: string, output: string): string {
  const base = input.endsWith("/") ? input : input.slice(0, input.lastIndexOf("/") + 1);
  const rel = shard.slice(base.length).replace(SHARD_PATTERN, "");
  return (output.endsWith("/") ? output : output + "/") + rel + ".manifest.jsonl";
}

/** Scores every shard under `options.input`; never throws for a shard's failure. */
export async function scoreAll(
  options: ScoreAllOptions,
  deps: ScoreAllDeps,
): Promise<{ summary: ScoreSummary; outcomes: ShardOutcome[] }> {
  const start = performance.now();
  const shards: string[] = [];
  for await (const obj of deps.storage.list(options.input)) {
    if (isShardName(obj.uri)) shards.push(obj.uri);
  }
  const retries = options.retries ?? 5;
  const backoff = options.backoffMs ?? 500;
  const maxBackoff = options.maxBackoffMs ?? 30_000;
  const client = scoringClient({
    endpoint: options.endpoint,
    token: options.token,
    fetch: deps.fetch,
  });
  let done = 0;
  let records = 0;
  deps.onShard?.(0, shards.length, 0);

  const scoreOne = async (shard: string): Promise<ShardOutcome> => {
    const manifest = manifestUriFor(shard, options.input, options.output);
    if (await deps.storage.stat(manifest)) {
      return { shard, manifest, result: "skipped", attempts: 0 };
    }
    let attempts = 0;
    try {
      const { status, result } = await pRetry(async () => {
        attempts++;
        try {
          return await client.score({
            model: options.model,
            input: shard,
            output: manifest,
            policy: options.policy,
            fields: options.fields,
            onInvalid: options.onInvalid,
          });
        } catch (e) {
          // A 4xx is the request's own fault and fails the same way again.
          if (e instanceof ScoringClientError && !e.retryable) throw new AbortError(e);
          throw e;
        }
      }, {
        retries,
        // p-retry's own delay is off: the backoff below is full jitter (p-retry only scales by
        // 1-2) and goes through deps.sleep and deps.random, which tests replace.
        minTimeout: 0,
        onFailedAttempt: async ({ attemptNumber, retriesLeft }) => {
          if (retriesLeft <= 0) return;
          await deps.sleep(
            deps.random() * Math.min(maxBackoff, backoff * 2 ** (attemptNumber - 1)),
          );
        },
      });
      return {
        shard,
        manifest,
        result: result.cached ? "cached" : "created",
        attempts,
        counts: result.counts,
        status,
      };
    } catch (e) {
      return {
        shard,
        manifest,
        result: "failed",
        attempts,
        status: e instanceof ScoringClientError ? e.status : undefined,
        error: (e as Error).message,
      };
    }
  };

  const outcomes = await pMap(shards, async (shard) => {
    const outcome = await scoreOne(shard);
    done++;
    records += outcome.counts?.records ?? 0;
    deps.onShard?.(done, shards.length, records);
    return outcome;
  }, { concurrency: Math.max(1, options.concurrency ?? 4) });

  const sum = (f: (o: ShardOutcome) => number) => outcomes.reduce((s, o) => s + f(o), 0);
  const seconds = (performance.now() - start) / 1000;
  const scored = outcomes.filter((o) => o.result === "created");
  const summary: ScoreSummary = {
    shards: shards.length,
    created: scored.length,
    cached: outcomes.filter((o) => o.result === "cached").length,
    skippedExisting: outcomes.filter((o) => o.result === "skipped").length,
    failed: outcomes.filter((o) => o.result === "failed").length,
    records: sum((o) => o.counts?.records ?? 0),
    kept: sum((o) => o.counts?.kept ?? 0),
    dropped: sum((o) => o.counts?.dropped ?? 0),
    skippedInvalid: sum((o) => o.counts?.skippedInvalid ?? 0),
    seconds: Math.round(seconds * 1000) / 1000,
    recordsPerSec: Math.round(scored.reduce((s, o) => s + (o.counts?.records ?? 0), 0) / seconds),
    failures: outcomes.filter((o) => o.result === "failed").map((o) => ({
      shard: o.shard,
      status: o.status,
      error: o.error,
      attempts: o.attempts,
    })),
  };
  return { summary, outcomes };
}

function fail(message: string): never {
  console.error(`score: ${message}`);
  Deno.exit(2);
}

/** Parses the command line into {@link ScoreAllOptions}. */
export function parseScoreArgs(args: string[]): ScoreAllOptions {
  const { values } = parseArgs({
    args,
    options: {
      endpoint: { type: "string" },
      model: { type: "string" },
      input: { type: "string" },
      output: { type: "string" },
      "keep-fraction": { type: "string" },
      threshold: { type: "string" },
      "top-k": { type: "string" },
      of: { type: "string" },
      seed: { type: "string", default: "0" },
      concurrency: { type: "string", default: "4" },
      retries: { type: "string", default: "5" },
      "on-invalid": { type: "string", default: "fail" },
      "id-field": { type: "string", default: "id" },
      "text-field": { type: "string", default: "text" },
      token: { type: "string" },
    },
  });
  for (const k of ["endpoint", "model", "input", "output"] as const) {
    if (!values[k]) throw new Error(`--${k} is required`);
  }
  const num = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got "${v}"`);
    return n;
  };
  const policies = [values["keep-fraction"], values.threshold, values["top-k"]].filter((v) =>
    v !== undefined
  );
  if (policies.length > 1) {
    throw new Error("give one of --keep-fraction, --threshold, --top-k");
  }
  let policy: Policy;
  if (values.threshold !== undefined) {
    policy = { kind: "threshold", threshold: num("threshold", values.threshold) };
  } else if (values["top-k"] !== undefined) {
    if (values.of === undefined) throw new Error("--top-k K needs --of B");
    policy = {
      kind: "topK",
      k: num("top-k", values["top-k"]),
      b: num("of", values.of),
      seed: num("seed", values.seed!),
    };
  } else {
    policy = {
      kind: "keepFraction",
      fraction: num("keep-fraction", values["keep-fraction"] ?? "0.5"),
    };
  }
  const onInvalid = values["on-invalid"];
  if (onInvalid !== "fail" && onInvalid !== "skip") {
    throw new Error(`--on-invalid must be fail or skip, got "${onInvalid}"`);
  }
  return {
    endpoint: values.endpoint!,
    model: values.model!,
    input: values.input!,
    output: values.output!,
    policy,
    fields: { id: values["id-field"]!, text: values["text-field"]! },
    onInvalid,
    token: values.token ?? Deno.env.get("DATARATER_TOKEN"),
    concurrency: num("concurrency", values.concurrency!),
    retries: num("retries", values.retries!),
  };
}

if (import.meta.main) {
  let options: ScoreAllOptions;
  try {
    options = parseScoreArgs(Deno.args);
  } catch (e) {
    fail((e as Error).message);
  }
  const bar = new cliProgress.SingleBar({
    format: "scoring |{bar}| {value}/{total} shards | {records} records | ETA {eta_formatted}",
    stream: process.stderr,
    hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  const storage = storageFromEnv(Deno.env.toObject());
  const { summary } = await scoreAll(options, {
    fetch,
    storage,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    random: Math.random,
    onShard: (done, total, records) => {
      if (!started) {
        bar.start(total, 0, { records: 0 });
        started = true;
      }
      bar.update(done, { records });
    },
  });
  if (started) bar.stop();
  console.log(JSON.stringify(summary, null, 2));
  // Once per run, after the fan-out: the run's totals beside its manifests.
  try {
    const written = await writeRunSummary(storage, options.output);
    console.error(`run summary: ${written.uri}`);
  } catch (e) {
    console.error(`score: writing the run summary failed: ${(e as Error).message}`);
  }
  if (summary.failed) Deno.exit(1);
}
