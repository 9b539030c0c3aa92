/**
 * The MetaTraining controller: informers on MetaTrainings and on the Jobs and ConfigMaps they own,
 * a rate-limited work queue keyed by `namespace/name`, workers that run {@link reconcileMetaTraining},
 * a periodic resync (which is also when trainer progress is polled), and, around all of it, Lease
 * leader election so that of several replicas only the leader acts.
 *
 * @example
 * ```ts
 * const controller = new MetaTrainingController({
 *   kubeConfig: kc,
 *   storage: storageFromEnv(Deno.env.toObject()), // where the trainers write their reports
 *   settings: { trainerImage: "ghcr.io/example/datarater-trainer:0.1.0" },
 *   leaderElection: { namespace: "datarater-system", identity: Deno.hostname() },
 * });
 * controller.start();
 * ```
 */
import {
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1ConfigMap,
  type V1Job,
} from "@kubernetes/client-node";
// Not re-exported by the package index; the same class its typed APIs use to decode responses.
import { ObjectSerializer } from "@kubernetes/client-node/dist/serializer.js";
import { KubeOperatorClient, messageOf, type OperatorClient } from "./client.ts";
import type { OperatorSettings } from "./children.ts";
import { Informer, type InformerOptions, type ObjectWithMeta } from "./informer.ts";
import { LeaderElector } from "./leader.ts";
import {
  GROUP,
  keyOf,
  KIND,
  type MetaTraining,
  OWNER_LABEL,
  PLURAL,
  VERSION,
} from "./metatraining.ts";
import { reconcileMetaTraining, type ReconcileResult } from "./reconcile.ts";
import { RunReader } from "./runs.ts";
import type { Storage } from "../lib/storage.ts";
import { WorkQueue, type WorkQueueOptions } from "./workqueue.ts";

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  settings: OperatorSettings;
  /** Where the trainers write progress and artifacts (S3 or files), read on each resync. */
  storage: Storage;
  /** Watch one namespace; all namespaces when unset. */
  namespace?: string;
  /** Concurrent reconciles. Default 4. */
  workers?: number;
  /** Every MetaTraining is reconciled at least this often. Default 5 min. */
  resyncMs?: number;
  /** An unfinished run is reconciled (its progress read) this often. Default 30 s. */
  progressPollMs?: number;
  /** Omit to act without election (one replica only). */
  leaderElection?: {
    namespace: string;
    identity: string;
    /** Lease name. Default `datarater-operator`. */
    name?: string;
    leaseDurationMs?: number;
    renewDeadlineMs?: number;
    retryPeriodMs?: number;
  };
  queue?: WorkQueueOptions;
  /** Informer retry backoff. */
  watchBackoffMs?: { initial: number; max: number };
  log?: (message: string) => void;
  /** Called after each reconcile (metrics, tests, the benchmark). */
  onReconciled?: (key: string, outcome: ReconcileResult | Error, ms: number) => void;
}

/**
 * Reads from the informer caches, writes to the API server. Reading the cache is what makes a
 * steady-state pass cost no requests at all; it may lag the server, which reconcile tolerates
 * (stable child names turn a duplicate create into AlreadyExists; a stale status write gets 409
 * and is retried on a fresh read).
 */
class CachedOperatorClient extends KubeOperatorClient {
  constructor(
    kc: KubeConfig,
    private readonly metaTrainings: Informer<MetaTraining>,
    private readonly jobs: Informer<V1Job>,
    private readonly configMaps: Informer<V1ConfigMap>,
  ) {
    super(kc);
  }

  override getMetaTraining(
    namespace: string,
    name: string,
    options?: { fresh?: boolean },
  ): Promise<MetaTraining | undefined> {
    if (options?.fresh) return super.getMetaTraining(namespace, name);
    return Promise.resolve(structuredClone(this.metaTrainings.get(namespace, name)));
  }

