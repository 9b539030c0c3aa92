/**
 * How the operator learns a run's progress and artifacts: it reads what the trainer writes next to
 * its checkpoints (`<output>/progress.json`, `<output>/artifacts.json`) on each resync.
 *
 * Why poll storage rather than have the trainer patch the MetaTraining's status: the trainer pod
 * then needs no ServiceAccount token, no RBAC on the API server and no knowledge of Kubernetes at
 * all (the same program runs on a laptop), and a trainer that loses its API connection mid-run
 * loses nothing: the files are the record. The cost is staleness of up to one poll interval, which
 * is nothing next to a meta-training run.
 *
 * @example
 * ```ts
 * const progress = await new RunReader(storage).readProgress("s3://bucket/runs/a/");
 * ```
 */
import {
  joinUri,
  RUN_LAYOUT,
  type TrainerArtifacts,
  TrainerArtifactsSchema,
  type TrainerProgress,
  TrainerProgressSchema,
} from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";

/** A report exists but is not what the trainer's schema says it should be. */
export class RunReportError extends Error {
  constructor(uri: string, detail: string) {
    super(`${uri} is malformed: ${detail}`);
    this.name = "RunReportError";
  }
}

async function readReport<T>(
  storage: Storage,
  uri: string,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Error } },
): Promise<T | undefined> {
  const raw = await storage.readJsonIfExists(uri);
  if (raw === null) return undefined;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new RunReportError(uri, parsed.error.message);
  return parsed.data;
}

/**
 * Reads a run's reports from the storage the trainer writes them to; undefined when the trainer
 * has not written them yet. Throws {@link RunReportError} for a report that does not parse.
 *
 * @example
 * ```ts
 * const runs = new RunReader(storageFromEnv(Deno.env.toObject()));
 * const artifacts = await runs.readArtifacts("s3://bucket/runs/a/");
 * ```
 */
export class RunReader {
  constructor(readonly storage: Storage) {}

  /** `<output>/progress.json`, validated. */
  readProgress(output: string): Promise<TrainerProgress | undefined> {
    return readReport(this.storage, joinUri(output, RUN_LAYOUT.progress), TrainerProgressSchema);
  }

  /** `<output>/artifacts.json`, validated. */
  readArtifacts(output: string): Promise<TrainerArtifacts | undefined> {
    return readReport(this.storage, joinUri(output, RUN_LAYOUT.artifacts), TrainerArtifactsSchema);
  }
}
