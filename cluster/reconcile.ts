/**
 * The reconcile loop body: level-triggered and idempotent, in the controller-runtime style. Read
 * the desired state (the MetaTraining's spec), read the world (its Job, ConfigMap, the trainer's
 * reports in storage), act to close the difference, write status. It never trusts an event's
 * payload, is safe to run any number of times, and is a function of (client, key) that tests call
 * directly.
 *
 * @example
 * ```ts
 * const result = await reconcileMetaTraining(
 *   { client: new KubeOperatorClient(kc), runs: new RunReader(storage), settings: { trainerImage: "ghcr.io/x/trainer:1" } },
 *   "default/my-run",
 * );
 * if (result.requeueAfterMs) queue.addAfter("default/my-run", result.requeueAfterMs);
 * ```
 */
import type { CoreV1Event, V1Job, V1Pod } from "@kubernetes/client-node";
import { AlreadyExistsError, ConflictError, messageOf, type OperatorClient } from "./client.ts";
import {
  childNames,
  desiredConfigMap,
  desiredJob,
  enforcedSuspend,
  type OperatorSettings,
  type ResolvedRun,
  resolveRun,
  SpecError,
  TRAINER_CONTAINER,
} from "./children.ts";
import { canonicalJson } from "../lib/json.ts";
import { configDigest, type TrainerProgress } from "../lib/config.ts";
import {
  API_VERSION,
  type Condition,
  type ConditionType,
  KIND,
  type MetaTraining,
  type MetaTrainingPhase,
  type MetaTrainingSpec,
  type MetaTrainingStatus,
  OWNER_LABEL,
  type SpecIssue,
  splitKey,
  validateMetaTrainingSpec,
} from "./metatraining.ts";
import type { RunReader } from "./runs.ts";

/** Everything reconcile touches, injected. */
export interface ReconcileContext {
  client: OperatorClient;
  runs: RunReader;
  settings: OperatorSettings;
  /** How often an unfinished run is looked at again for progress. Default 30 s. */
  progressPollMs?: number;
  /** Reported as the Event source instance (the replica's identity). */
  identity?: string;
  now?: () => Date;
  log?: (message: string) => void;
}

export interface ReconcileResult {
  /** Look again after this long (an unfinished run: poll its progress). */
  requeueAfterMs?: number;
}

interface PendingEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

/** Conditions, phase and details observed in one pass. */
interface Observation {
  phase: MetaTrainingPhase;
  conditions: Omit<Condition, "lastTransitionTime" | "observedGeneration">[];
  details: Pick<
    MetaTrainingStatus,
    "jobName" | "output" | "progress" | "artifacts" | "startTime" | "completionTime"
  >;
  /** Events that belong to this transition (emitted only if the phase changes). */
  transitionEvent?: PendingEvent;
}

const STATUS_WRITE_ATTEMPTS = 5;
const TERMINAL: ReadonlySet<string> = new Set(["Succeeded", "Failed"]);