  override listJobs(namespace: string, labelSelector: string): Promise<V1Job[]> {
    return Promise.resolve(this.jobs.list(inNamespaceWithLabel(namespace, labelSelector)));
  }

  override listConfigMaps(namespace: string, labelSelector: string): Promise<V1ConfigMap[]> {
    return Promise.resolve(this.configMaps.list(inNamespaceWithLabel(namespace, labelSelector)));
  }
}

/** A filter for the `key=value` selectors reconcile uses. */
function inNamespaceWithLabel(namespace: string, selector: string) {
  const [key, value] = selector.split("=");
  return (o: { metadata?: { namespace?: string; labels?: Record<string, string> } }) =>
    o.metadata?.namespace === namespace && o.metadata?.labels?.[key] === value;
}

/** The MetaTraining that controls a child, from its ownerReferences. */
function ownerKey(obj: V1Job | V1ConfigMap): string | undefined {
  const owner = obj.metadata?.ownerReferences?.find((r) =>
    r.controller && r.kind === KIND && r.apiVersion.startsWith(`${GROUP}/`)
  );
  return owner ? `${obj.metadata?.namespace}/${owner.name}` : undefined;
}

/** See the module documentation. */
export class MetaTrainingController {
  /** Reconciles run (for tests and metrics). */
  reconciles = 0;
  /** Reconciles that failed and were requeued with backoff. */
  failures = 0;
  private elector: LeaderElector | undefined;
  private working: {
    queue: WorkQueue;
    informers: Informer<MetaTraining | V1Job | V1ConfigMap>[];
    workers: Promise<void>[];
    resync: ReturnType<typeof setInterval>;
  } | undefined;
  /** Serialises start/stop of the work (leadership can flip while caches sync). */
  private transition: Promise<void> = Promise.resolve();
  private running = false;

  constructor(private readonly options: ControllerOptions) {}

  /** Whether this replica is acting (the leader, or running without election). */
  get isActive(): boolean {
    return this.working !== undefined;
  }

