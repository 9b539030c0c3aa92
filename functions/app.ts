/**
 * The scoring function: a stateless Hono app.
 *
 * - `POST /v1/score` `{model, input, output, policy, fields?, onInvalid?}` scores one shard and
 *   writes its manifest create-only (201), or returns the existing manifest for the same request
 *   (200, `cached: true`); a different request for an existing output is a 409.
 * - `GET /healthz` (the process answers), `GET /readyz` (the configured models are loaded),
 *   `GET /metrics` (Prometheus text).
 *
 * Errors are JSON `{"error": {"code", "message", ...}}` with the status of {@link ApiError}. A body
 * that does not arrive within `bodyTimeoutMs` is a 408; a request over `timeoutMs` is a 504 with
 * nothing written, unless its manifest write had begun: then the answer waits for the write.
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
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import { validator } from "hono/validator";
import type { z } from "zod";
import { formatUri, parseUri, type Storage } from "../lib/storage.ts";
import { ApiError } from "./errors.ts";
import { AllowedRoots } from "./roots.ts";
import { InferencePool, type InferenceRuntime } from "./inference.ts";
import { ScoringMetrics } from "./metrics.ts";
import { resolveRequestedFormats, writeRequestedFormats } from "./formats.ts";
import { ModelCache } from "./models.ts";
import {
  type ScoreLimits,
  type ScoreRequest,
  ScoreRequestSchema,
  type ScoreResult,
  scoreShard,
} from "./score.ts";

/** The body of `POST /v1/score` as a caller writes it (defaults not yet applied). */
export type ScoreRequestBody = z.input<typeof ScoreRequestSchema>;

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
  /**
   * A score request's time limit, from its arrival: reading the body, the wait for a concurrent
   * request and the scoring (default 15 min). A request whose manifest write has begun is
   * answered once the write settles, so the answer always matches the store.
   */
  timeoutMs?: number;
  /** Time allowed to receive the request body (default 30 s, at most `timeoutMs`): a 408. */
  bodyTimeoutMs?: number;
  /**
   * Windows per inference batch (default 256): a batch is the windows of whole records, so it
   * grows past this by at most one record's windows.
   */
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
  /** Per-request limits on ids, decompressed bytes and lines (see `ScoreLimits` in score.ts). */
  limits?: Partial<ScoreLimits>;
}

/** What {@link createApp} adds to the Hono app. */
export interface ScoringLifecycle {
  metrics: ScoringMetrics;
  /** Loads `warmModels` (called by createApp; await it to know when the app is ready). */
  warmUp(): Promise<void>;
  /** Stops the inference workers. */
  close(): Promise<void>;
}

/**
 * The Hono app, typed with its validated routes (what `hc` in functions/client.ts reads), plus
 * its lifecycle.
 */
export type ScoringApp = ReturnType<typeof createApp>;

type AppEnv = { Variables: { arrived: number } };

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

/** Whether a Content-Type is JSON as Hono's json validator reads it. */
function labelledJson(contentType: string | undefined): boolean {
  const media = (contentType ?? "").split(";")[0].trim();
  return /^application\/([\w.-]+\+)?json$/i.test(media);
}

/**
 * The storage one request scores through: a write may begin only while the request has not timed
 * out, and the timeout may fire only while no write has begun. Both checks run synchronously on
 * one event loop, so exactly one wins, and a 504 is never answered for a manifest being written.
 */
class RequestStorageGate {
  writing = false;
  readonly storage: Storage;

