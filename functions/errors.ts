/**
 * Errors the scoring function answers with: each has an HTTP status, a stable machine-readable
 * `code` (also the `kind` label of the errors metric) and a message that says what to do.
 */

/** Stable error codes of the scoring API. */
export type ErrorCode =
  | "bad_request"
  | "invalid_record"
  | "duplicate_id"
  | "empty_shard"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "request_timeout"
  | "payload_too_large"
  | "not_a_datarater_model"
  | "storage_error"
  | "inference_error"
  | "timeout"
  | "internal";

const STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  invalid_record: 400,
  duplicate_id: 400,
  empty_shard: 422,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  request_timeout: 408,
  payload_too_large: 413,
  not_a_datarater_model: 422,
  storage_error: 502,
  inference_error: 500,
  timeout: 504,
  internal: 500,
};

/** An error with its HTTP status and API code; `details` go into the JSON body. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ApiError";
    this.status = STATUS[code];
  }

  /** The response body: `{"error": {"code", "message", ...details}}`. */
  toJSON(): { error: Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}