/** Reconciles the MetaTraining `namespace/name`. Throws on errors worth a rate-limited retry. */
export async function reconcileMetaTraining(
  ctx: ReconcileContext,
  key: string,
): Promise<ReconcileResult> {
  const { namespace, name } = splitKey(key);
  const mt = await ctx.client.getMetaTraining(namespace, name);
  // Deleted: its Job and ConfigMap carry ownerReferences, so the garbage collector removes them.
  if (!mt || mt.metadata.deletionTimestamp) return {};
  const events: PendingEvent[] = [];

  const validated = validateMetaTrainingSpec(mt.spec);
  let spec: MetaTrainingSpec | undefined;
  let run: ResolvedRun | undefined;
  let issues: SpecIssue[] | undefined;
  if (!validated.ok) issues = validated.issues;
  else {
    spec = validated.spec;
    try {
      run = resolveRun(mt, spec, ctx.settings);
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      issues = err.issues;
    }
  }
  if (!spec || !run || issues) {
    // The apiserver's schema cannot express every rule (e.g. dModel divisible by heads), so the
    // operator checks again and reports instead of creating a Job that would crash.
    const message = issues!.map((i) => `${i.field}: ${i.message}`).join("; ");
    await writeStatus(ctx, mt, events, {
      phase: "Failed",
      conditions: [
        { type: "Accepted", status: "False", reason: "InvalidSpec", message },
        { type: "Running", status: "False", reason: "InvalidSpec", message: "not started" },
        { type: "Failed", status: "True", reason: "InvalidSpec", message },
      ],
      details: {},
      transitionEvent: { type: "Warning", reason: "InvalidSpec", message },
    });
    return {};
  }

  const names = childNames(mt);
  const selector = `${OWNER_LABEL}=${mt.metadata.name.slice(0, 63)}`;
  const ownedByMe = (o: { metadata?: { ownerReferences?: { uid: string }[] } }) =>
    (o.metadata?.ownerReferences ?? []).some((r) => r.uid === mt.metadata.uid);

  // Children of a superseded spec: stop the old run before (re)starting with the new spec.
  const [jobs, configMaps] = await Promise.all([
    ctx.client.listJobs(namespace, selector),
    ctx.client.listConfigMaps(namespace, selector),
  ]);
  for (const old of jobs.filter((j) => ownedByMe(j) && j.metadata?.name !== names.job)) {
    await ctx.client.deleteJob(namespace, old.metadata!.name!, old.metadata!.uid!);
    events.push({
      type: "Normal",
      reason: "JobDeleted",
      message: `Deleted Job ${old.metadata!.name} of a superseded spec`,
    });
  }
  for (
    const old of configMaps.filter((c) => ownedByMe(c) && c.metadata?.name !== names.configMap)
  ) {
    await ctx.client.deleteConfigMap(namespace, old.metadata!.name!, old.metadata!.uid!);
  }

  let job = jobs.find((j) => j.metadata?.name === names.job && ownedByMe(j));
  const prior = mt.status;
  if (!job && prior?.jobName === names.job && TERMINAL.has(prior.phase ?? "")) {
    // Finished, and the Job was removed since (ttlSecondsAfterFinished, or by hand): the run is
    // over; recreating the Job would train again.
    await writeStatus(ctx, mt, events, keepTerminal(prior));
    return {};
  }

  // The trainer's progress report: read once a pass (for the check below and for the status).
  let known: { report: TrainerProgress | undefined } | undefined;
  if (!job) {
    known = { report: await ctx.runs.readProgress(run.output) };
    // An output that holds another configuration's run: the trainer would refuse to resume from
    // its checkpoints and the Job would fail after scheduling; say so before starting anything.
    const conflict = otherRunAt(run, known.report);
    if (conflict) {
      await writeStatus(ctx, mt, events, {
        phase: "Failed",
        conditions: [
          { type: "Accepted", status: "False", reason: "OutputInUse", message: conflict },
          { type: "Running", status: "False", reason: "OutputInUse", message: "not started" },
          { type: "Failed", status: "True", reason: "OutputInUse", message: conflict },
        ],
        details: { output: run.output },
        transitionEvent: { type: "Warning", reason: "OutputInUse", message: conflict },
      });
      // Looked at again: removing the old run's files is a fix that no spec change announces.
      return { requeueAfterMs: ctx.progressPollMs ?? 30_000 };
    }
  }

  if (!configMaps.some((c) => c.metadata?.name === names.configMap && ownedByMe(c))) {
    try {
      await ctx.client.createConfigMap(desiredConfigMap(mt, run));
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
    }
  }
  if (!job) {
    try {
      job = await ctx.client.createJob(desiredJob(mt, spec, ctx.settings));
      events.push({
        type: "Normal",
        reason: "JobCreated",
        message: `Created Job ${names.job} for generation ${mt.metadata.generation}`,
      });
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
      // Created by an earlier pass whose effect the cache has not shown yet.
      job = await ctx.client.getJob(namespace, names.job);
      if (!job) throw new ConflictError(`Job ${names.job} exists but cannot be read; retrying`);
    }
  } else {
    const want = enforcedSuspend(spec);
    if (want !== undefined && Boolean(job.spec?.suspend) !== want && !jobFinished(job)) {
      job = await ctx.client.setJobSuspended(namespace, names.job, want);
      events.push({
        type: "Normal",
        reason: want ? "Suspended" : "Resumed",
        message: want
          ? `Suspended Job ${names.job}; it resumes from the last checkpoint when spec.suspend is unset`
          : `Resumed Job ${names.job}`,
      });
    }
  }

  const observation = await observe(ctx, spec, run, job, known);
  await writeStatus(ctx, mt, events, observation);
  return TERMINAL.has(observation.phase) ? {} : { requeueAfterMs: ctx.progressPollMs ?? 30_000 };
}