  constructor(base: Storage, signal: AbortSignal) {
    this.storage = new Proxy(base, {
      get: (target, prop) => {
        if (prop === "write") {
          return (...args: Parameters<Storage["write"]>) => {
            if (signal.aborted) return Promise.reject(signal.reason);
            this.writing = true;
            return target.write(...args);
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }
}

/** Builds the scoring app (see the module documentation). */
export function createApp(options: AppOptions) {
  const storage = options.storage;
  const roots = new AllowedRoots(options.allowedRoots ?? []);
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
    limits: options.limits,
  };
  const timeoutMs = options.timeoutMs ?? 15 * 60_000;
  const bodyTimeoutMs = Math.min(options.bodyTimeoutMs ?? 30_000, timeoutMs);
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
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

  // By name and, for files, by the real path links lead to (functions/roots.ts).
  const checkAllowed = (field: string, uri: string) => roots.check(field, uri);

  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const start = performance.now();
    c.set("arrived", start);
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

  // Chained, so the app's type lists every route for `hc` (functions/client.ts).
  const probes = app
    .get("/healthz", (c) => c.json({ status: "ok" }))
    .get("/readyz", (c) => {
      if (readiness.ready) {
        return c.json({
          status: "ready",
          models: models.loadedDigests,
          runtime: pool.activeRuntime,
        });
      }
      return c.json({ status: "not ready", warming: warmModels, error: readiness.error }, 503);
    })
    .get("/metrics", async (c) => {
      return c.text(await metrics.registry.metrics(), 200, {
        "content-type": metrics.registry.contentType,
      });
    });

  const unauthorized = (c: Context, message: string): never => {
    c.header("WWW-Authenticate", 'Bearer realm="datarater"');
    throw new ApiError("unauthorized", message);
  };
  const missingToken = "missing `Authorization: Bearer <token>` header";
  const wrongToken = "the bearer token is wrong";
  const token = options.token;
  const auth: MiddlewareHandler<AppEnv> = token
    ? bearerAuth({
      // Hono's own compare hashes both sides; this keeps the constant-time byte compare.
      verifyToken: (given) => tokenMatches(given, token),
      noAuthenticationHeader: { message: (c: Context) => unauthorized(c, missingToken) },
      // Another scheme, or a token outside RFC 6750's characters: 401 as before, not Hono's 400.
      invalidAuthenticationHeader: {
        message: (c: Context) =>
          unauthorized(
            c,
            /^Bearer\s+\S/i.test(c.req.header("authorization") ?? "") ? wrongToken : missingToken,
          ),
      },
      invalidToken: { message: (c: Context) => unauthorized(c, wrongToken) },
    })
    : (_c, next) => next();

  // The body is read under its own deadline: a client that declares more bytes than it sends
  // would otherwise hold the connection (the scoring timer below starts after the body).
  const readBody: MiddlewareHandler<AppEnv> = async (c, next) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ApiError(
              "request_timeout",
              `the request body did not arrive within ${bodyTimeoutMs} ms`,
              { timeoutMs: bodyTimeoutMs },
            ),
          ),
        bodyTimeoutMs,
      );
    });
    let text: string;
    try {
      text = await Promise.race([c.req.text(), deadline]);
    } finally {
      clearTimeout(timer);
    }
    try {
      JSON.parse(text);
    } catch (e) {
      throw new ApiError("bad_request", `request body is not valid JSON: ${(e as Error).message}`);
    }
    await next();
  };

  const validateScore = async (
    value: ScoreRequestBody,
    c: Context<AppEnv, "/v1/score">,
  ): Promise<ScoreRequest> => {
    // Hono's json target parses only bodies labelled JSON; this API has always read the body
    // as JSON whatever its label (`curl -d` labels it a form). readBody has parsed it once.
    const body: unknown = labelledJson(c.req.header("content-type"))
      ? value
      : JSON.parse(await c.req.text());
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
    return parsed.data;
  };

  const route = probes.post(
    "/v1/score",
    auth,
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: () => {
        throw new ApiError(
          "payload_too_large",
          `request body is over ${maxBodyBytes} bytes: ` +
            "send one shard's URIs and the policy, not the records",
        );
      },
    }),
    readBody,
    // The declared input type is what `hc` callers send (defaults not yet applied).
    validator<ScoreRequestBody, "/v1/score", "post", "json", "/v1/score", typeof validateScore>(
      "json",
      validateScore,
    ),
    async (c) => {
      const valid = c.req.valid("json");
      const req: ScoreRequest = {
        ...valid,
        model: normaliseUri("model", valid.model),
        input: normaliseUri("input", valid.input),
        output: normaliseUri("output", valid.output),
      };
      await checkAllowed("model", req.model);
      await checkAllowed("input", req.input);
      await checkAllowed("output", req.output);
      // Extra manifest formats are outputs too: the same normalising and allowed roots.
      if (req.formats) {
        req.formats = await resolveRequestedFormats(
          req.formats,
          req.input,
          normaliseUri,
          checkAllowed,
        );
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
      const gate = new RequestStorageGate(storage, controller.signal);
      const remaining = Math.max(0, timeoutMs - (performance.now() - c.get("arrived")));
      const timer = setTimeout(() => {
        // The manifest is being written: the answer waits for the write, whatever it says.
        if (gate.writing) return;
        controller.abort(
          new ApiError(
            "timeout",
            `scoring ${req.input} took longer than ${timeoutMs} ms; nothing was written, retry ` +
              "(a later request for the same output starts over)",
            { uri: req.input, timeoutMs },
          ),
        );
      }, remaining);
      const started = performance.now();
      metrics.inFlight.inc();
      try {
        // One scoring per output at a time in this process: a second request for the same
        // output waits, then finds the manifest the first wrote (and gets `cached: true`).
        for (let p = inFlight.get(req.output); p; p = inFlight.get(req.output)) {
          await raceAbort(p.catch(() => {}), controller.signal);
        }
        const run = scoreShard({ ...deps, storage: gate.storage }, req, controller.signal);
        inFlight.set(req.output, run);
        // Released when the scoring really ends (after a timeout it still has to unwind).
        run.catch(() => {}).finally(() => {
          if (inFlight.get(req.output) === run) inFlight.delete(req.output);
        });
        const result: ScoreResult = await raceAbort(run, controller.signal);
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
  const lifecycle: ScoringLifecycle = { metrics, warmUp, close: () => pool.close() };
  return Object.assign(route, lifecycle);
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
