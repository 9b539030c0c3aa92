/**
 * Prometheus metrics of the scoring function (prom-client, one registry per app so tests can
 * build several apps in one process).
 */
import client from "prom-client";

/** The app's metrics; `registry.metrics()` renders the Prometheus text format. */
export class ScoringMetrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({
    name: "datarater_http_requests_total",
    help: "HTTP requests by route, method and status",
    labelNames: ["route", "method", "status"] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new client.Histogram({
    name: "datarater_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["route"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly errors = new client.Counter({
    name: "datarater_errors_total",
    help: "Failed requests by error kind (the API error code)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly records = new client.Counter({
    name: "datarater_records_total",
    help: "Records processed by outcome: kept, dropped or skipped (invalid)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly shards = new client.Counter({
    name: "datarater_shards_total",
    help: "Score requests by result: created (new manifest) or cached (existing manifest)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly shardSeconds = new client.Histogram({
    name: "datarater_shard_duration_seconds",
    help: "Time to score one shard and write its manifest",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly batchSeconds = new client.Histogram({
    name: "datarater_inference_batch_duration_seconds",
    help: "onnxruntime run time of one batch (in the inference worker)",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly modelsLoaded = new client.Gauge({
    name: "datarater_models_loaded",
    help: "Models with an open onnxruntime session",
    registers: [this.registry],
  });
  readonly inFlight = new client.Gauge({
    name: "datarater_score_requests_in_flight",
    help: "Score requests being processed",
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: "datarater_" });
  }
}
