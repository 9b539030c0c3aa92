/**
 * One downstream run as its own process: reads a {@link RunSpec}, loads its training data (a
 * record prefix, or the records kept by filter manifests), trains and evaluates the LM, and writes
 * a {@link RunResult} to `spec.output`. Progress goes to stdout as JSON lines.
 *
 * Runs are processes (not workers) so the evaluation can run several at once on separate cores
 * (tfjs-wasm is single-threaded) and a crash in one run cannot take the others down.
 *
 * @example
 * ```sh
 * S3_ENDPOINT=http://127.0.0.1:9000 deno run -A evaluation/run.ts s3://bucket/specs/run.json
 * ```
 */
import { type Storage, storageFromEnv } from "../lib/storage.ts";
import { useBackend } from "../training/backend.ts";
import { loadKeptTexts, loadRecords } from "./data.ts";
import { type DownstreamConfig, type DownstreamResult, trainDownstream } from "./trainer.ts";

/** What to train on. */
export type RunData =
  | { kind: "records"; prefix: string }
  | { kind: "manifests"; prefix: string };

/** One downstream run, as the evaluation plans it. */
export interface RunSpec {
  name: string;
  data: RunData;
  /** Test set name → record prefix. */
  evalSets: Record<string, string>;
  config: DownstreamConfig;
  /** Where the result JSON goes (written once, at the end). */
  output: string;
  /** Labels for the report: method, discard fraction, seed, model size. */
  meta: {
    method: string;
    fraction: number | null;
    seed: number;
    size: "small" | "large";
    variant: string;
  };
}

/** A finished run. */
export interface RunResult extends DownstreamResult {
  spec: RunSpec;
  wallSeconds: number;
}

/** Trains and evaluates one run; returns the result (also written to `spec.output`). */
export async function executeRun(
  storage: Storage,
  spec: RunSpec,
  log: (line: string) => void = () => {},
): Promise<RunResult> {
  const started = performance.now();
  await useBackend("wasm");
  const train = spec.data.kind === "records"
    ? (await loadRecords(storage, spec.data.prefix)).map((r) => r.text)
    : await loadKeptTexts(storage, spec.data.prefix);
  const evalSets: Record<string, string[]> = {};
  for (const [name, prefix] of Object.entries(spec.evalSets)) {
    evalSets[name] = (await loadRecords(storage, prefix)).map((r) => r.text);
  }
  const result = await trainDownstream(
    train,
    evalSets,
    spec.config,
    (p) =>
      log(
        JSON.stringify({
          run: spec.name,
          step: p.step,
          steps: p.steps,
          trainLoss: p.trainLoss,
          losses: p.losses,
        }),
      ),
  );
  const out: RunResult = { ...result, spec, wallSeconds: (performance.now() - started) / 1000 };
  await storage.write(spec.output, JSON.stringify(out) + "\n", { contentType: "application/json" });
  return out;
}

if (import.meta.main) {
  const specUri = Deno.args[0];
  if (!specUri) {
    console.error("usage: deno run -A evaluation/run.ts SPEC_URI");
    Deno.exit(2);
  }
  // The parent passes the store's settings in this process's environment (see evaluation.ts).
  const storage = storageFromEnv(Deno.env.toObject());
  try {
    const spec = JSON.parse(await storage.readText(specUri)) as RunSpec & {
      config: DownstreamConfig;
    };
    if (await storage.stat(spec.output)) {
      console.log(JSON.stringify({ run: spec.name, reused: true }));
    } else {
      await executeRun(storage, spec, (l) => console.log(l));
    }
  } catch (e) {
    console.error(e instanceof Error ? e.stack ?? e.message : String(e));
    Deno.exit(1);
  }
}
