/**
 * The MetaTraining custom resource: its API identity, the zod schema of its spec (the one source the
 * CRD's OpenAPI schema is generated from, see `crd.ts`), and the shape of its status.
 *
 * @example
 * ```ts
 * const spec = parseMetaTrainingSpec({ training: { data: { train: "s3://b/t/", heldout: "s3://b/h/" } } });
 * spec.resources.gpus; // 0
 * ```
 */
import { z } from "zod";
import { formatIssues, StorageUriSchema, TrainConfigSchema } from "../lib/config.ts";

/** API group of the CRD. */
export const GROUP = "datarater.dev";
/** The one served and stored version. */
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = "MetaTraining";
export const PLURAL = "metatrainings";
export const SINGULAR = "metatraining";
export const SHORT_NAMES = ["mt", "mtrain"];

/** Label on every child: the MetaTraining that owns it (used to list children by owner). */
export const OWNER_LABEL = `${GROUP}/metatraining`;
/** Kueue reads this label to place a suspended Job in a LocalQueue. */
export const KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name";

/** A Kubernetes resource quantity (`500m`, `2`, `8Gi`). Same pattern as the apiserver's. */
const QUANTITY_PATTERN =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;
const QuantitySchema = z.union([
  z.number().int().nonnegative(),
  z.string().regex(QUANTITY_PATTERN, "expected a Kubernetes quantity such as 500m, 2 or 8Gi"),
]);

/** An RFC 1123 label: names of Secrets, queues and keys the pod refers to. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const TolerationSchema = z.object({
  key: z.string().optional(),
  operator: z.enum(["Exists", "Equal"]).optional(),
  value: z.string().optional(),
  effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional(),
  tolerationSeconds: z.number().int().optional(),
});

/**
 * `spec.training`: the trainer's config as the user writes it. Everything with a default may be left
 * out; `output` may be too, and the operator then derives it from its `--output-prefix`.
 */
export const TrainingSpecSchema = TrainConfigSchema.extend({
  output: StorageUriSchema.optional(),
});

export const ResourcesSpecSchema = z.object({
  gpus: z.number().int().min(0).max(16).default(0).describe(
    "NVIDIA GPUs for the trainer pod (nvidia.com/gpu). More than 0 selects the WebGPU backend unless spec.training.backend says otherwise. Default: 0.",
  ),
  cpu: QuantitySchema.default("2").describe("CPU request of the trainer pod. Default: 2."),
  memory: QuantitySchema.default("8Gi").describe(
    "Memory request and limit of the trainer pod. Default: 8Gi.",
  ),
}).describe("Compute for the trainer pod.");

export const S3CredentialsSecretSchema = z.object({
  name: z.string().regex(DNS_LABEL, "expected a Secret name (RFC 1123 label)").describe(
    "Name of a Secret in the MetaTraining's namespace.",
  ),
  accessKeyIdKey: z.string().min(1).default("AWS_ACCESS_KEY_ID").describe(
    "Key of the access key id in the Secret. Default: AWS_ACCESS_KEY_ID.",
  ),
  secretAccessKeyKey: z.string().min(1).default("AWS_SECRET_ACCESS_KEY").describe(
    "Key of the secret access key in the Secret. Default: AWS_SECRET_ACCESS_KEY.",
  ),
}).describe(
  "Secret with S3 credentials, given to the trainer as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
);

/** `spec` of a MetaTraining. Parse with {@link parseMetaTrainingSpec} to fill defaults. */
export const MetaTrainingSpecSchema = z.object({
  training: TrainingSpecSchema.describe(
    "The trainer's configuration (lib/config.ts). Fields left out take the trainer's defaults; output defaults to <operator --output-prefix>/<namespace>/<name>.",
  ),
  image: z.string().min(1).optional().describe(
    "Trainer image. Default: the operator's --trainer-image.",
  ),
  resources: ResourcesSpecSchema.default(ResourcesSpecSchema.parse({})),
  nodeSelector: z.record(z.string(), z.string()).optional().describe(
    "Node labels the trainer pod must match.",
  ),
  tolerations: z.array(TolerationSchema).optional().describe(
    "Tolerations of the trainer pod (e.g. for tainted GPU nodes).",
  ),
  s3CredentialsSecret: S3CredentialsSecretSchema.optional(),
  s3Endpoint: z.url().optional().describe(
    "S3-compatible endpoint (MinIO, R2, ...), given to the trainer as S3_ENDPOINT.",
  ),
  suspend: z.boolean().default(false).describe(
    "Suspend training: the Job is suspended (its pods stop) and resumes from the last checkpoint when unset. Default: false.",
  ),
  queueName: z.string().regex(DNS_LABEL, "expected a LocalQueue name (RFC 1123 label)").optional()
    .describe(
      "Kueue LocalQueue. The Job is created suspended with the kueue.x-k8s.io/queue-name label, and Kueue admits it.",
    ),
  backoffLimit: z.number().int().min(0).max(100).default(3).describe(
    "Pod failures tolerated before the Job fails; each retry resumes from the last checkpoint. Default: 3.",
  ),
  ttlSecondsAfterFinished: z.number().int().min(0).max(31_536_000).optional().describe(
    "Delete the finished Job (not the MetaTraining, nor its artifacts) this many seconds after it finishes.",
  ),
});

