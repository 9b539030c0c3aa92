/**
 * Prometheus metrics of the scoring function (prom-client, one registry per app so tests can
 * build several apps in one process).
 */
import client from "prom-client";

/** The app's metrics; `registry.metrics()` renders the Prometheus text format. */
export class ScoringMetrics {
  readonly registry = new client.Registry();
  readonly requests = this.#counter(
    "datarater_http_requests_total",
    "HTTP requests by route, method and status",
    "route",
    "method",
    "status",
  );
  readonly requestSeconds = this.#histogram(
    "datarater_http_request_duration_seconds",
    "HTTP request latency by route",
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    "route",
  );
  readonly errors = this.#counter(
    "datarater_errors_total",
    "Failed requests by error kind (the API error code)",
    "kind",
  );
  readonly records = this.#counter(
    "datarater_records_total",
    "Records processed by outcome: kept, dropped or skipped (invalid)",
    "outcome",
  );
  readonly shards = this.#counter(
    "datarater_shards_total",
    "Score requests by result: created (new manifest) or cached (existing manifest)",
    "result",
  );
  readonly shardSeconds = this.#histogram(
    "datarater_shard_duration_seconds",
    "Time to score one shard and write its manifest",
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
  );
  readonly batchSeconds = this.#histogram(
    "datarater_inference_batch_duration_seconds",
    "onnxruntime run time of one batch (in the inference worker)",
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  );
  readonly modelsLoaded = this.#gauge(
    "datarater_models_loaded",
    "Models with an open onnxruntime session",
  );
  readonly inFlight = this.#gauge(
    "datarater_score_requests_in_flight",
    "Score requests being processed",
  );

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: "datarater_" });
  }

  // Every metric goes in this app's registry, never the global one (several apps per process).
  #counter<L extends string>(name: string, help: string, ...labelNames: L[]) {
    return new client.Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  #histogram<L extends string>(name: string, help: string, buckets: number[], ...labelNames: L[]) {
    return new client.Histogram<L>({ name, help, buckets, labelNames, registers: [this.registry] });
  }

  #gauge(name: string, help: string) {
    return new client.Gauge({ name, help, registers: [this.registry] });
  }
}
