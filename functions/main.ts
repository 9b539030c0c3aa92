/**
 * `deno task serve`: the scoring function on `HOST`:`PORT` (default `0.0.0.0:8080`).
 *
 * Configuration (environment):
 * - `HOST`: the address to listen on; `0.0.0.0` (every interface, as the container needs) by
 *   default, `127.0.0.1` to keep a workstation's function to itself.
 * - `DATARATER_ALLOWED_ROOTS`: comma-separated roots the function may read/write
 *   (`s3://bucket/`, `file:///data/`); required for any score request to succeed.
 * - `DATARATER_TOKEN`: bearer token required on `POST /v1/score` when set.
 * - `DATARATER_WARM_MODELS`: comma-separated model URIs loaded at start (`/readyz` waits on them).
 * - `DATARATER_MAX_BODY_BYTES`, `DATARATER_MAX_INPUT_BYTES`, `DATARATER_MAX_MODEL_BYTES`,
 *   `DATARATER_TIMEOUT_MS`, `DATARATER_BODY_TIMEOUT_MS`, `DATARATER_BATCH_SIZE`, `DATARATER_WORKERS`,
 *   `DATARATER_THREADS_PER_WORKER`, `DATARATER_MAX_MODELS`: limits (see `AppOptions`).
 * - `DATARATER_SCORE_CAP_BYTES`: UTF-8 bytes of each record rated when a request names no
 *   `capBytes` (default 16 KiB, at most 1 MiB; see `ScoreLimits` in functions/score.ts).
 * - `DATARATER_INFERENCE_RUNTIME`: `node` (onnxruntime-node), `web` (onnxruntime-web WASM, for
 *   hosts that can't load native addons) or `auto` (node, else web; default).
 * - S3: `S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (read once here, by `storageFromEnv` in lib/storage.ts).
 */
import { tmpdir } from "node:os";
import { z } from "zod";
import { SPOOL_PREFIX } from "../lib/manifest.ts";
import { storageFromEnv } from "../lib/storage.ts";
import { sweepStaleTempFiles } from "../lib/tempfiles.ts";
import { type AppOptions, createApp } from "./app.ts";
import { MAX_SCORE_CAP_BYTES } from "./score.ts";

const list = z.string().optional().transform((s) =>
  (s ?? "").split(",").map((x) => x.trim()).filter(Boolean)
);
const int = (min: number) => z.coerce.number().int().min(min).optional();

/** The server's environment, validated. */
export const ServeEnvSchema = z.object({
  HOST: z.string().trim().min(1).default("0.0.0.0"),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DATARATER_ALLOWED_ROOTS: list,
  DATARATER_TOKEN: z.string().min(1).optional(),
  DATARATER_WARM_MODELS: list,
  DATARATER_MAX_BODY_BYTES: int(1),
  DATARATER_MAX_INPUT_BYTES: int(1),
  DATARATER_MAX_MODEL_BYTES: int(1),
  DATARATER_TIMEOUT_MS: int(1),
  DATARATER_BODY_TIMEOUT_MS: int(1),
  DATARATER_BATCH_SIZE: int(1),
  DATARATER_WORKERS: int(1),
  DATARATER_THREADS_PER_WORKER: int(1),
  DATARATER_MAX_MODELS: int(1),
  DATARATER_MAX_ID_BYTES: int(1),
  DATARATER_MAX_LINE_BYTES: int(1),
  DATARATER_MAX_LINES: int(1),
  DATARATER_MAX_DECOMPRESSED_BYTES: int(1),
  DATARATER_MAX_EXPANSION: int(1),
  DATARATER_SCORE_CAP_BYTES: z.coerce.number().int().min(1).max(MAX_SCORE_CAP_BYTES).optional(),
  DATARATER_INFERENCE_RUNTIME: z.enum(["node", "web", "auto"]).default("auto"),
});

/** The fields that are set (an unset limit keeps its default). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** App options from the environment (throws a readable error for bad values). */
export function optionsFromEnv(
  env: Record<string, string>,
): { hostname: string; port: number; app: AppOptions } {
  const parsed = ServeEnvSchema.safeParse(env);
  if (!parsed.success) {
    throw new Error(
      "invalid configuration: " +
        parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
    );
  }
  const e = parsed.data;
  return {
    hostname: e.HOST,
    port: e.PORT,
    app: {
      storage: storageFromEnv(env),
      allowedRoots: e.DATARATER_ALLOWED_ROOTS,
      token: e.DATARATER_TOKEN,
      warmModels: e.DATARATER_WARM_MODELS,
      maxBodyBytes: e.DATARATER_MAX_BODY_BYTES,
      maxInputBytes: e.DATARATER_MAX_INPUT_BYTES,
      maxModelBytes: e.DATARATER_MAX_MODEL_BYTES,
      timeoutMs: e.DATARATER_TIMEOUT_MS,
      bodyTimeoutMs: e.DATARATER_BODY_TIMEOUT_MS,
      batchSize: e.DATARATER_BATCH_SIZE,
      workers: e.DATARATER_WORKERS,
      threadsPerWorker: e.DATARATER_THREADS_PER_WORKER,
      maxModels: e.DATARATER_MAX_MODELS,
      runtime: e.DATARATER_INFERENCE_RUNTIME,
      limits: definedOnly({
        maxIdBytes: e.DATARATER_MAX_ID_BYTES,
        maxLineBytes: e.DATARATER_MAX_LINE_BYTES,
        maxLines: e.DATARATER_MAX_LINES,
        maxDecompressedBytes: e.DATARATER_MAX_DECOMPRESSED_BYTES,
        maxExpansion: e.DATARATER_MAX_EXPANSION,
        scoreCapBytes: e.DATARATER_SCORE_CAP_BYTES,
      }),
    },
  };
}

/**
 * What a start cleans up: spool files a killed predecessor left in the spool folder (only those
 * named by `tempFileName` in lib/tempfiles.ts, whose owner is known to be gone or that are too old
 * to be anyone's). Returns the names removed; a failure is logged, never fatal.
 */
export async function startupCleanup(options: Pick<AppOptions, "spoolDir">): Promise<string[]> {
  const dir = options.spoolDir ?? tmpdir();
  try {
    return await sweepStaleTempFiles(dir, SPOOL_PREFIX);
  } catch (e) {
    console.warn(`could not sweep stale spool files in ${dir}: ${(e as Error).message}`);
    return [];
  }
}

if (import.meta.main) {
  const { hostname, port, app: options } = optionsFromEnv(Deno.env.toObject());
  const swept = await startupCleanup(options);
  if (swept.length) {
    console.log(JSON.stringify({ msg: "removed stale spool files", count: swept.length }));
  }
  if (!options.allowedRoots?.length) {
    console.warn(
      "DATARATER_ALLOWED_ROOTS is not set: every score request will be refused (403). " +
        "Set it to the buckets/folders this function may read and write, e.g. s3://corpus/",
    );
  }
  const app = createApp(options);
  const server = Deno.serve({
    hostname,
    port,
    onListen: ({ hostname, port }) =>
      console.log(JSON.stringify({ msg: "scoring function listening", hostname, port })),
  }, app.fetch);
  const shutdown = async () => {
    await server.shutdown();
    await app.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
}