export type MetaTrainingSpec = z.infer<typeof MetaTrainingSpecSchema>;
export type MetaTrainingSpecInput = z.input<typeof MetaTrainingSpecSchema>;

/** One problem with a spec, with the field path as the apiserver would name it (`spec.training.meta.population`). */
export interface SpecIssue {
  field: string;
  message: string;
}

/** Validates a MetaTraining spec; returns the parsed spec or the issues, each naming its field. */
export function validateMetaTrainingSpec(
  spec: unknown,
): { ok: true; spec: MetaTrainingSpec } | { ok: false; issues: SpecIssue[] } {
  if (spec === undefined || spec === null) {
    return { ok: false, issues: [{ field: "spec", message: "Required value" }] };
  }
  const result = MetaTrainingSpecSchema.safeParse(spec);
  if (result.success) return { ok: true, spec: result.data };
  return {
    ok: false,
    issues: formatIssues(result.error).map((i) => ({
      field: i.path ? `spec.${i.path}` : "spec",
      message: i.message,
    })),
  };
}

/** Parses a spec, throwing an error that names every bad field. */
export function parseMetaTrainingSpec(spec: unknown): MetaTrainingSpec {
  const result = validateMetaTrainingSpec(spec);
  if (!result.ok) {
    throw new Error(
      "invalid MetaTraining spec: " +
        result.issues.map((i) => `${i.field}: ${i.message}`).join("; "),
    );
  }
  return result.spec;
}

/** The condition types a MetaTraining reports (Kubeflow Trainer / JobSet style). */
export const CONDITION_TYPES = ["Accepted", "Running", "Suspended", "Succeeded", "Failed"] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

/** A `metav1.Condition`. */
export const ConditionSchema = z.object({
  type: z.string().min(1).max(316),
  status: z.enum(["True", "False", "Unknown"]),
  observedGeneration: z.number().int().min(0).optional(),
  lastTransitionTime: z.string(),
  reason: z.string().min(1).max(1024),
  message: z.string().max(32768),
});
export type Condition = z.infer<typeof ConditionSchema> & { type: ConditionType };

/** Coarse state for `kubectl get`; the conditions carry the detail. */
export const PHASES = ["Pending", "Queued", "Suspended", "Running", "Succeeded", "Failed"] as const;
export type MetaTrainingPhase = (typeof PHASES)[number];

export const MetaTrainingProgressSchema = z.object({
  step: z.number().int().min(0),
  totalSteps: z.number().int().min(0),
  /** `step/totalSteps`, for the printer column. */
  steps: z.string(),
  metaLoss: z.number().optional(),
  /** The trainer's own phase: training, exporting, done. */
  trainerPhase: z.string(),
  /** When the trainer wrote this progress. */
  updatedAt: z.string(),
});
export type MetaTrainingProgress = z.infer<typeof MetaTrainingProgressSchema>;

export const MetaTrainingArtifactsSchema = z.object({
  /** URI of the exported rater. */
  onnx: z.string(),
  sha256: z.string(),
  calibration: z.object({ samples: z.number().int(), quantiles: z.array(z.number()) }),
  finishedAt: z.string(),
});
export type MetaTrainingArtifacts = z.infer<typeof MetaTrainingArtifactsSchema>;

/**
 * `status`. It is part of the CRD's schema too: a real apiserver prunes status fields its schema
 * does not name, so every field the operator writes must be declared here.
 */
export const MetaTrainingStatusSchema = z.object({
  phase: z.enum(PHASES).optional(),
  observedGeneration: z.number().int().optional(),
  conditions: z.array(ConditionSchema).optional(),
  /** The Job realising the current spec. */
  jobName: z.string().optional(),
  /** The resolved output URI (checkpoints, progress, the exported rater). */
  output: z.string().optional(),
  progress: MetaTrainingProgressSchema.optional(),
  artifacts: MetaTrainingArtifactsSchema.optional(),
  startTime: z.string().optional(),
  completionTime: z.string().optional(),
});
export type MetaTrainingStatus = Omit<z.infer<typeof MetaTrainingStatusSchema>, "conditions"> & {
  conditions?: Condition[];
};

export interface MetaTraining {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: {
    name: string;
    namespace: string;
    uid?: string;
    generation?: number;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
  };
  /** Raw as stored: validated by the apiserver's schema, parsed again (with defaults) by the operator. */
  spec: MetaTrainingSpecInput;
  status?: MetaTrainingStatus;
}

/** `namespace/name`, the work queue's key. */
export function keyOf(obj: { metadata?: { namespace?: string; name?: string } }): string {
  return `${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? ""}`;
}

/** Splits a `namespace/name` key. */
export function splitKey(key: string): { namespace: string; name: string } {
  const slash = key.indexOf("/");
  return { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}