/**
 * Why the run's output cannot take this spec's run, or undefined: the output's progress report
 * names another configuration's digest (only what changes a run's numbers counts: more
 * `meta.steps`, other workers or resources resume fine).
 */
function otherRunAt(run: ResolvedRun, report: TrainerProgress | undefined): string | undefined {
  const theirs = report?.configDigest;
  if (!theirs) return undefined;
  const ours = configDigest(run.config);
  if (theirs === ours) return undefined;
  return `${run.output} holds a run of another training configuration (config digest ` +
    `${theirs.slice(0, 12)}…, this spec ${ours.slice(0, 12)}…; data, model sizes, optimiser or ` +
    `seed differ) at step ${report!.step}: its checkpoints cannot be resumed under this spec. ` +
    `Set a new spec.training.output, or delete the old run's files under that prefix.`;
}

function jobCondition(job: V1Job, type: string) {
  return job.status?.conditions?.find((c) => c.type === type && c.status === "True");
}

function jobFinished(job: V1Job): boolean {
  return Boolean(jobCondition(job, "Complete") || jobCondition(job, "Failed"));
}

function iso(t: Date | string | undefined): string | undefined {
  if (t === undefined) return undefined;
  return typeof t === "string" ? t : t.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Running and Suspended, both false, once the Job has finished (either way). */
function jobFinishedConditions(
  message: string,
): Omit<Condition, "lastTransitionTime" | "observedGeneration">[] {
  return [
    { type: "Running", status: "False", reason: "JobFinished", message },
    { type: "Suspended", status: "False", reason: "JobFinished", message },
  ];
}

/**
 * What the Job, its pods and the trainer's reports say about the run (`known`: the progress
 * report when this pass has already read it).
 */
async function observe(
  ctx: ReconcileContext,
  spec: MetaTrainingSpec,
  run: ResolvedRun,
  job: V1Job,
  known?: { report: TrainerProgress | undefined },
): Promise<Observation> {
  const jobName = job.metadata!.name!;
  const accepted = {
    type: "Accepted" as const,
    status: "True" as const,
    reason: "SpecValid",
    message: `Running as Job ${jobName}, writing to ${run.output}`,
  };
  const report = known ? known.report : await ctx.runs.readProgress(run.output);
  const progress = report
    ? {
      step: report.step,
      totalSteps: report.totalSteps,
      steps: `${report.step}/${report.totalSteps}`,
      ...(report.metaLoss !== null ? { metaLoss: report.metaLoss } : {}),
      trainerPhase: report.phase,
      updatedAt: report.updatedAt,
    }
    : undefined;
  const details = {
    jobName,
    output: run.output,
    ...(progress ? { progress } : {}),
    ...(job.status?.startTime ? { startTime: iso(job.status.startTime) } : {}),
  };

  const complete = jobCondition(job, "Complete");
  if (complete) {
    const artifacts = await ctx.runs.readArtifacts(run.output);
    const completionTime = iso(job.status?.completionTime ?? complete.lastTransitionTime);
    if (!artifacts) {
      const message =
        `The trainer exited successfully but ${run.output}/artifacts.json is missing; nothing was exported`;
      return {
        phase: "Failed",
        conditions: [
          accepted,
          ...jobFinishedConditions("Job completed"),
          { type: "Succeeded", status: "False", reason: "ArtifactsMissing", message },
          { type: "Failed", status: "True", reason: "ArtifactsMissing", message },
        ],
        details: { ...details, completionTime },
        transitionEvent: { type: "Warning", reason: "ArtifactsMissing", message },
      };
    }
    const message = `Exported the rater to ${artifacts.onnx} (sha256 ${
      artifacts.sha256.slice(0, 12)
    }…)`;
    return {
      phase: "Succeeded",
      conditions: [
        accepted,
        ...jobFinishedConditions("Job completed"),
        { type: "Succeeded", status: "True", reason: "Exported", message },
        { type: "Failed", status: "False", reason: "Exported", message: "" },
      ],
      details: { ...details, artifacts, completionTime },
      transitionEvent: { type: "Normal", reason: "Succeeded", message },
    };
  }

  const failed = jobCondition(job, "Failed");
  if (failed) {
    const trainerReason = await trainerFailureMessage(ctx, job);
    const reason = failed.reason || "JobFailed";
    const message = trainerReason
      ? `${trainerReason} (Job ${jobName}: ${failed.message || reason})`
      : `Job ${jobName} failed: ${failed.message || reason}`;
    return {
      phase: "Failed",
      conditions: [
        accepted,
        ...jobFinishedConditions("Job failed"),
        { type: "Succeeded", status: "False", reason, message: "Job failed" },
        { type: "Failed", status: "True", reason, message },
      ],
      details: { ...details, completionTime: iso(failed.lastTransitionTime) },
      transitionEvent: { type: "Warning", reason, message },
    };
  }

  const notFinished = [
    { type: "Succeeded" as const, status: "False" as const, reason: "NotFinished", message: "" },
    { type: "Failed" as const, status: "False" as const, reason: "NotFinished", message: "" },
  ];
  if (job.spec?.suspend) {
    // A suspended Job is waiting (for the user or for Kueue's admission), not failing.
    const byUser = spec.suspend;
    const reason = byUser ? "Suspended" : "QueuedForAdmission";
    const message = byUser
      ? "spec.suspend is true; the trainer resumes from its last checkpoint when it is unset"
      : `Waiting for Kueue to admit Job ${jobName} from LocalQueue ${spec.queueName}`;
    return {
      phase: byUser ? "Suspended" : "Queued",
      conditions: [
        accepted,
        { type: "Running", status: "False", reason, message },
        { type: "Suspended", status: "True", reason, message },
        ...notFinished,
      ],
      details,
      transitionEvent: { type: "Normal", reason: byUser ? "Suspended" : "Queued", message },
    };
  }
  const notSuspended = {
    type: "Suspended" as const,
    status: "False" as const,
    reason: "NotSuspended",
    message: "",
  };
  if ((job.status?.active ?? 0) > 0) {
    const message = progress
      ? `Meta-step ${progress.steps}${
        progress.metaLoss !== undefined ? `, meta-loss ${progress.metaLoss}` : ""
      }`
      : "The trainer is running";
    return {
      phase: "Running",
      conditions: [
        accepted,
        { type: "Running", status: "True", reason: "TrainerRunning", message },
        notSuspended,
        ...notFinished,
      ],
      details,
      transitionEvent: {
        type: "Normal",
        reason: "Running",
        message: `The trainer of Job ${jobName} is running`,
      },
    };
  }
  return {
    phase: "Pending",
    conditions: [
      accepted,
      {
        type: "Running",
        status: "False",
        reason: "Starting",
        message: `Waiting for a pod of Job ${jobName} to start`,
      },
      notSuspended,
      ...notFinished,
    ],
    details,
    transitionEvent: { type: "Normal", reason: "Pending", message: `Job ${jobName} is starting` },
  };
}

/**
 * The trainer's own failure reason: the termination message (from /dev/termination-log, or the log
 * tail) of the most recently terminated trainer container among the Job's pods.
 */
async function trainerFailureMessage(
  ctx: ReconcileContext,
  job: V1Job,
): Promise<string | undefined> {
  let pods: V1Pod[];
  try {
    pods = await ctx.client.listPods(
      job.metadata!.namespace!,
      `batch.kubernetes.io/job-name=${job.metadata!.name}`,
    );
  } catch (err) {
    ctx.log?.(`cannot list pods of Job ${job.metadata!.name}: ${messageOf(err)}`);
    return undefined;
  }
  let best: { at: number; message: string } | undefined;
  for (const pod of pods) {
    for (const cs of pod.status?.containerStatuses ?? []) {
      const terminated = cs.state?.terminated ?? cs.lastState?.terminated;
      if (cs.name !== TRAINER_CONTAINER || !terminated || terminated.exitCode === 0) continue;
      const at = new Date(terminated.finishedAt ?? 0).getTime();
      const message = (terminated.message ?? "").trim() ||
        `exit code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ""}`;
      if (!best || at >= best.at) best = { at, message };
    }
  }
  return best?.message;
}

function keepTerminal(prior: MetaTrainingStatus): Observation {
  return {
    phase: prior.phase!,
    conditions: (prior.conditions ?? []).map(({ type, status, reason, message }) => ({
      type,
      status,
      reason,
      message,
    })),
    details: {
      jobName: prior.jobName,
      output: prior.output,
      progress: prior.progress,
      artifacts: prior.artifacts,
      startTime: prior.startTime,
      completionTime: prior.completionTime,
    },
  };
}

const CONDITION_ORDER: ConditionType[] = [
  "Accepted",
  "Running",
  "Suspended",
  "Succeeded",
  "Failed",
];

/** The status to write: conditions keep their transition time unless their status changed. */
export function nextStatus(
  current: MetaTrainingStatus | undefined,
  observation: Observation,
  generation: number,
  now: Date,
): MetaTrainingStatus {
  const stamp = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const conditions: Condition[] = CONDITION_ORDER.flatMap((type) => {
    const seen = observation.conditions.find((c) => c.type === type);
    if (!seen) return [];
    const before = current?.conditions?.find((c) => c.type === type);
    return [{
      type,
      status: seen.status,
      observedGeneration: generation,
      lastTransitionTime: before && before.status === seen.status
        ? before.lastTransitionTime
        : stamp,
      // metav1.Condition requires a non-empty reason.
      reason: seen.reason,
      message: seen.message,
    }];
  });
  const status: MetaTrainingStatus = {
    phase: observation.phase,
    observedGeneration: generation,
    conditions,
  };
  for (const [k, v] of Object.entries(observation.details)) {
    if (v !== undefined) (status as Record<string, unknown>)[k] = v;
  }
  return status;
}

/**
 * Writes status with optimistic concurrency: on 409 Conflict it reads the latest object and
 * re-applies the observation, unless the spec moved on (then the newer generation's pass will
 * write). Events go out after the write, and only for real transitions.
 */
async function writeStatus(
  ctx: ReconcileContext,
  mt: MetaTraining,
  events: PendingEvent[],
  observation: Observation,
): Promise<void> {
  const generation = mt.metadata.generation ?? 0;
  const now = ctx.now?.() ?? new Date();
  let current = mt;
  for (let attempt = 1;; attempt++) {
    const status = nextStatus(current.status, observation, generation, now);
    const transition = current.status?.phase !== status.phase;
    if (canonicalJson(current.status ?? {}) === canonicalJson(status)) break;
    try {
      await ctx.client.replaceMetaTrainingStatus({ ...current, status });
      if (transition && observation.transitionEvent) events.push(observation.transitionEvent);
      break;
    } catch (err) {
      if (!(err instanceof ConflictError) || attempt >= STATUS_WRITE_ATTEMPTS) throw err;
      ctx.log?.(`status of ${mt.metadata.namespace}/${mt.metadata.name}: ${err.message}; retrying`);
      const latest = await ctx.client.getMetaTraining(mt.metadata.namespace, mt.metadata.name, {
        fresh: true,
      });
      if (!latest || (latest.metadata.generation ?? 0) !== generation) break;
      current = latest;
    }
  }
  await Promise.all(events.map((event) => emitEvent(ctx, mt, event, now)));
}

let eventCounter = 0;

/** Records a core/v1 Event on the MetaTraining (best effort: a lost Event must not fail a pass). */
async function emitEvent(
  ctx: ReconcileContext,
  mt: MetaTraining,
  event: PendingEvent,
  now: Date,
): Promise<void> {
  const stamp = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const body: CoreV1Event = {
    metadata: {
      name: `${mt.metadata.name}.${now.getTime().toString(16)}${(eventCounter++).toString(16)}`,
      namespace: mt.metadata.namespace,
    },
    involvedObject: {
      apiVersion: API_VERSION,
      kind: KIND,
      name: mt.metadata.name,
      namespace: mt.metadata.namespace,
      uid: mt.metadata.uid,
      resourceVersion: mt.metadata.resourceVersion,
    },
    type: event.type,
    reason: event.reason,
    message: event.message.slice(0, 1024),
    source: { component: "datarater-operator" },
    reportingComponent: "datarater.dev/operator",
    reportingInstance: ctx.identity ?? "datarater-operator",
    firstTimestamp: stamp as unknown as Date,
    lastTimestamp: stamp as unknown as Date,
    count: 1,
  };
  try {
    await ctx.client.createEvent(body);
  } catch (err) {
    ctx.log?.(`cannot record Event ${event.reason} on ${mt.metadata.name}: ${messageOf(err)}`);
  }
}
