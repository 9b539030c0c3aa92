/**
 * What a MetaTraining should own: its resolved trainer config, the ConfigMap holding it and the
 * batch/v1 Job that runs the trainer. Pure functions of the resource and the operator's settings.
 *
 * @example
 * ```ts
 * const run = resolveRun(mt, spec, settings);
 * const job = desiredJob(mt, spec, settings);
 * ```
 */
import { createHash } from "node:crypto";
import type {
  V1ConfigMap,
  V1EnvVar,
  V1Job,
  V1OwnerReference,
  V1Toleration,
} from "@kubernetes/client-node";
import { formatIssues, joinUri, type TrainConfig, TrainConfigSchema } from "../lib/config.ts";
import {
  API_VERSION,
  KIND,
  KUEUE_QUEUE_LABEL,
  type MetaTraining,
  type MetaTrainingSpec,
  OWNER_LABEL,
  type SpecIssue,
} from "./metatraining.ts";
import { canonicalJson } from "../lib/json.ts";

/** Where the trainer finds its config in the pod. */
export const CONFIG_MOUNT_DIR = "/etc/datarater";
export const CONFIG_FILE = "config.json";
export const TRAINER_CONTAINER = "trainer";
/** Annotation: the MetaTraining generation a Job was created for. */
export const GENERATION_ANNOTATION = "datarater.dev/generation";
/** Annotation: hash of the spec a Job realises (also the suffix of its name). */
export const SPEC_HASH_ANNOTATION = "datarater.dev/spec-hash";

/** Operator-wide settings that fill what a MetaTraining leaves out. */
export interface OperatorSettings {
  /** Trainer image when `spec.image` is unset. */
  trainerImage: string;
  /** Base of `spec.training.output` when unset: `<prefix>/<namespace>/<name>`. */
  outputPrefix?: string;
  imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** ServiceAccount of trainer pods (e.g. for cloud workload identity instead of a Secret). */
  trainerServiceAccount?: string;
}

/** The spec cannot be turned into a run (beyond what the schema checks); names the field. */
export class SpecError extends Error {
  constructor(readonly issues: SpecIssue[]) {
    super(issues.map((i) => `${i.field}: ${i.message}`).join("; "));
    this.name = "SpecError";
  }
}

/** A MetaTraining's concrete run: the full trainer config and where it writes. */
export interface ResolvedRun {
  config: TrainConfig;
  output: string;
}

/**
 * Fills the trainer config: defaults, the output URI, and the backend (WebGPU when GPUs are
 * requested and the user did not choose one).
 */
export function resolveRun(
  mt: MetaTraining,
  spec: MetaTrainingSpec,
  settings: Pick<OperatorSettings, "outputPrefix">,
): ResolvedRun {
  const rawTraining = (mt.spec?.training ?? {}) as Record<string, unknown>;
  const output = spec.training.output ??
    (settings.outputPrefix
      ? joinUri(settings.outputPrefix, `${mt.metadata.namespace}/${mt.metadata.name}`)
      : undefined);
  if (!output) {
    throw new SpecError([{
      field: "spec.training.output",
      message:
        "Required value: set it, or start the operator with --output-prefix so outputs default to <prefix>/<namespace>/<name>",
    }]);
  }
  const backend = rawTraining.backend ?? (spec.resources.gpus > 0 ? "webgpu" : undefined);
  const parsed = TrainConfigSchema.safeParse({
    ...rawTraining,
    output,
    ...(backend ? { backend } : {}),
  });
  if (!parsed.success) {
    throw new SpecError(
      formatIssues(parsed.error).map((i) => ({
        field: `spec.training.${i.path}`,
        message: i.message,
      })),
    );
  }
  return { config: parsed.data, output };
}

/** Names of the children realising the current spec. */
export interface ChildNames {
  job: string;
  configMap: string;
  specHash: string;
}

/**
 * Child names are a pure function of the spec (without `suspend`, which is applied to the Job in
 * place): a restarted operator finds the Job it created instead of making another, a spec change
 * gets a new Job, and suspending keeps the Job (Kueue's and the Job API's convention).
 */
export function childNames(mt: MetaTraining): ChildNames {
  const { suspend: _suspend, ...rest } = (mt.spec ?? {}) as Record<string, unknown>;
  const specHash = createHash("sha256").update(canonicalJson(rest)).digest("hex").slice(0, 10);
  // Job names become the pods' job-name label: at most 63 characters.
  const base = mt.metadata.name.slice(0, 63 - specHash.length - 1).replace(/[-.]+$/, "")
    .replace(/\./g, "-");
  const job = `${base}-${specHash}`;
  return { job, configMap: `${job}-config`, specHash };
}

/** The ownerReference that makes a child garbage-collected with its MetaTraining. */
export function ownerReference(mt: MetaTraining): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: mt.metadata.name,
    uid: mt.metadata.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Labels on every child (and the trainer pods): selects them by owner. */
export function childLabels(mt: MetaTraining): Record<string, string> {
  return {
    [OWNER_LABEL]: mt.metadata.name.slice(0, 63),
    "app.kubernetes.io/name": "datarater-trainer",
    "app.kubernetes.io/managed-by": "datarater-operator",
  };
}

