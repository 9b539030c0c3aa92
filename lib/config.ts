/**
 * The meta-training configuration: one typed, validated schema with documented defaults.
 *
 * The trainer (`training/main.ts`), the operator's CRD (`cluster/`), and the demo all derive from
 * this one schema, so a field added here reaches the CRD's OpenAPI schema without a second edit.
 *
 * @example
 * ```ts
 * const config = parseTrainConfig({ data: { train: "s3://b/train/", heldout: "s3://b/heldout/" }, output: "s3://b/run1/" });
 * config.meta.population; // 8
 * ```
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { DEFAULT_SCORE_CAP_BYTES } from "./windows.ts";

/** A storage URI: `s3://bucket/key`, `file:///abs/path`, or a bare filesystem path. */
export const StorageUriSchema = z.string().min(1).refine(
  (s) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(s) || /^(s3|file):\/\//.test(s),
  { message: "expected s3://bucket/key, file:///abs/path or a bare path" },
);

export const DataConfigSchema = z.object({
  /** Prefix (or single object) of JSON Lines (optionally gzip) records the rater learns to rate. */
  train: StorageUriSchema,
  /** Disjoint held-out records: the outer (meta) objective. Same distribution, or a target set. */
  heldout: StorageUriSchema,
  idField: z.string().min(1).default("id"),
  textField: z.string().min(1).default("text"),
  /**
   * Where in a record the learners' `seqLen`-byte window sits, in training and in the held-out
   * (outer) batches: `random`, at a uniform offset (how a language model reads a corpus: every byte
   * of a record is trained on, as with packing and as the downstream trainer does); `head`, at its
   * start. Either way the rater reads the same place (its `rater.seqLen` bytes from the window's
   * start, moved back to fit the record), so a training example's score is computed from what the
   * learner trains on, and junk anywhere in a record can be learnt, as the scorer rates windows
   * across the whole record.
   */
  window: z.enum(["head", "random"]).default("random"),
  /**
   * With `window: random`, bytes of each record kept in memory (a longer record is cut). The
   * default is the scorer's cap (`DEFAULT_SCORE_CAP_BYTES` in `lib/windows.ts`), so the learners
   * train on exactly the bytes the scorer rates.
   */
  maxRecordBytes: z.number().int().min(1).max(1 << 24).default(DEFAULT_SCORE_CAP_BYTES),
});

export const RaterConfigSchema = z.object({
  /**
   * `transformer`: byte embedding + non-causal transformer + mean-pool + linear head (the paper's
   * kind, sized down). `mlp`: byte embedding + mean-pool + MLP (cheap; sees no order).
   */
  kind: z.enum(["transformer", "mlp"]).default("transformer"),
  dModel: z.number().int().min(4).max(1024).default(64),
  layers: z.number().int().min(0).max(24).default(2),
  heads: z.number().int().min(1).max(32).default(4),
  ffn: z.number().int().min(4).max(8192).default(128),
  /** Hidden width of the MLP head (mlp kind). */
  hidden: z.number().int().min(1).max(8192).default(64),
  /**
   * Bytes of each record's head the rater reads (default: the top-level `seqLen`, what the learners
   * read). A longer view sees junk past the first bytes, at a cost linear (mlp) or quadratic
   * (attention) in it; the exported model carries it as its window, and the scorer cuts every
   * record into windows of it (see `scoring`).
   */
  seqLen: z.number().int().min(4).max(4096).optional(),
  /**
   * transformer only: bytes per position. The input at a position is the sum of one-hot
   * (offset-in-patch, byte) embeddings of its `patch` bytes plus the position's, so attention and
   * the MLP run on ⌈seqLen / patch⌉ positions: about `patch`× less work per byte (1 = one byte
   * per position).
   */
  patch: z.number().int().min(1).max(16).default(4),
  /**
   * How the scorer rates a whole record with this rater (carried in the ONNX export): windows of
   * the rater's `seqLen` bytes every `stride` bytes (default: the window, tiling the record), and
   * the record's score is the `aggregation` of its window scores (lib/windows.ts).
   */
  scoring: z.object({
    stride: z.number().int().min(1).max(4096).optional(),
    aggregation: z.enum(["mean", "min"]).default("mean"),
  }).strict().default({ aggregation: "mean" }),
}).refine((r) => r.dModel % r.heads === 0, {
  message: "dModel must be divisible by heads",
  path: ["heads"],
});

export const InnerConfigSchema = z.object({
  dModel: z.number().int().min(4).max(1024).default(64),
  layers: z.number().int().min(1).max(24).default(1),
  heads: z.number().int().min(1).max(32).default(4),
  ffn: z.number().int().min(4).max(8192).default(256),
  /** Inner optimiser: Adam (the paper's) or plain SGD (the reference benchmark's). */
  optimizer: z.enum(["adam", "sgd"]).default("adam"),
  lr: z.number().positive().max(10).default(1e-3),
  beta1: z.number().min(0).max(1).default(0.9),
  beta2: z.number().min(0).max(1).default(0.999),
  eps: z.number().positive().default(1e-8),
}).refine((r) => r.dModel % r.heads === 0, {
  message: "dModel must be divisible by heads",
  path: ["heads"],
});

