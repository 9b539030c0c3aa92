/**
 * reconcileMetaTraining called directly, through the real client library, against the fake API
 * server: the level-triggered behaviour of one pass, transition by transition.
 */
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { ApiException, CustomObjectsApi } from "@kubernetes/client-node";
import { KubeOperatorClient, messageOf } from "../../cluster/client.ts";
import type { FakeApiServer } from "../support/fake-apiserver.ts";
import { type MetaTraining, parseMetaTrainingSpec } from "../../cluster/metatraining.ts";
import { resolveRun } from "../../cluster/children.ts";
import { configDigest } from "../../lib/config.ts";
import { type ReconcileContext, reconcileMetaTraining } from "../../cluster/reconcile.ts";
import { RunReader } from "../../cluster/runs.ts";
import { MemoryStorage } from "../../lib/storage.ts";
import {
  jobsOf,
  markJobFailed,
  markJobRunning,
  markJobSucceeded,
  NS,
  sampleMetaTraining,
  startFakeApiServer,
  waitFor,
  writeRunReport,
  writesBy,
} from "./helpers.ts";

const SHA = "a".repeat(64);

let api: FakeApiServer;
let runStore: MemoryStorage;
let ctx: ReconcileContext;

beforeEach(async () => {
  api = await startFakeApiServer();
  runStore = new MemoryStorage();
  ctx = {
    client: new KubeOperatorClient(api.kubeConfig("operator")),
    runs: new RunReader(runStore),
    settings: { trainerImage: "registry.example/datarater-trainer:test" },
  };
});

afterEach(async () => {
  await api.close();
});

function mt(name: string): MetaTraining {
  return api.get("metatrainings", NS, name) as MetaTraining;
}

function condition(name: string, type: string) {
  return mt(name).status?.conditions?.find((c) => c.type === type);
}

/** Sets the MetaTraining's `spec.suspend` as a user would, then runs one reconcile pass. */
async function setSuspend(name: string, suspend: boolean) {
  const obj = mt(name);
  obj.spec.suspend = suspend;
  api.update("metatrainings", obj);
  await reconcileMetaTraining(ctx, `${NS}/${name}`);
}

/** Each child Job's name and whether it is suspended. */
function jobSuspension(name: string) {
  return jobsOf(api, name).map((j) => [j.metadata.name, j.spec.suspend]);
}

function eventReasons(name: string): string[] {
  return api.list("events", NS)
    .filter((e) => e.involvedObject?.name === name)
    .map((e) => e.reason)
    .sort(); // Events of one pass are sent concurrently
}