/** The ConfigMap holding the trainer config. */
export function desiredConfigMap(mt: MetaTraining, run: ResolvedRun): V1ConfigMap {
  const names = childNames(mt);
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: names.configMap,
      namespace: mt.metadata.namespace,
      labels: childLabels(mt),
      annotations: { [SPEC_HASH_ANNOTATION]: names.specHash },
      ownerReferences: [ownerReference(mt)],
    },
    data: { [CONFIG_FILE]: JSON.stringify(run.config, null, 2) + "\n" },
  };
}

function quantity(q: string | number): string {
  return typeof q === "number" ? String(q) : q;
}

/** Whether the Job should be created suspended: by the user, or for Kueue to admit. */
export function createSuspended(spec: MetaTrainingSpec): boolean {
  return spec.suspend || spec.queueName !== undefined;
}

/**
 * The suspend state the operator enforces on an existing Job; undefined leaves it alone. With a
 * Kueue queue, unsuspending is Kueue's decision (admission), so the operator only ever suspends.
 */
export function enforcedSuspend(spec: MetaTrainingSpec): boolean | undefined {
  if (spec.suspend) return true;
  return spec.queueName === undefined ? false : undefined;
}

/** The batch/v1 Job that runs the trainer. */
export function desiredJob(
  mt: MetaTraining,
  spec: MetaTrainingSpec,
  settings: OperatorSettings,
): V1Job {
  const names = childNames(mt);
  const labels = childLabels(mt);
  const jobLabels = spec.queueName ? { ...labels, [KUEUE_QUEUE_LABEL]: spec.queueName } : labels;
  const gpus = spec.resources.gpus;
  const env: V1EnvVar[] = [
    { name: "DATARATER_METATRAINING", value: `${mt.metadata.namespace}/${mt.metadata.name}` },
  ];
  if (spec.s3CredentialsSecret) {
    const s = spec.s3CredentialsSecret;
    env.push(
      {
        name: "AWS_ACCESS_KEY_ID",
        valueFrom: { secretKeyRef: { name: s.name, key: s.accessKeyIdKey } },
      },
      {
        name: "AWS_SECRET_ACCESS_KEY",
        valueFrom: { secretKeyRef: { name: s.name, key: s.secretAccessKeyKey } },
      },
    );
  }
  if (spec.s3Endpoint) env.push({ name: "S3_ENDPOINT", value: spec.s3Endpoint });

  const tolerations: V1Toleration[] = [...(spec.tolerations ?? [])];
  // GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule; a pod asking for GPUs must tolerate it.
  if (gpus > 0 && !tolerations.some((t) => t.key === "nvidia.com/gpu")) {
    tolerations.push({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
  }
  const memory = quantity(spec.resources.memory);
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: names.job,
      namespace: mt.metadata.namespace,
      labels: jobLabels,
      annotations: {
        [GENERATION_ANNOTATION]: String(mt.metadata.generation ?? 0),
        [SPEC_HASH_ANNOTATION]: names.specHash,
      },
      ownerReferences: [ownerReference(mt)],
    },
    spec: {
      suspend: createSuspended(spec),
      backoffLimit: spec.backoffLimit,
      // A replacement pod starts only once the failed one has fully terminated, so two trainers
      // never write checkpoints to the same output at once.
      podReplacementPolicy: "Failed",
      ...(spec.ttlSecondsAfterFinished !== undefined
        ? { ttlSecondsAfterFinished: spec.ttlSecondsAfterFinished }
        : {}),
      template: {
        metadata: { labels },
        spec: {
          // Retries are new pods (counted against backoffLimit); each resumes from the last checkpoint.
          restartPolicy: "Never",
          ...(settings.trainerServiceAccount
            ? { serviceAccountName: settings.trainerServiceAccount }
            : {}),
          // The trainer needs no API access: it reports through storage (see reconcile.ts).
          automountServiceAccountToken: false,
          ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
          ...(tolerations.length ? { tolerations } : {}),
          securityContext: { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } },
          containers: [{
            name: TRAINER_CONTAINER,
            image: spec.image ?? settings.trainerImage,
            ...(settings.imagePullPolicy ? { imagePullPolicy: settings.imagePullPolicy } : {}),
            command: ["deno", "task", "train", "--config", `${CONFIG_MOUNT_DIR}/${CONFIG_FILE}`],
            env,
            resources: {
              requests: { cpu: quantity(spec.resources.cpu), memory },
              limits: { memory, ...(gpus > 0 ? { "nvidia.com/gpu": String(gpus) } : {}) },
            },
            volumeMounts: [{ name: "config", mountPath: CONFIG_MOUNT_DIR, readOnly: true }],
            // The trainer writes its failure reason to /dev/termination-log; if it dies before
            // it can, the log tail is the reason.
            terminationMessagePath: "/dev/termination-log",
            terminationMessagePolicy: "FallbackToLogsOnError",
            securityContext: {
              allowPrivilegeEscalation: false,
              capabilities: { drop: ["ALL"] },
            },
          }],
          volumes: [{ name: "config", configMap: { name: names.configMap } }],
        },
      },
    },
  };
}