export const MetaConfigSchema = z.object({
  /** Meta-steps to run (the paper used the checkpoint at 8,000). */
  steps: z.number().int().min(1).default(1000),
  /** Inner updates unrolled per meta-step (paper: 2 was as good as more). */
  unroll: z.number().int().min(1).max(16).default(2),
  /** Persistent inner models (paper: 8). */
  population: z.number().int().min(1).max(256).default(8),
  /** Each inner model is re-initialised after this many meta-steps; resets are staggered. */
  resetEvery: z.number().int().min(1).default(200),
  lr: z.number().positive().max(1).default(5e-3),
  warmupSteps: z.number().int().min(0).default(100),
  weightDecay: z.number().min(0).default(0.1),
  /** Global-norm clipping of each meta-gradient (paper: 0.01). */
  clipNorm: z.number().positive().default(0.01),
  beta1: z.number().min(0).max(1).default(0.9),
  beta2: z.number().min(0).max(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  innerBatch: z.number().int().min(1).max(4096).default(32),
  outerBatch: z.number().int().min(1).max(4096).default(32),
  /** Decay of the exponential moving average of rater parameters that is exported (0 = none). */
  paramEma: z.number().min(0).max(1).default(0.99),
});

export const TrainConfigSchema = z.object({
  data: DataConfigSchema,
  /** Prefix for checkpoints, metrics, progress and the exported rater. */
  output: StorageUriSchema,
  /** Bytes per record seen by the rater and the learners (longer records are truncated). */
  seqLen: z.number().int().min(4).max(4096).default(64),
  rater: RaterConfigSchema.default(RaterConfigSchema.parse({})),
  inner: InnerConfigSchema.default(InnerConfigSchema.parse({})),
  meta: MetaConfigSchema.default(MetaConfigSchema.parse({})),
  backend: z.enum(["wasm", "webgpu", "cpu"]).default("wasm"),
  /** Worker threads the population is spread over (tfjs-wasm is single-threaded per worker). */
  workers: z.number().int().min(1).max(64).default(1),
  seed: z.number().int().min(0).default(0),
  checkpointEvery: z.number().int().min(1).default(50),
  logEvery: z.number().int().min(1).default(10),
});

export type DataConfig = z.infer<typeof DataConfigSchema>;
export type RaterConfig = z.infer<typeof RaterConfigSchema>;
export type InnerConfig = z.infer<typeof InnerConfigSchema>;
export type MetaConfig = z.infer<typeof MetaConfigSchema>;
export type TrainConfig = z.infer<typeof TrainConfigSchema>;
/** The config as a user writes it: everything with a default may be left out. */
export type TrainConfigInput = z.input<typeof TrainConfigSchema>;

/** A config that failed validation; `issues` name each field path and what was expected. */
export class ConfigError extends Error {
  constructor(
    readonly issues: { path: string; message: string }[],
    source = "config",
  ) {
    super(
      `invalid ${source}:\n` +
        issues.map((i) => `  - ${i.path || "(root)"}: ${i.message}`).join("\n"),
    );
    this.name = "ConfigError";
  }
}

/** Formats zod issues as `{path, message}` with dotted paths (`meta.population`). */
export function formatIssues(
  error: z.ZodError,
): { path: string; message: string }[] {
  return error.issues.map((i) => ({
    path: i.path.map(String).join("."),
    message: i.message,
  }));
}

/** Validates and fills defaults; throws {@link ConfigError} naming every bad field. */
export function parseTrainConfig(
  input: unknown,
  source = "config",
): TrainConfig {
  const result = TrainConfigSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(formatIssues(result.error), source);
  }
  return result.data;
}

/** What the trainer writes to `<output>/progress.json` after each checkpoint. */
export const TrainerProgressSchema = z.object({
  step: z.number().int().min(0),
  totalSteps: z.number().int().min(0),
  metaLoss: z.number().nullable(),
  updatedAt: z.string(),
  phase: z.enum(["training", "exporting", "done"]),
  /**
   * {@link configDigest} of the run writing here: the operator compares it with a new spec's before
   * starting a Job on an output that already holds a run (absent in reports of older trainers).
   */
  configDigest: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
export type TrainerProgress = z.infer<typeof TrainerProgressSchema>;

/** Bytes of each record's head the rater reads (`rater.seqLen`, else the top-level `seqLen`). */
export function raterSeqLen(config: Pick<TrainConfig, "rater" | "seqLen">): number {
  return config.rater.seqLen ?? config.seqLen;
}

/**
 * The part of a config that determines a run's numbers, as a sha256 hex digest: a checkpoint is
 * only resumed under the same digest (`meta.steps`, logging, workers, backend and checkpoint
 * cadence may change).
 */
export function configDigest(config: TrainConfig): string {
  const { steps: _steps, ...meta } = config.meta;
  return createHash("sha256").update(JSON.stringify({
    data: config.data,
    seqLen: config.seqLen,
    rater: config.rater,
    inner: config.inner,
    meta,
    seed: config.seed,
  })).digest("hex");
}

/** What the trainer writes to `<output>/artifacts.json` once the rater is exported. */
export const TrainerArtifactsSchema = z.object({
  onnx: StorageUriSchema,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  calibration: z.object({
    samples: z.number().int().min(0),
    quantiles: z.array(z.number()),
  }),
  finishedAt: z.string(),
});
export type TrainerArtifacts = z.infer<typeof TrainerArtifactsSchema>;

/** Well-known object names under a run's `output` prefix. */
export const RUN_LAYOUT = {
  progress: "progress.json",
  artifacts: "artifacts.json",
  metrics: "metrics.jsonl",
  checkpoints: "checkpoints/",
  onnx: "rater.onnx",
} as const;

/** Joins a prefix URI and a relative name with exactly one slash. */
export function joinUri(prefix: string, name: string): string {
  return prefix.replace(/\/+$/, "") + "/" + name.replace(/^\/+/, "");
}
