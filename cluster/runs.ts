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
 * const progress = await storageRunReader.readProgress("s3://bucket/runs/a/");
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
import { readJsonIfExists } from "../lib/storage.ts";

/** Reads a run's reports; undefined when the trainer has not written them yet. */
export interface RunReader {
  readProgress(output: string): Promise<TrainerProgress | undefined>;
  readArtifacts(output: string): Promise<TrainerArtifacts | undefined>;
}

/** A report exists but is not what the trainer's schema says it should be. */
export class RunReportError extends Error {
  constructor(uri: string, detail: string) {
    super(`${uri} is malformed: ${detail}`);
    this.name = "RunReportError";
  }
}

async function readReport<T>(
  uri: string,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Error } },
): Promise<T | undefined> {
  const raw = await readJsonIfExists(uri);
  if (raw === null) return undefined;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new RunReportError(uri, parsed.error.message);
  return parsed.data;
}

/** {@link RunReader} over `lib/storage.ts` (S3 or files, credentials from the environment). */
export const storageRunReader: RunReader = {
  readProgress: (output) => readReport(joinUri(output, RUN_LAYOUT.progress), TrainerProgressSchema),
  readArtifacts: (output) =>
    readReport(joinUri(output, RUN_LAYOUT.artifacts), TrainerArtifactsSchema),
};

/** An in-memory {@link RunReader} for tests: set reports per output URI. */
export class MemoryRunReader implements RunReader {
  readonly progress = new Map<string, TrainerProgress>();
  readonly artifacts = new Map<string, TrainerArtifacts>();

  readProgress(output: string): Promise<TrainerProgress | undefined> {
    return Promise.resolve(this.progress.get(output));
  }

  readArtifacts(output: string): Promise<TrainerArtifacts | undefined> {
    return Promise.resolve(this.artifacts.get(output));
  }
}
