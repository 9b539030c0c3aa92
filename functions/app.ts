/**
 * The scoring function: a stateless Hono app.
 *
 * - `POST /v1/score` `{model, input, output, policy, fields?, onInvalid?}` scores one shard and
 *   writes its manifest create-only (201), or returns the existing manifest for the same request
 *   (200, `cached: true`); a different request for an existing output is a 409.
 * - `GET /healthz` (the process answers), `GET /readyz` (the configured models are loaded),
 *   `GET /metrics` (Prometheus text).
 *
 * Errors are JSON `{"error": {"code", "message", ...}}` with the status of {@link ApiError}.
 *
 * @example
 * ```ts
 * const storage = storageFromEnv(Deno.env.toObject());
 * const app = createApp({ storage, allowedRoots: ["s3://corpus/"] });
 * const res = await app.request("/v1/score", { method: "POST", body: JSON.stringify(req) });
 * Deno.serve({ port: 8080 }, app.fetch);
 * ```
 */
import { timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { formatUri, parseUri, type Storage } from "../lib/storage.ts";
import { ApiError } from "./errors.ts";
import { InferencePool, type InferenceRuntime } from "./inference.ts";
import { ScoringMetrics } from "./metrics.ts";
import { resolveRequestedFormats, writeRequestedFormats } from "./formats.ts";
import { ModelCache } from "./models.ts";
import { type ScoreRequest, ScoreRequestSchema, scoreShard } from "./score.ts";

/** Configuration of {@link createApp}; every limit has a default. */
export interface AppOptions {
  /**
   * Where models, shards and manifests are read and written (the server's is `storageFromEnv` in
   * `lib/storage.ts`; tests pass fault-injecting wrappers).
   */
  storage: Storage;
  /**
   * URI roots the function may read and write (`s3://bucket/`, `s3://bucket/prefix/`,
   * `file:///dir/`). Anything else is a 403. Empty: every score request is refused.
   */
  allowedRoots?: string[];
  /** When set, `POST /v1/score` requires `Authorization: Bearer <token>`. */
  token?: string;
  /** Largest request body (default 64 KiB). */
  maxBodyBytes?: number;
  /** Largest input shard, stored bytes (default 16 GiB). */
  maxInputBytes?: number;
  /** Largest model (default 1 GiB). */
  maxModelBytes?: number;
  /** A score request's time limit, including the wait for a concurrent one (default 15 min). */
  timeoutMs?: number;
  /** Records per inference batch (default 256). */
  batchSize?: number;
  /** Batches in flight per request (default 2: one runs while the next is read). */
  pipelineDepth?: number;
  /** Inference workers (default 1) and onnxruntime threads per worker (default 1). */
  workers?: number;
  threadsPerWorker?: number;
  /** onnxruntime to use: `node`, `web` (WASM) or `auto` (node, else web; the default). */
  runtime?: InferenceRuntime;
  /** Models kept loaded (default 4). */
  maxModels?: number;
  /** Models to load at start; `/readyz` is 503 until they are. */
  warmModels?: string[];
  /** Folder for manifest spool files (default: the system's temporary folder). */
  spoolDir?: string;
}

/** The Hono app plus its lifecycle. */
export type ScoringApp = Hono & {
  metrics: ScoringMetrics;
  /** Loads `warmModels` (called by createApp; await it to know when the app is ready). */
  warmUp(): Promise<void>;
  /** Stops the inference workers. */
  close(): Promise<void>;
};

/** Normalises a root so that prefix matching cannot cross a name boundary. */
function normaliseRoot(root: string): string {
  const uri = formatUri(parseUri(root));
  return uri.endsWith("/") ? uri : uri + "/";
}

/** Canonical form of a request URI, or a 400 naming the field. */
function normaliseUri(field: string, uri: string): string {
  try {
    return formatUri(parseUri(uri));
  } catch (e) {
    throw new ApiError("bad_request", `${field}: ${(e as Error).message}`, { field });
  }
}

function tokenMatches(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Builds the scoring app (see the module documentation). */
export function createApp(options: AppOptions): ScoringApp {
  const storage = options.storage;
  const roots = (options.allowedRoots ?? []).map(normaliseRoot);
  const metrics = new ScoringMetrics();
  const pool = new InferencePool({
    workers: options.workers ?? 1,
    threadsPerWorker: options.threadsPerWorker ?? 1,
    runtime: options.runtime,
    onBatch: (s) => metrics.batchSeconds.observe(s),
  });
  const models = new ModelCache(storage, pool, {
    maxModels: options.maxModels ?? 4,
    maxModelBytes: options.maxModelBytes ?? 1 << 30,
    onLoadedChange: (n) => metrics.modelsLoaded.set(n),
  });
  const deps = {
    storage,
    models,
    pool,
    metrics,
    batchSize: options.batchSize ?? 256,
    pipelineDepth: options.pipelineDepth ?? 2,
    maxInputBytes: options.maxInputBytes ?? 16 * 2 ** 30,
    spoolDir: options.spoolDir,
  };
  const timeoutMs = options.timeoutMs ?? 15 * 60_000;
  const inFlight = new Map<string, Promise<unknown>>();

  const warmModels = options.warmModels ?? [];
  let readiness: { ready: boolean; error?: string } = { ready: warmModels.length === 0 };
  let warming: Promise<void> | null = null;
  const warmUp = () =>
    warming ??= (async () => {
      try {
        for (const uri of warmModels) await models.get(normaliseUri("warmModels", uri));
        readiness = { ready: true };
      } catch (e) {
        readiness = { ready: false, error: (e as Error).message };
        warming = null; // let a later call retry
      }
    })();

  const checkAllowed = (field: string, uri: string) => {
    if (roots.some((r) => uri.startsWith(r))) return;
    throw new ApiError(
      "forbidden",
      roots.length
        ? `${field} ${uri} is outside the allowed roots (${roots.join(", ")})`
        : `${field} ${uri} is not allowed: no storage roots are configured ` +
          "(set DATARATER_ALLOWED_ROOTS to a comma-separated list such as s3://bucket/)",
      { field, uri },
    );
  };

  const app = new Hono();

  app.use("*", async (c, next) => {
    const start = performance.now();
    await next();
    const route = c.req.routePath === "/*" ? "other" : c.req.routePath;
    metrics.requests.inc({ route, method: c.req.method, status: String(c.res.status) });
    metrics.requestSeconds.observe({ route }, (performance.now() - start) / 1000);
  });

  app.onError((err, c) => {
    const apiError = err instanceof ApiError
      ? err
      : new ApiError("internal", `internal error: ${err.message}`);
    if (!(err instanceof ApiError)) console.error(err);
    metrics.errors.inc({ kind: apiError.code });
    return c.json(apiError.toJSON(), apiError.status as 400);
  });

  app.notFound((c) => {
    const e = new ApiError("not_found", `no route ${c.req.method} ${c.req.path}`);
    metrics.errors.inc({ kind: e.code });
    return c.json(e.toJSON(), 404);
  });

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.get("/readyz", (c) => {
    if (readiness.ready) {
      return c.json({ status: "ready", models: models.loadedDigests, runtime: pool.activeRuntime });
    }
    return c.json({ status: "not ready", warming: warmModels, error: readiness.error }, 503);
  });

  app.get("/metrics", async (c) => {
    return c.text(await metrics.registry.metrics(), 200, {
      "content-type": metrics.registry.contentType,
    });
  });

  app.post(
    "/v1/score",
    async (c, next) => {
      if (!options.token) return await next();
      const header = c.req.header("authorization") ?? "";
      const match = /^Bearer\s+(.+)$/i.exec(header);
      if (!match || !tokenMatches(match[1].trim(), options.token)) {
        c.header("WWW-Authenticate", 'Bearer realm="datarater"');
        throw new ApiError(
          "unauthorized",
          match ? "the bearer token is wrong" : "missing `Authorization: Bearer <token>` header",
        );
      }
      return await next();
    },
    bodyLimit({
      maxSize: options.maxBodyBytes ?? 64 * 1024,
      onError: () => {
        throw new ApiError(
          "payload_too_large",
          `request body is over ${options.maxBodyBytes ?? 64 * 1024} bytes: ` +
            "send one shard's URIs and the policy, not the records",
        );
      },
    }),
    async (c) => {
      let body: unknown;
      try {
        body = await c.req.json();
      } catch (e) {
        if (e instanceof ApiError) throw e;
        throw new ApiError(
          "bad_request",
          `request body is not valid JSON: ${(e as Error).message}`,
        );
      }
      const parsed = ScoreRequestSchema.safeParse(body);
      if (!parsed.success) {
        const issues = parsed.error.issues.map((i) => ({
          path: i.path.join("."),
          message: i.message,
        }));
        throw new ApiError(
          "bad_request",
          `invalid request: ${issues.map((i) => `${i.path || "(body)"}: ${i.message}`).join("; ")}`,
          { issues },
        );
      }
      const req: ScoreRequest = {
        ...parsed.data,
        model: normaliseUri("model", parsed.data.model),
        input: normaliseUri("input", parsed.data.input),
        output: normaliseUri("output", parsed.data.output),
      };
      checkAllowed("model", req.model);
      checkAllowed("input", req.input);
      checkAllowed("output", req.output);
      // Extra manifest formats are outputs too: the same normalising and allowed roots.
      if (req.formats) {
        req.formats = resolveRequestedFormats(req.formats, req.input, normaliseUri, checkAllowed);
      }
      for (const field of ["input", "output"] as const) {
        if (req[field].endsWith("/")) {
          throw new ApiError(
            "bad_request",
            `${field} ${
              req[field]
            } is a prefix: give one object (a shard, and its manifest's URI); ` +
              "`deno task score` fans out over every shard under a prefix",
            { field },
          );
        }
      }
      if (req.output === req.input) {
        throw new ApiError("bad_request", "output must differ from input", { field: "output" });
      }

      const controller = new AbortController();
      const timer = setTimeout(
        () =>
          controller.abort(
            new ApiError(
              "timeout",
              `scoring ${req.input} took longer than ${timeoutMs} ms; nothing was written, retry ` +
                "(a later request for the same output starts over)",
              { uri: req.input, timeoutMs },
            ),
          ),
        timeoutMs,
      );
      const started = performance.now();
      metrics.inFlight.inc();
      try {
        // One scoring per output at a time in this process: a second request for the same
        // output waits, then finds the manifest the first wrote (and gets `cached: true`).
        for (let p = inFlight.get(req.output); p; p = inFlight.get(req.output)) {
          await raceAbort(p.catch(() => {}), controller.signal);
        }
        const run = scoreShard(deps, req, controller.signal);
        inFlight.set(req.output, run);
        // Released when the scoring really ends (after a timeout it still has to unwind).
        run.catch(() => {}).finally(() => {
          if (inFlight.get(req.output) === run) inFlight.delete(req.output);
        });
        const result = await raceAbort(run, controller.signal);
        if (req.formats) {
          result.formats = await raceAbort(
            writeRequestedFormats(storage, result.manifest, req.formats),
            controller.signal,
          );
        }
        metrics.shards.inc({ result: result.cached ? "cached" : "created" });
        if (!result.cached) metrics.shardSeconds.observe((performance.now() - started) / 1000);
        return c.json(result, result.cached ? 200 : 201);
      } finally {
        clearTimeout(timer);
        metrics.inFlight.dec();
      }
    },
  );

  void warmUp();
  return Object.assign(app, {
    metrics,
    warmUp,
    close: () => pool.close(),
  });
}

/** Resolves like `p`, or rejects with the signal's reason when it aborts first. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