describe("reconcileMetaTraining", () => {
  test("apply creates exactly one Job and its ConfigMap, owned by the MetaTraining, and reports Accepted/Pending", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    const result = await reconcileMetaTraining(ctx, `${NS}/run-a`);
    await reconcileMetaTraining(ctx, `${NS}/run-a`);

    const jobs = jobsOf(api, "run-a");
    expect(jobs).toHaveLength(1);
    const job = jobs[0];
    const owner = mt("run-a");
    expect(job.metadata.ownerReferences).toEqual([expect.objectContaining({
      kind: "MetaTraining",
      name: "run-a",
      uid: owner.metadata.uid,
      controller: true,
    })]);
    const cms = api.list("configmaps", NS);
    expect(cms).toHaveLength(1);
    expect(cms[0].metadata.ownerReferences?.[0].uid).toBe(owner.metadata.uid);
    const config = JSON.parse(cms[0].data["config.json"]);
    expect(config.output).toBe("s3://runs/run-a");
    expect(config.meta.population).toBe(2);
    expect(config.meta.unroll).toBe(2); // default filled by the operator
    expect(config.backend).toBe("wasm");

    const pod = job.spec.template.spec;
    expect(job.spec.suspend).toBe(false);
    expect(pod.containers[0].command).toEqual([
      "deno",
      "task",
      "train",
      "--config",
      "/etc/datarater/config.json",
    ]);
    expect(pod.containers[0].terminationMessagePolicy).toBe("FallbackToLogsOnError");
    expect(pod.volumes[0].configMap.name).toBe(cms[0].metadata.name);
    expect(pod.containers[0].env).toContainEqual({
      name: "AWS_ACCESS_KEY_ID",
      valueFrom: { secretKeyRef: { name: "s3-creds", key: "AWS_ACCESS_KEY_ID" } },
    });
    expect(pod.containers[0].resources.limits["nvidia.com/gpu"]).toBeUndefined();

    const status = owner.status!;
    expect(status.phase).toBe("Pending");
    expect(status.observedGeneration).toBe(1);
    expect(status.jobName).toBe(job.metadata.name);
    expect(condition("run-a", "Accepted")).toMatchObject({ status: "True", reason: "SpecValid" });
    expect(condition("run-a", "Running")).toMatchObject({ status: "False", reason: "Starting" });
    expect(result.requeueAfterMs).toBe(30_000);
    expect(eventReasons("run-a")).toEqual(["JobCreated", "Pending"]);
  });

  test("a second pass with nothing changed writes nothing", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const before = api.requests.length;
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(writesBy(api, "operator", before)).toEqual([]);
  });

  test("GPUs request nvidia.com/gpu, select the WebGPU backend and tolerate the GPU taint", async () => {
    api.create(
      "metatrainings",
      sampleMetaTraining("gpu", {
        resources: { gpus: 2, cpu: 8, memory: "32Gi" },
        nodeSelector: { "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3" },
        s3Endpoint: "http://minio.storage:9000",
      }),
    );
    await reconcileMetaTraining(ctx, `${NS}/gpu`);
    const job = jobsOf(api, "gpu")[0];
    const pod = job.spec.template.spec;
    expect(pod.containers[0].resources).toEqual({
      requests: { cpu: "8", memory: "32Gi" },
      limits: { memory: "32Gi", "nvidia.com/gpu": "2" },
    });
    expect(pod.nodeSelector).toEqual({ "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3" });
    expect(pod.tolerations).toContainEqual({
      key: "nvidia.com/gpu",
      operator: "Exists",
      effect: "NoSchedule",
    });
    expect(pod.containers[0].env).toContainEqual({
      name: "S3_ENDPOINT",
      value: "http://minio.storage:9000",
    });
    const config = JSON.parse(api.list("configmaps", NS)[0].data["config.json"]);
    expect(config.backend).toBe("webgpu");
  });

  test("Running with progress from storage, then Succeeded with the artifacts", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const jobName = jobsOf(api, "run-a")[0].metadata.name!;

    markJobRunning(api, jobName);
    await writeRunReport(runStore, "progress", "s3://runs/run-a", {
      step: 40,
      totalSteps: 100,
      metaLoss: 3.25,
      updatedAt: "2025-01-01T00:00:00Z",
      phase: "training",
    });
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(mt("run-a").status).toMatchObject({
      phase: "Running",
      progress: { step: 40, totalSteps: 100, steps: "40/100", metaLoss: 3.25 },
    });
    expect(condition("run-a", "Running")).toMatchObject({
      status: "True",
      reason: "TrainerRunning",
      message: "Meta-step 40/100, meta-loss 3.25",
    });

    markJobSucceeded(api, jobName);
    await writeRunReport(runStore, "artifacts", "s3://runs/run-a", {
      onnx: "s3://runs/run-a/rater.onnx",
      sha256: SHA,
      calibration: { samples: 1000, quantiles: [-1, 0, 1] },
      finishedAt: "2025-01-01T01:00:00Z",
    });
    const result = await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const status = mt("run-a").status!;
    expect(status.phase).toBe("Succeeded");
    expect(status.artifacts).toEqual({
      onnx: "s3://runs/run-a/rater.onnx",
      sha256: SHA,
      calibration: { samples: 1000, quantiles: [-1, 0, 1] },
      finishedAt: "2025-01-01T01:00:00Z",
    });
    expect(status.completionTime).toBeDefined();
    expect(condition("run-a", "Succeeded")).toMatchObject({ status: "True", reason: "Exported" });
    expect(condition("run-a", "Running")).toMatchObject({ status: "False" });
    expect(result.requeueAfterMs).toBeUndefined();
    expect(eventReasons("run-a")).toEqual(["JobCreated", "Pending", "Running", "Succeeded"].sort());
  });

  test("a failed Job makes the MetaTraining Failed with the trainer's termination message", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const jobName = jobsOf(api, "run-a")[0].metadata.name!;
    markJobFailed(api, jobName, "cannot read s3://corpus/train/: NoSuchBucket");

    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(mt("run-a").status!.phase).toBe("Failed");
    const failed = condition("run-a", "Failed")!;
    expect(failed.status).toBe("True");
    expect(failed.reason).toBe("BackoffLimitExceeded");
    expect(failed.message).toContain("cannot read s3://corpus/train/: NoSuchBucket");
    const warning = api.list("events", NS).find((e) => e.type === "Warning")!;
    expect(warning.reason).toBe("BackoffLimitExceeded");
    expect(warning.message).toContain("NoSuchBucket");
    // Terminal: no new Job, nothing more to poll.
    expect(await reconcileMetaTraining(ctx, `${NS}/run-a`)).toEqual({});
    expect(jobsOf(api, "run-a")).toHaveLength(1);
  });

  test("a Job that completed without artifacts.json is Failed, not Succeeded", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    markJobSucceeded(api, jobsOf(api, "run-a")[0].metadata.name!);
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(mt("run-a").status!.phase).toBe("Failed");
    expect(condition("run-a", "Failed")).toMatchObject({ reason: "ArtifactsMissing" });
  });

  test("a stale status write (409 Conflict) is retried on a fresh read and succeeds", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    let conflicts = 0;
    // Another writer (say, kubectl label) changes the object between reconcile's read and write.
    api.intercept((req) => {
      if (req.method === "PUT" && req.subresource === "status" && conflicts === 0) {
        conflicts++;
        const current = api.get("metatrainings", NS, "run-a")!;
        current.metadata.labels = { team: "a" };
        api.update("metatrainings", current);
      }
    });
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const statusWrites = api.requests.filter((r) =>
      r.method === "PUT" && r.path.endsWith("/status")
    );
    expect(statusWrites.map((r) => r.status)).toEqual([409, 200]);
    expect(mt("run-a").status!.phase).toBe("Pending");
    expect(mt("run-a").metadata.labels).toEqual({ team: "a" });
    expect(jobsOf(api, "run-a")).toHaveLength(1);
  });

  test("a spec change (new generation) replaces the Job: the old one is deleted, the new one carries the new config", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const first = jobsOf(api, "run-a")[0];

    const changed = mt("run-a");
    changed.spec.training.meta = { steps: 500, population: 4 };
    api.update("metatrainings", changed);
    expect(mt("run-a").metadata.generation).toBe(2);
    await reconcileMetaTraining(ctx, `${NS}/run-a`);

    const jobs = jobsOf(api, "run-a");
    expect(jobs).toHaveLength(1);
    expect(jobs[0].metadata.name).not.toBe(first.metadata.name);
    expect(jobs[0].metadata.annotations["datarater.dev/generation"]).toBe("2");
    const cms = api.list("configmaps", NS);
    expect(cms).toHaveLength(1);
    expect(JSON.parse(cms[0].data["config.json"]).meta).toMatchObject({
      steps: 500,
      population: 4,
    });
    expect(mt("run-a").status).toMatchObject({
      observedGeneration: 2,
      jobName: jobs[0].metadata.name,
    });
    expect(eventReasons("run-a")).toContain("JobDeleted");
  });

  test("an output holding another configuration's run is refused before a Job starts; the same configuration resumes", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    const report = {
      step: 120,
      totalSteps: 400,
      metaLoss: 3.1,
      updatedAt: "2025-01-01T00:00:00Z",
      phase: "training" as const,
    };
    await writeRunReport(runStore, "progress", "s3://runs/run-a", {
      ...report,
      configDigest: "b".repeat(64),
    });
    const refused = await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(jobsOf(api, "run-a")).toHaveLength(0);
    expect(mt("run-a").status?.phase).toBe("Failed");
    expect(condition("run-a", "Accepted")).toMatchObject({
      status: "False",
      reason: "OutputInUse",
    });
    expect(condition("run-a", "Accepted")!.message).toMatch(
      /^s3:\/\/runs\/run-a holds a run of another training configuration .* at step 120: .*Set a new spec\.training\.output/,
    );
    expect(eventReasons("run-a")).toContain("OutputInUse");
    // Looked at again later: deleting the old files is a fix no spec change announces.
    expect(refused.requeueAfterMs).toBeGreaterThan(0);

    // The same configuration (e.g. a preempted run of this spec) resumes: a Job is created.
    const m = mt("run-a");
    const ours = configDigest(resolveRun(m, parseMetaTrainingSpec(m.spec), ctx.settings).config);
    await writeRunReport(runStore, "progress", "s3://runs/run-a", {
      ...report,
      configDigest: ours,
    });
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(jobsOf(api, "run-a")).toHaveLength(1);
    expect(condition("run-a", "Accepted")).toMatchObject({ status: "True" });
  });

  test("a report without a config digest (an older trainer) does not block the run", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await writeRunReport(runStore, "progress", "s3://runs/run-a", {
      step: 1,
      totalSteps: 2,
      metaLoss: null,
      updatedAt: "2025-01-01T00:00:00Z",
      phase: "training",
    });
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(jobsOf(api, "run-a")).toHaveLength(1);
  });

  test("suspend suspends the same Job in place (Suspended, not Failed) and resuming unsuspends it", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const jobName = jobsOf(api, "run-a")[0].metadata.name;
    markJobRunning(api, jobName!);

    await setSuspend("run-a", true);
    expect(jobSuspension("run-a")).toEqual([[jobName, true]]);
    expect(mt("run-a").status!.phase).toBe("Suspended");
    expect(condition("run-a", "Suspended")).toMatchObject({ status: "True", reason: "Suspended" });
    expect(condition("run-a", "Failed")).toMatchObject({ status: "False" });

    await setSuspend("run-a", false);
    expect(jobSuspension("run-a")).toEqual([[jobName, false]]);
    expect(mt("run-a").status!.phase).toBe("Running");
  });

  test("with a Kueue queue the Job is created suspended and labelled, and reported Queued until admitted", async () => {
    api.create("metatrainings", sampleMetaTraining("run-q", { queueName: "gpu-queue" }));
    await reconcileMetaTraining(ctx, `${NS}/run-q`);
    const job = jobsOf(api, "run-q")[0];
    expect(job.spec.suspend).toBe(true);
    expect(job.metadata.labels?.["kueue.x-k8s.io/queue-name"]).toBe("gpu-queue");
    expect(mt("run-q").status!.phase).toBe("Queued");
    expect(condition("run-q", "Suspended")).toMatchObject({ reason: "QueuedForAdmission" });
    expect(condition("run-q", "Failed")!.status).toBe("False");

    // Kueue admits: it unsuspends the Job. The operator must not suspend it again.
    const admitted = api.get("jobs", NS, job.metadata.name!)!;
    admitted.spec.suspend = false;
    api.update("jobs", admitted);
    markJobRunning(api, job.metadata.name!);
    await reconcileMetaTraining(ctx, `${NS}/run-q`);
    expect(api.get("jobs", NS, job.metadata.name!)!.spec.suspend).toBe(false);
    expect(mt("run-q").status!.phase).toBe("Running");
  });

  test("a finished run whose Job was deleted (ttlSecondsAfterFinished) is not trained again", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a", { ttlSecondsAfterFinished: 60 }));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    const jobName = jobsOf(api, "run-a")[0].metadata.name!;
    expect(api.get("jobs", NS, jobName)!.spec.ttlSecondsAfterFinished).toBe(60);
    markJobSucceeded(api, jobName);
    await writeRunReport(runStore, "artifacts", "s3://runs/run-a", {
      onnx: "s3://runs/run-a/rater.onnx",
      sha256: SHA,
      calibration: { samples: 10, quantiles: [0] },
      finishedAt: "2025-01-01T01:00:00Z",
    });
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    api.remove("jobs", NS, jobName);
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(jobsOf(api, "run-a")).toEqual([]);
    expect(mt("run-a").status!.phase).toBe("Succeeded");
  });

  test("deleting the MetaTraining garbage-collects its Job, ConfigMap and the Job's pods", async () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    markJobFailed(api, jobsOf(api, "run-a")[0].metadata.name!, "boom"); // leaves a pod behind
    expect(api.list("pods", NS)).toHaveLength(1);

    api.remove("metatrainings", NS, "run-a");
    await waitFor(
      () =>
        api.list("jobs", NS).length + api.list("configmaps", NS).length +
            api.list("pods", NS).length === 0,
      "children to be garbage-collected",
    );
    expect(await reconcileMetaTraining(ctx, `${NS}/run-a`)).toEqual({});
    expect(jobsOf(api)).toEqual([]);
  });

  test("without spec.training.output and without --output-prefix the spec is rejected, naming the field", async () => {
    const noOutput = sampleMetaTraining("run-a");
    delete (noOutput.spec.training as { output?: string }).output;
    api.create("metatrainings", noOutput);
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(jobsOf(api)).toEqual([]);
    expect(mt("run-a").status!.phase).toBe("Failed");
    expect(condition("run-a", "Accepted")).toMatchObject({
      status: "False",
      reason: "InvalidSpec",
    });
    expect(condition("run-a", "Accepted")!.message).toContain("spec.training.output");

    // With a prefix the output defaults to <prefix>/<namespace>/<name>.
    ctx.settings.outputPrefix = "s3://runs/default";
    await reconcileMetaTraining(ctx, `${NS}/run-a`);
    expect(mt("run-a").status!.output).toBe(`s3://runs/default/${NS}/run-a`);
    expect(condition("run-a", "Accepted")).toMatchObject({ status: "True" });
  });
});

