/**
 * Benchmark: the operator's reconcile throughput and latency. 500 MetaTrainings are applied (16 at a
 * time) to the in-process fake API server while the real controller (informers, work queue, 4
 * workers, Lease leader election, the real client library over HTTP, progress read through
 * lib/storage.ts) reconciles them. Reports the time from each MetaTraining's create request to its
 * Job's create request (p50/p99), and the operator's API requests per reconcile (watches and Lease
 * renewals excluded).
 *
 * Run: `deno run -A scripts/bench/operator-reconcile.ts [--count 500]`
 */
import { parseArgs } from "node:util";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { MetaTrainingController } from "../../cluster/controller.ts";
import { OWNER_LABEL } from "../../cluster/metatraining.ts";
import { FileStorage } from "../../lib/storage.ts";
import {
  builtinResources,
  FakeApiServer,
  metaTrainingResource,
} from "../../test/support/fake-apiserver.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string", default: "500" },
    concurrency: { type: "string", default: "16" },
  },
});
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const namespace = "bench";

const api = await FakeApiServer.start({
  resources: [...builtinResources(), metaTrainingResource()],
  historyLimit: 100_000,
});
const outputDir = await Deno.makeTempDir({ prefix: "operator-bench-" });

const createdAt = new Map<string, number>();
const jobCreatedAt = new Map<string, number>();
api.intercept((req) => {
  if (req.method !== "POST") return;
  if (req.resource === "metatrainings") createdAt.set(req.body.metadata.name, performance.now());
  if (req.resource === "jobs") {
    const owner = req.body.metadata.labels[OWNER_LABEL];
    if (!jobCreatedAt.has(owner)) jobCreatedAt.set(owner, performance.now());
  }
});

const controller = new MetaTrainingController({
  kubeConfig: api.kubeConfig("operator"),
  settings: { trainerImage: "registry.example/datarater-trainer:bench" },
  // Outputs are local folders (below): reports are read from files, as the operator would.
  storage: new FileStorage(),
  workers: 4,
  leaderElection: { namespace: "datarater-system", identity: "bench", retryPeriodMs: 500 },
});
controller.start();
while (!controller.isActive) await new Promise((r) => setTimeout(r, 5));

const custom = api.kubeConfig("kubectl").makeApiClient(CustomObjectsApi);
const firstRequest = api.requests.length;
const reconcilesBefore = controller.reconciles;
const t0 = performance.now();
let next = 0;
async function applier() {
  while (next < count) {
    const i = next++;
    const name = `run-${String(i).padStart(4, "0")}`;
    await custom.createNamespacedCustomObject({
      group: "datarater.dev",
      version: "v1alpha1",
      plural: "metatrainings",
      namespace,
      body: {
        apiVersion: "datarater.dev/v1alpha1",
        kind: "MetaTraining",
        metadata: { name, namespace },
        spec: {
          training: {
            data: { train: "s3://corpus/train/", heldout: "s3://corpus/heldout/" },
            output: `file://${outputDir}/${name}`,
            meta: { steps: 1000, population: 8 },
          },
          resources: { gpus: 1 },
          s3CredentialsSecret: { name: "s3-creds" },
        },
      },
    });
  }
}
await Promise.all(Array.from({ length: concurrency }, applier));

// Steady state: every MetaTraining has its Job and a status naming it.
const deadline = performance.now() + 120_000;
while (performance.now() < deadline) {
  const done = api.list("metatrainings", namespace).filter((m) => m.status?.jobName).length;
  if (done === count && jobCreatedAt.size === count) break;
  await new Promise((r) => setTimeout(r, 20));
}
const wallMs = performance.now() - t0;
// Let the echoes of the last status writes (watch events → reconciles) settle.
await new Promise((r) => setTimeout(r, 300));
await controller.stop();
const operatorRequests = api.requests.slice(firstRequest).filter((r) =>
  r.user === "operator" && !r.watch && !r.path.includes("/leases")
);
const reconciles = controller.reconciles - reconcilesBefore;
await api.close();
await Deno.remove(outputDir, { recursive: true });

if (jobCreatedAt.size !== count) {
  console.error(`only ${jobCreatedAt.size} of ${count} MetaTrainings got a Job within 120 s`);
  Deno.exit(1);
}
const latencies = [...createdAt].map(([name, t]) => jobCreatedAt.get(name)! - t).sort((a, b) =>
  a - b
);
const quantile = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const jobPosts = operatorRequests.filter((r) => r.method === "POST" && r.path.endsWith("/jobs"));
console.log(JSON.stringify({
  bench: "operator-reconcile",
  metaTrainings: count,
  p50Ms: round(quantile(0.5)),
  p99Ms: round(quantile(0.99)),
  requestsPerReconcile: round(operatorRequests.length / reconciles, 2),
  requestsPerMetaTraining: round(operatorRequests.length / count, 2),
  reconciles,
  reconcilesPerSecond: round(reconciles / (wallMs / 1000)),
  jobsCreated: jobPosts.filter((r) => r.status === 201).length,
  wallMs: Math.round(wallMs),
}));
