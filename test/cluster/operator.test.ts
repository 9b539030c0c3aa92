/**
 * The whole controller (informers, work queue, workers, leader election) running against the fake
 * API server through the real client library: restarts, expired watches, failing watches, and two
 * replicas competing for the Lease.
 */
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { type ControllerOptions, MetaTrainingController } from "../../cluster/controller.ts";
import type { FakeApiServer } from "../support/fake-apiserver.ts";
import type { MetaTraining } from "../../cluster/metatraining.ts";
import { MemoryStorage } from "../../lib/storage.ts";
import {
  jobsOf,
  markJobRunning,
  markJobSucceeded,
  NS,
  sampleMetaTraining,
  startFakeApiServer,
  waitFor,
  writeRunReport,
  writesBy,
} from "./helpers.ts";

let api: FakeApiServer;
let runStore: MemoryStorage;
const controllers: MetaTrainingController[] = [];

beforeEach(async () => {
  api = await startFakeApiServer();
  runStore = new MemoryStorage();
});

afterEach(async () => {
  await Promise.all(controllers.splice(0).map((c) => c.stop()));
  await api.close();
});

function controller(
  user: string,
  extra: Partial<ControllerOptions> = {},
): MetaTrainingController {
  const c = new MetaTrainingController({
    kubeConfig: api.kubeConfig(user),
    settings: { trainerImage: "registry.example/datarater-trainer:test" },
    storage: runStore,
    workers: 2,
    progressPollMs: 100,
    watchBackoffMs: { initial: 20, max: 200 },
    ...extra,
  });
  controllers.push(c);
  c.start();
  return c;
}

function withElection(identity: string): Partial<ControllerOptions> {
  return {
    leaderElection: {
      namespace: "datarater-system",
      identity,
      leaseDurationMs: 1_000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
    },
  };
}

async function apply(name: string): Promise<void> {
  const custom = api.kubeConfig("kubectl").makeApiClient(CustomObjectsApi);
  await custom.createNamespacedCustomObject({
    group: "datarater.dev",
    version: "v1alpha1",
    plural: "metatrainings",
    namespace: NS,
    body: sampleMetaTraining(name),
  });
}

function mt(name: string): MetaTraining | undefined {
  return api.get("metatrainings", NS, name) as MetaTraining | undefined;
}

function phaseOf(name: string) {
  return mt(name)?.status?.phase;
}