describe("the API server's validation of MetaTraining specs", () => {
  async function createViaApi(body: unknown): Promise<string> {
    const custom = api.kubeConfig("user").makeApiClient(CustomObjectsApi);
    try {
      await custom.createNamespacedCustomObject({
        group: "datarater.dev",
        version: "v1alpha1",
        plural: "metatrainings",
        namespace: NS,
        body,
      });
      return "created";
    } catch (err) {
      expect(err).toBeInstanceOf(ApiException);
      expect((err as ApiException<string>).code).toBe(422);
      return messageOf(err);
    }
  }

  test("an out-of-range population is rejected with a message naming spec.training.meta.population", async () => {
    const bad = sampleMetaTraining("bad", { training: { meta: { population: 0 } } } as never);
    const message = await createViaApi(bad);
    expect(message).toContain('MetaTraining.datarater.dev "bad" is invalid');
    expect(message).toContain("spec.training.meta.population");
  });

  test("a malformed quantity, a bad storage URI and an unknown backend each name their field", async () => {
    expect(await createViaApi(sampleMetaTraining("bad1", { resources: { memory: "lots" } })))
      .toContain("spec.resources.memory");
    expect(
      await createViaApi(
        sampleMetaTraining("bad2", {
          training: { data: { train: "http://x/train", heldout: "s3://b/h" } },
        } as never),
      ),
    ).toContain("spec.training.data.train");
    expect(
      await createViaApi(sampleMetaTraining("bad3", { training: { backend: "tpu" } } as never)),
    ).toContain("spec.training.backend");
    expect(await createViaApi({ ...sampleMetaTraining("bad4"), spec: undefined })).toContain(
      "spec",
    );
    expect(api.list("metatrainings", NS)).toEqual([]);
  });

  test("an update that makes the spec invalid is rejected and the stored object is unchanged", () => {
    api.create("metatrainings", sampleMetaTraining("run-a"));
    const bad = mt("run-a");
    bad.spec.training.rater = { dModel: 30, heads: 4 };
    expect(() => api.update("metatrainings", bad)).toThrow(/spec\.training\.rater\.heads/);
    expect(mt("run-a").metadata.generation).toBe(1);
  });
});
