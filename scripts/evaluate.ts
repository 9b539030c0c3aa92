/**
 * `deno task evaluate`: the demo's downstream stage on your own data. Trains byte-level LMs from
 * scratch on all of `--train` (baseline), on the records DataRater manifests keep at each discard
 * fraction, and on the baselines' filtered copies; evaluates them on the test sets; writes
 * `report.md`, `report.json` and plots to `--report`.
 *
 * ```sh
 * deno task evaluate --train s3://b/corpus/train/ --heldout s3://b/corpus/heldout/ \
 *   --test testClean=s3://b/corpus/test-clean/ --test test=s3://b/corpus/test/ \
 *   --manifests s3://b/manifests/ --model s3://b/run1/rater.onnx \
 *   --output s3://b/evaluation/ --report ./report/ [--preset quick] [--seeds 0,1,2] [--jobs 2]
 * ```
 *
 * `--manifests PREFIX` holds one folder per discard fraction, `discard-25/`, `discard-50/`, …
 * (what `deno task demo` writes; make them with `deno task score --keep-fraction 0.9` and so on).
 * The first `--test` is the headline test set unless `--primary-test` names another. S3 settings
 * come from the environment (`S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, …). Finished runs under
 * `--output` are reused.
 */
import { parseArgs } from "node:util";
import { joinUri } from "../lib/config.ts";
import { storageFromEnv } from "../lib/storage.ts";
import { readRaterMetadata } from "../training/export-onnx.ts";
import { raterFlopsPerRecord } from "../training/rater.ts";
import {
  BASELINE_METHODS,
  type BaselineMethod,
  pct,
  runEvaluation,
} from "../evaluation/evaluation.ts";
import { PRESETS } from "../evaluation/presets.ts";
import { HEADLINE, writeReport } from "../evaluation/report.ts";

const USAGE =
  `usage: deno task evaluate --train URI --heldout URI --test NAME=URI [--test NAME=URI …]
    --manifests PREFIX --model URI --output URI --report DIR
    [--primary-test NAME] [--preset default|quick|tiny] [--fractions 0.25,0.5,0.75] [--seeds 0,1,2]
    [--baselines heuristic,perplexity,random,fasttext,oracle,oracle-no-corrupt]
    [--target URI (the fastText baseline's positives; default --heldout)] [--no-transfer] [--jobs N]`;

/** A bad command line; printed with the usage, without a stack trace. */
class UsageError extends Error {}

function numbers(s: string | undefined, name: string): number[] | undefined {
  if (s === undefined) return undefined;
  const xs = s.split(",").map((x) => Number(x.trim()));
  if (xs.some((x) => !Number.isFinite(x))) {
    throw new UsageError(`--${name} expects comma-separated numbers, got "${s}"`);
  }
  return xs;
}

async function main() {
  const storage = storageFromEnv(Deno.env.toObject());
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      train: { type: "string" },
      heldout: { type: "string" },
      target: { type: "string" },
      test: { type: "string", multiple: true },
      "primary-test": { type: "string" },
      manifests: { type: "string" },
      model: { type: "string" },
      output: { type: "string" },
      report: { type: "string" },
      preset: { type: "string", default: "default" },
      fractions: { type: "string" },
      seeds: { type: "string" },
      baselines: { type: "string" },
      "no-transfer": { type: "boolean", default: false },
      jobs: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  for (const required of ["train", "heldout", "manifests", "model", "output", "report"] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required`);
  }
  if (!values.test?.length) throw new UsageError("at least one --test NAME=URI is required");
  const testSets: Record<string, string> = {};
  for (const t of values.test) {
    const eq = t.indexOf("=");
    if (eq <= 0) throw new UsageError(`--test expects NAME=URI, got "${t}"`);
    testSets[t.slice(0, eq)] = t.slice(eq + 1);
  }
  const primaryTest = values["primary-test"] ?? Object.keys(testSets)[0];
  if (!(primaryTest in testSets)) {
    throw new UsageError(`--primary-test ${primaryTest} is not one of the --test names`);
  }
  const preset = PRESETS[values.preset!];
  if (!preset) {
    throw new UsageError(
      `unknown --preset ${values.preset}; choose ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  const fractions = numbers(values.fractions, "fractions") ?? preset.fractions;
  if (fractions.some((f) => !(f > 0 && f < 1))) {
    throw new UsageError("--fractions must be in (0, 1)");
  }
  const baselines = (values.baselines?.split(",").map((s) => s.trim()).filter(Boolean) ??
    preset.baselines) as BaselineMethod[];
  for (const b of baselines) {
    if (!(BASELINE_METHODS as readonly string[]).includes(b)) {
      throw new UsageError(`unknown baseline ${b}`);
    }
  }
  const meta = readRaterMetadata(await storage.readBytes(values.model!));
  const manifests = Object.fromEntries(
    fractions.map((f) => [String(f), joinUri(values.manifests!, `discard-${pct(f)}/`)]),
  );
  const result = await runEvaluation(storage, {
    variant: "evaluation",
    train: values.train!,
    heldout: values.heldout!,
    target: values.target,
    testSets,
    primaryTest,
    raters: [{
      method: HEADLINE,
      manifests,
      flopsPerRecord: raterFlopsPerRecord(meta.rater, meta.seqLen),
      transfer: true,
    }],
    baselines,
    fractions,
    seeds: numbers(values.seeds, "seeds") ?? preset.seeds,
    downstream: preset.downstream,
    transfer: values["no-transfer"] ? undefined : preset.transfer,
    output: values.output!,
    jobs: numbers(values.jobs, "jobs")?.[0] ?? preset.jobs,
  });
  const { files, json } = await writeReport(storage, values.report!, {
    preset: preset.name,
    mixture: result,
    timings: {},
    setup: [
      `Train ${values.train} (${result.trainRecords} records); rater ${values.model}; manifests ${values.manifests}.`,
    ],
  });
  console.log(
    JSON.stringify(
      { netComputeGain: json.netComputeGain, bestDiscardFraction: json.bestDiscardFraction, files },
      null,
      2,
    ),
  );
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${e.message}\n${USAGE}`);
      Deno.exit(2);
    }
    console.error(e instanceof Error ? e.stack ?? e.message : e);
    Deno.exit(1);
  }
}
