/**
 * `deno task operator`: runs the MetaTraining operator against the current kubeconfig (in a pod:
 * its ServiceAccount), with Lease leader election unless `--no-leader-election`.
 *
 * @example
 * ```sh
 * deno task operator --trainer-image ghcr.io/example/datarater-trainer:0.1.0 --output-prefix s3://runs
 * ```
 */
import { parseArgs } from "node:util";
import { hostname } from "node:os";
import { KubeConfig } from "@kubernetes/client-node";
import { storageFromEnv } from "../lib/storage.ts";
import { MetaTrainingController } from "./controller.ts";

const USAGE = `Usage: deno task operator [options]

Runs the MetaTraining operator against the current kubeconfig (in a pod: its ServiceAccount).

Options (environment variable in brackets):
  --trainer-image IMAGE     image for MetaTrainings without spec.image [DATARATER_TRAINER_IMAGE] (required)
  --output-prefix URI       default output: <URI>/<namespace>/<name> [DATARATER_OUTPUT_PREFIX]
  --trainer-service-account NAME  ServiceAccount of trainer pods, e.g. for workload identity
  --namespace NS            watch one namespace (default: all) [WATCH_NAMESPACE]
  --workers N               concurrent reconciles (default 4)
  --progress-poll SECONDS   how often running trainings' progress is read (default 30)
  --resync SECONDS          full resync interval (default 300)
  --lease-namespace NS      namespace of the leader-election Lease [POD_NAMESPACE] (default datarater-system)
  --identity NAME           this replica's identity [POD_NAME] (default: hostname)
  --no-leader-election      act without a Lease (only ever run one replica then)
  -h, --help                this help
`;

/** Parses flags and environment into controller options; throws with the usage on bad input. */
export function parseOperatorArgs(argv: string[], env: (name: string) => string | undefined) {
  const { values } = parseArgs({
    args: argv,
    options: {
      "trainer-image": { type: "string" },
      "output-prefix": { type: "string" },
      "trainer-service-account": { type: "string" },
      namespace: { type: "string" },
      workers: { type: "string" },
      "progress-poll": { type: "string" },
      resync: { type: "string" },
      "lease-namespace": { type: "string" },
      identity: { type: "string" },
      "no-leader-election": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return { help: true as const };
  const trainerImage = values["trainer-image"] ?? env("DATARATER_TRAINER_IMAGE");
  if (!trainerImage) {
    throw new Error("--trainer-image (or DATARATER_TRAINER_IMAGE) is required\n\n" + USAGE);
  }
  const positive = (name: string, raw: string | undefined, fallback: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) {
      throw new Error(`--${name} must be a positive number, got ${raw}`);
    }
    return n;
  };
  return {
    help: false as const,
    trainerImage,
    outputPrefix: values["output-prefix"] ?? env("DATARATER_OUTPUT_PREFIX"),
    trainerServiceAccount: values["trainer-service-account"],
    namespace: values.namespace ?? env("WATCH_NAMESPACE"),
    workers: positive("workers", values.workers, 4),
    progressPollMs: positive("progress-poll", values["progress-poll"], 30) * 1000,
    resyncMs: positive("resync", values.resync, 300) * 1000,
    leaderElection: values["no-leader-election"] ? undefined : {
      namespace: values["lease-namespace"] ?? env("POD_NAMESPACE") ?? "datarater-system",
      identity: values.identity ?? env("POD_NAME") ?? hostname(),
    },
  };
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseOperatorArgs(Deno.args, (name) => Deno.env.get(name));
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    console.error(
      "no current cluster in the kubeconfig (KUBECONFIG, ~/.kube/config, or in-cluster)",
    );
    return 2;
  }
  const log = (message: string) => console.log(`${new Date().toISOString()} ${message}`);
  const controller = new MetaTrainingController({
    kubeConfig: kc,
    storage: storageFromEnv(Deno.env.toObject()),
    settings: {
      trainerImage: args.trainerImage,
      outputPrefix: args.outputPrefix,
      trainerServiceAccount: args.trainerServiceAccount,
    },
    namespace: args.namespace,
    workers: args.workers,
    progressPollMs: args.progressPollMs,
    resyncMs: args.resyncMs,
    leaderElection: args.leaderElection,
    log,
  });
  log(
    `datarater operator against ${cluster.server}, ${
      args.namespace ? `namespace ${args.namespace}` : "all namespaces"
    }, ${args.leaderElection ? `identity ${args.leaderElection.identity}` : "no leader election"}`,
  );
  controller.start();
  const stopped = new Promise<void>((resolve) => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(signal, () => {
        log(`${signal}: releasing the lease and stopping`);
        resolve();
      });
    }
  });
  await stopped;
  await controller.stop();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
