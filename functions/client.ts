/**
 * A client of the scoring function, typed by the app's own routes (Hono's `hc` over
 * {@link ScoringApp}): one call per shard, no retries (the caller decides; `deno task score`
 * retries the errors whose {@link ScoringClientError.retryable} is true).
 *
 * @example
 * ```ts
 * const client = scoringClient({ endpoint: "http://localhost:8080", token });
 * const { status, result } = await client.score({
 *   model: "s3://b/run1/rater.onnx",
 *   input: "s3://b/shards/part-0.jsonl",
 *   output: "s3://b/manifests/run1/part-0.manifest.jsonl",
 *   policy: { kind: "keepFraction", fraction: 0.5 },
 * });
 * ```
 */
import { hc } from "hono/client";
import type { ScoreRequestBody, ScoringApp } from "./app.ts";
import type { ScoreResult } from "./score.ts";

export type { ScoreRequestBody, ScoreResult };

/** Options of {@link scoringClient}. */
export interface ScoringClientOptions {
  /** The function's base URL, e.g. `http://localhost:8080`. */
  endpoint: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  token?: string;
  /** The fetch to use (tests inject faults); the global one by default. */
  fetch?: typeof fetch;
}

/**
 * A request that did not score: an error answer (`status`, and the API's `code` when the body
 * was the function's JSON error) or no answer at all (`status` undefined: refused, reset…).
 */
export class ScoringClientError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly code?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ScoringClientError";
  }

  /**
   * Worth retrying: no answer, a timeout (408), throttling (429) or a server-side failure (5xx).
   * Other 4xx are the caller's request and fail the same way again.
   */
  get retryable(): boolean {
    const s = this.status;
    return s === undefined || s === 408 || s === 429 || s >= 500;
  }
}

/** What {@link scoringClient} returns. */
export interface ScoringClient {
  /**
   * `POST /v1/score`: 201 with the new manifest's summary, or 200 when it already existed
   * (`result.cached`). Throws {@link ScoringClientError} otherwise.
   */
  score(
    request: ScoreRequestBody,
    options?: { signal?: AbortSignal },
  ): Promise<{ status: number; result: ScoreResult }>;
  /** `GET /readyz`: whether the function has loaded its warm models (false when unreachable). */
  ready(options?: { signal?: AbortSignal }): Promise<boolean>;
}

/** A client of the scoring function at `options.endpoint`. */
export function scoringClient(options: ScoringClientOptions): ScoringClient {
  const api = hc<ScoringApp>(options.endpoint, {
    fetch: options.fetch ?? fetch,
    headers: options.token ? { authorization: `Bearer ${options.token}` } : undefined,
  });
  return {
    async score(request, { signal } = {}) {
      let res;
      try {
        res = await api.v1.score.$post({ json: request }, { init: { signal } });
      } catch (e) {
        if (signal?.aborted) throw e;
        throw new ScoringClientError(
          `request failed: ${(e as Error).message}`,
          undefined,
          undefined,
          {
            cause: e,
          },
        );
      }
      const body = await res.json().catch(() => null) as
        | (ScoreResult & { error?: { code?: string; message?: string } })
        | null;
      if (res.ok && body) return { status: res.status, result: body };
      throw new ScoringClientError(
        body?.error?.message ?? (res.statusText || `HTTP ${res.status}`),
        res.status,
        body?.error?.code,
      );
    },
    async ready({ signal } = {}) {
      try {
        const res = await api.readyz.$get(undefined, { init: { signal } });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    },
  };
}