  /** Starts: campaigns for leadership, or works at once without election. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const le = this.options.leaderElection;
    if (!le) {
      this.enqueueTransition(() => this.startWorking());
      return;
    }
    this.elector = new LeaderElector({
      kubeConfig: this.options.kubeConfig,
      namespace: le.namespace,
      name: le.name ?? "datarater-operator",
      identity: le.identity,
      leaseDurationMs: le.leaseDurationMs,
      renewDeadlineMs: le.renewDeadlineMs,
      retryPeriodMs: le.retryPeriodMs,
      log: this.options.log,
      onStartedLeading: () => this.enqueueTransition(() => this.startWorking()),
      onStoppedLeading: () => this.enqueueTransition(() => this.stopWorking()),
    });
    this.elector.start();
  }

  /**
   * Stops working and campaigning. `release: false` leaves the lease to expire instead of handing
   * it over (what a crashed replica does).
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.elector) await this.elector.stop(options);
    await this.enqueueTransition(() => this.stopWorking());
  }

  private enqueueTransition(step: () => Promise<void>): Promise<void> {
    this.transition = this.transition.then(step).catch((err) =>
      this.options.log?.(`controller transition failed: ${messageOf(err)}`)
    );
    return this.transition;
  }

  private async startWorking(): Promise<void> {
    if (this.working || !this.running) return;
    const { kubeConfig: kc, namespace } = this.options;
    const log = this.options.log;
    const custom = kc.makeApiClient(CustomObjectsApi);
    const batch = kc.makeApiClient(BatchV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const nsPath = namespace ? `/namespaces/${namespace}` : "";
    const backoff = {
      initialBackoffMs: this.options.watchBackoffMs?.initial,
      maxBackoffMs: this.options.watchBackoffMs?.max,
    };
    const metaTrainings = new Informer<MetaTraining>({
      kubeConfig: kc,
      path: `/apis/${GROUP}/${VERSION}${nsPath}/${PLURAL}`,
      list: () =>
        namespace
          ? custom.listNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            plural: PLURAL,
            namespace,
          })
          : custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }),
      log,
      ...backoff,
    });
    // Only children carry the owner label: the operator never caches the cluster's other Jobs.
    const labelSelector = OWNER_LABEL;
    /** An informer on the operator's children of one kind, typed as the client library types them. */
    const childInformer = <T extends ObjectWithMeta>(
      path: string,
      type: string,
      list: InformerOptions<T>["list"],
    ) =>
      new Informer<T>({
        kubeConfig: kc,
        path,
        labelSelector,
        list,
        deserialize: (raw) => ObjectSerializer.deserialize(raw, type),
        log,
        ...backoff,
      });
    const jobs = childInformer<V1Job>(
      `/apis/batch/v1${nsPath}/jobs`,
      "V1Job",
      () =>
        namespace
          ? batch.listNamespacedJob({ namespace, labelSelector })
          : batch.listJobForAllNamespaces({ labelSelector }),
    );
    const configMaps = childInformer<V1ConfigMap>(
      `/api/v1${nsPath}/configmaps`,
      "V1ConfigMap",
      () =>
        namespace
          ? core.listNamespacedConfigMap({ namespace, labelSelector })
          : core.listConfigMapForAllNamespaces({ labelSelector }),
    );
    const queue = new WorkQueue(this.options.queue);
    metaTrainings.on((_event, mt) => queue.add(keyOf(mt)));
    const onChild = (_event: string, child: V1Job | V1ConfigMap) => {
      const key = ownerKey(child);
      if (key) queue.add(key);
    };
    jobs.on(onChild);
    configMaps.on(onChild);
    const informers = [metaTrainings, jobs, configMaps] as Informer<
      MetaTraining | V1Job | V1ConfigMap
    >[];
    for (const i of informers) i.start();
    await Promise.all(informers.map((i) => i.synced));

    const client: OperatorClient = new CachedOperatorClient(kc, metaTrainings, jobs, configMaps);
    const ctx = {
      client,
      runs: new RunReader(this.options.storage),
      settings: this.options.settings,
      progressPollMs: this.options.progressPollMs,
      identity: this.options.leaderElection?.identity,
      log,
    };
    const worker = async () => {
      for (let key = await queue.get(); key !== undefined; key = await queue.get()) {
        const t0 = performance.now();
        try {
          const result = await reconcileMetaTraining(ctx, key);
          this.reconciles++;
          queue.forget(key);
          if (result.requeueAfterMs) queue.addAfter(key, result.requeueAfterMs);
          this.options.onReconciled?.(key, result, performance.now() - t0);
        } catch (err) {
          this.reconciles++;
          this.failures++;
          log?.(`reconcile ${key} failed (retry ${queue.numRequeues(key) + 1}): ${messageOf(err)}`);
          queue.addRateLimited(key);
          this.options.onReconciled?.(
            key,
            err instanceof Error ? err : new Error(String(err)),
            performance.now() - t0,
          );
        } finally {
          queue.done(key);
        }
      }
    };
    const workers = Array.from({ length: this.options.workers ?? 4 }, worker);
    const resync = setInterval(() => {
      for (const mt of metaTrainings.list()) queue.add(keyOf(mt));
    }, this.options.resyncMs ?? 300_000);
    this.working = { queue, informers, workers, resync };
    log?.(`controller working (${informers.length} informers synced)`);
  }

  private async stopWorking(): Promise<void> {
    const working = this.working;
    if (!working) return;
    this.working = undefined;
    clearInterval(working.resync);
    working.queue.shutDown();
    // In-flight reconciles finish before another replica may start.
    await Promise.all(working.workers);
    await Promise.all(working.informers.map((i) => i.stop()));
    this.options.log?.("controller stopped working");
  }
}
