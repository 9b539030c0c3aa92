/**
 * Test helpers for the operator: the fake API server with the MetaTraining resource, sample
 * resources, and stand-ins for the parts of a cluster the operator does not own (the Job
 * controller and kubelet moving a Job through its states).
 */
import {
  builtinResources,
  FakeApiServer,
  type KubeObject,
  metaTrainingResource,
} from "../support/fake-apiserver.ts";
import type { MetaTraining, MetaTrainingSpecInput } from "../../cluster/metatraining.ts";
import { joinUri, RUN_LAYOUT } from "../../lib/config.ts";
import type { Storage } from "../../lib/storage.ts";

export const NS = "team-a";

/** A fake API server serving the built-ins and MetaTrainings. */
export function startFakeApiServer(
  options: { historyLimit?: number; bookmarkIntervalMs?: number } = {},
): Promise<FakeApiServer> {
  return FakeApiServer.start({
    resources: [...builtinResources(), metaTrainingResource()],
    bookmarkIntervalMs: options.bookmarkIntervalMs ?? 200,
    historyLimit: options.historyLimit,
  });
}

/** A valid MetaTraining manifest; `spec.training` fields given replace the sample's. */
export function sampleMetaTraining(
  name: string,
  spec: Partial<MetaTrainingSpecInput> = {},
): MetaTraining {
  const { training, ...rest } = spec;
  return {
    apiVersion: "datarater.dev/v1alpha1",
    kind: "MetaTraining",
    metadata: { name, namespace: NS },
    spec: {
      training: {
        data: { train: "s3://corpus/train/", heldout: "s3://corpus/heldout/" },
        output: `s3://runs/${name}`,
        meta: { steps: 100, population: 2 },
        ...(training ?? {}),
      },
      s3CredentialsSecret: { name: "s3-creds" },
      ...rest,
    },
  };
}

/** Jobs in the namespace (optionally of one MetaTraining). */
export function jobsOf(api: FakeApiServer, owner?: string): KubeObject[] {
  return api.list("jobs", NS).filter((j) =>
    !owner || j.metadata.labels?.["datarater.dev/metatraining"] === owner
  );
}

function stamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The Job controller starts a pod and the kubelet runs it. */
export function markJobRunning(api: FakeApiServer, jobName: string): void {
  const job = api.get("jobs", NS, jobName)!;
  job.status = { ...(job.status ?? {}), active: 1, ready: 1, startTime: stamp() };
  api.updateStatus("jobs", job);
}

/** The trainer exited 0: the Job completes. */
export function markJobSucceeded(api: FakeApiServer, jobName: string): void {
  const job = api.get("jobs", NS, jobName)!;
  const now = stamp();
  job.status = {
    ...(job.status ?? {}),
    active: 0,
    ready: 0,
    succeeded: 1,
    completionTime: now,
    conditions: [
      { type: "SuccessCriteriaMet", status: "True", lastTransitionTime: now },
      { type: "Complete", status: "True", lastTransitionTime: now },
    ],
  };
  api.updateStatus("jobs", job);
}

/**
 * The trainer failed `backoffLimit + 1` times, the last with `message` in its termination log:
 * its pod carries the message and the Job fails with BackoffLimitExceeded.
 */
export function markJobFailed(api: FakeApiServer, jobName: string, message: string): void {
  const job = api.get("jobs", NS, jobName)!;
  const pod = api.create("pods", {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `${jobName}-x7k2p`,
      namespace: NS,
      labels: { "batch.kubernetes.io/job-name": jobName, "job-name": jobName },
      ownerReferences: [{
        apiVersion: "batch/v1",
        kind: "Job",
        name: jobName,
        uid: job.metadata.uid!,
        controller: true,
      }],
    },
    spec: job.spec.template.spec,
  });
  const now = stamp();
  pod.status = {
    phase: "Failed",
    containerStatuses: [{
      name: "trainer",
      ready: false,
      restartCount: 0,
      image: "trainer",
      imageID: "",
      state: { terminated: { exitCode: 1, reason: "Error", message, finishedAt: now } },
    }],
  };
  api.updateStatus("pods", pod);
  job.status = {
    ...(job.status ?? {}),
    active: 0,
    failed: 4,
    conditions: [
      {
        type: "FailureTarget",
        status: "True",
        reason: "BackoffLimitExceeded",
        message: "Job has reached the specified backoff limit",
        lastTransitionTime: now,
      },
      {
        type: "Failed",
        status: "True",
        reason: "BackoffLimitExceeded",
        message: "Job has reached the specified backoff limit",
        lastTransitionTime: now,
      },
    ],
  };
  api.updateStatus("jobs", job);
}

/** Polls until `check` returns a truthy value (or throws its last error after `timeoutMs`). */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${lastError}` : ""}`);
}

/** Requests that changed something (not reads, not watches). */
export function writesBy(api: FakeApiServer, user: string, since = 0) {
  return api.requests.slice(since).filter((r) => r.user === user && r.method !== "GET");
}

/**
 * Writes a trainer report where the trainer would (`<output>/progress.json` or `artifacts.json`),
 * so the operator reads it through its storage as it does in a cluster.
 */
export async function writeRunReport(
  storage: Storage,
  kind: "progress" | "artifacts",
  output: string,
  report: unknown,
): Promise<void> {
  await storage.write(joinUri(output, RUN_LAYOUT[kind]), JSON.stringify(report));
}