describe("MetaTrainingController", () => {
  test("apply → exactly one Job, Accepted then Running, then Succeeded with artifacts", async () => {
    controller("operator");
    await apply("run-a");
    const job = await waitFor(() => jobsOf(api, "run-a")[0], "the Job");
    await waitFor(() => phaseOf("run-a") === "Pending", "Pending");
    const accepted = mt("run-a")!.status!.conditions!.find((c) => c.type === "Accepted")!;
    expect(accepted.status).toBe("True");

    markJobRunning(api, job.metadata.name!);
    await waitFor(() => phaseOf("run-a") === "Running", "Running");
    await writeRunReport(runStore, "progress", "s3://runs/run-a", {
      step: 7,
      totalSteps: 100,
      metaLoss: 4.5,
      updatedAt: "2025-01-01T00:00:00Z",
      phase: "training",
    });
    // Progress arrives by polling storage (progressPollMs), without any Kubernetes event.
    await waitFor(() => mt("run-a")!.status!.progress?.steps === "7/100", "progress 7/100");

    await writeRunReport(runStore, "artifacts", "s3://runs/run-a", {
      onnx: "s3://runs/run-a/rater.onnx",
      sha256: "b".repeat(64),
      calibration: { samples: 5, quantiles: [0.5] },
      finishedAt: "2025-01-01T01:00:00Z",
    });
    markJobSucceeded(api, job.metadata.name!);
    await waitFor(() => phaseOf("run-a") === "Succeeded", "Succeeded");
    expect(mt("run-a")!.status!.artifacts!.onnx).toBe("s3://runs/run-a/rater.onnx");
    expect(jobsOf(api, "run-a")).toHaveLength(1);
  });

  test("an operator restarted between creating the Job and writing status creates no duplicate", async () => {
    // The first replica "crashes": its status writes fail, and it is stopped.
    const removeFault = api.intercept((req) =>
      req.user === "operator-1" && req.subresource === "status"
        ? { status: 503, body: { kind: "Status", code: 503, message: "etcd unavailable" } }
        : undefined
    );
    const first = controller("operator-1");
    await apply("run-a");
    await waitFor(() => jobsOf(api, "run-a").length === 1, "the first replica's Job");
    await first.stop();
    removeFault();
    expect(phaseOf("run-a")).toBeUndefined();

    controller("operator-2");
    await waitFor(() => phaseOf("run-a") === "Pending", "status from the restarted operator");
    expect(jobsOf(api, "run-a")).toHaveLength(1);
    expect(writesBy(api, "operator-2").filter((r) => r.path.includes("/jobs"))).toEqual([]);
    expect(mt("run-a")!.status!.jobName).toBe(jobsOf(api, "run-a")[0].metadata.name);
  });

  test("a watch that expires (410 Gone) leads to a relist, and the missed MetaTraining gets exactly one Job", async () => {
    controller("operator");
    await apply("run-a");
    await waitFor(() => phaseOf("run-a") === "Pending", "the first run");
    const listsBefore =
      api.requests.filter((r) =>
        r.path.endsWith("/metatrainings") && r.method === "GET" && !r.watch
      ).length;

    // Disconnect the operator, let history move on without it, and forget that history.
    api.pauseWatches();
    api.closeWatches();
    await apply("run-b");
    api.compact();
    api.resumeWatches();

    await waitFor(() => phaseOf("run-b") === "Pending", "the run created while disconnected");
    const listsAfter =
      api.requests.filter((r) =>
        r.path.endsWith("/metatrainings") && r.method === "GET" && !r.watch
      ).length;
    expect(listsAfter).toBeGreaterThan(listsBefore);
    expect(jobsOf(api, "run-a")).toHaveLength(1);
    expect(jobsOf(api, "run-b")).toHaveLength(1);
  });

  test("watches that fail with server errors are restarted with backoff until they succeed", async () => {
    let failures = 0;
    api.intercept((req) => {
      if (req.watch && req.resource === "metatrainings" && failures < 3) {
        failures++;
        return {
          status: 500,
          body: { kind: "Status", code: 500, message: "watch cache not ready" },
        };
      }
    });
    controller("operator");
    await waitFor(() => failures === 3, "three failed watches");
    await apply("run-a");
    await waitFor(() => jobsOf(api, "run-a").length === 1, "the Job after watches recovered");
    const watchTimes = api.requests
      .filter((r) => r.watch && r.path.endsWith("/metatrainings"))
      .map((r) => r.at);
    // Exponential backoff, 20 ms doubling, ±20% jitter: the waits are at least 16, 32 and 64 ms.
    const gaps = watchTimes.slice(1, 4).map((t, i) => t - watchTimes[i]);
    expect(gaps[0]).toBeGreaterThanOrEqual(15);
    expect(gaps[1]).toBeGreaterThanOrEqual(31);
    expect(gaps[2]).toBeGreaterThanOrEqual(63);
  });

  test("a stale cached MetaTraining makes the status write 409, which is retried until it lands", async () => {
    controller("operator");
    let conflicts = 0;
    api.intercept((req) => {
      if (req.user === "operator" && req.subresource === "status" && conflicts < 2) {
        conflicts++;
        const current = api.get("metatrainings", NS, "run-a")!;
        current.metadata.annotations = { touched: String(conflicts) };
        api.update("metatrainings", current);
      }
    });
    await apply("run-a");
    await waitFor(() => phaseOf("run-a") === "Pending", "status despite conflicts");
    const writes = api.requests.filter((r) => r.user === "operator" && r.path.endsWith("/status"));
    expect(writes.filter((r) => r.status === 409)).toHaveLength(2);
    expect(writes.some((r) => r.status === 200)).toBe(true);
    expect(jobsOf(api, "run-a")).toHaveLength(1);
  });

  test("with two replicas only the Lease holder reconciles", async () => {
    const a = controller("replica-a", withElection("replica-a"));
    await waitFor(() => a.isActive, "replica-a to lead");
    const b = controller("replica-b", withElection("replica-b"));
    await apply("run-a");
    await apply("run-b");
    await waitFor(
      () => phaseOf("run-a") === "Pending" && phaseOf("run-b") === "Pending",
      "both runs",
    );
    // Give the standby a few retry periods in which it could misbehave.
    await new Promise((r) => setTimeout(r, 400));
    expect(b.isActive).toBe(false);
    const lease = api.get("leases", "datarater-system", "datarater-operator")!;
    expect(lease.spec.holderIdentity).toBe("replica-a");
    const standbyWrites = writesBy(api, "replica-b");
    expect(standbyWrites.filter((r) => !r.path.includes("/leases"))).toEqual([]);
    const standbyReads = api.requests.filter((r) => r.user === "replica-b" && r.method === "GET");
    expect(standbyReads.every((r) => r.path.includes("/leases"))).toBe(true);
    expect(writesBy(api, "replica-a").filter((r) => r.path.includes("/jobs"))).toHaveLength(2);
  });

  test("when the leader dies without releasing the Lease, the other replica takes over after it expires", async () => {
    const a = controller("replica-a", withElection("replica-a"));
    await waitFor(() => a.isActive, "replica-a to lead");
    const b = controller("replica-b", withElection("replica-b"));
    await apply("run-a");
    await waitFor(() => phaseOf("run-a") === "Pending", "run-a");

    await a.stop({ release: false }); // a crash: the Lease stays, naming replica-a
    expect(api.get("leases", "datarater-system", "datarater-operator")!.spec.holderIdentity)
      .toBe("replica-a");
    await apply("run-b");
    await waitFor(() => b.isActive, "replica-b to take over", 5_000);
    await waitFor(() => phaseOf("run-b") === "Pending", "run-b reconciled by the new leader");
    const lease = api.get("leases", "datarater-system", "datarater-operator")!;
    expect(lease.spec.holderIdentity).toBe("replica-b");
    expect(lease.spec.leaseTransitions).toBe(1);
    expect(jobsOf(api, "run-a")).toHaveLength(1);
    expect(jobsOf(api, "run-b")).toHaveLength(1);
    expect(writesBy(api, "replica-b").filter((r) => r.path.includes("/jobs"))).toHaveLength(1);
  });

  test("a leader that stops gracefully releases the Lease so the other replica takes over at once", async () => {
    const a = controller("replica-a", withElection("replica-a"));
    await waitFor(() => a.isActive, "replica-a to lead");
    const b = controller("replica-b", withElection("replica-b"));
    await new Promise((r) => setTimeout(r, 200));
    expect(b.isActive).toBe(false);
    await a.stop();
    // Released: the holder is cleared, so the standby need not wait for the lease to expire.
    const released = api.get("leases", "datarater-system", "datarater-operator")!;
    expect(released.spec.holderIdentity ?? "replica-b").toBe("replica-b");
    await waitFor(() => b.isActive, "replica-b to lead");
    const lease = api.get("leases", "datarater-system", "datarater-operator")!;
    expect(lease.spec.holderIdentity).toBe("replica-b");
  });
});
