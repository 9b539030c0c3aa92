/**
 * The operator's view of the API server: the few calls reconcile makes, behind one interface so that
 * reconcile is a pure-ish function of (client, key), and so the controller can serve reads from its
 * informer caches while tests call reconcile with a client that always reads the server.
 *
 * @example
 * ```ts
 * const client = new KubeOperatorClient(kubeConfig);
 * await reconcileMetaTraining({ client, runs: new RunReader(storage) }, "default/my-run");
 * ```
 */
import {
  ApiException,
  BatchV1Api,
  CoreV1Api,
  CoreV1Event,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1Job,
  type V1Pod,
} from "@kubernetes/client-node";
import { GROUP, type MetaTraining, PLURAL, VERSION } from "./metatraining.ts";

/** Another writer changed the object since it was read (HTTP 409 Conflict on update). */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConflictError";
  }
}

/** The object being created exists already (HTTP 409 AlreadyExists). */
export class AlreadyExistsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AlreadyExistsError";
  }
}

/** What reconcile needs from the cluster. Reads return undefined for "not found". */
export interface OperatorClient {
  /** `fresh` bypasses any cache (after a conflict the cache may still hold the stale object). */
  getMetaTraining(
    namespace: string,
    name: string,
    options?: { fresh?: boolean },
  ): Promise<MetaTraining | undefined>;
  /** PUT /status with the object's resourceVersion; throws {@link ConflictError} if stale. */
  replaceMetaTrainingStatus(mt: MetaTraining): Promise<MetaTraining>;
  getJob(namespace: string, name: string): Promise<V1Job | undefined>;
  listJobs(namespace: string, labelSelector: string): Promise<V1Job[]>;
  /** Throws {@link AlreadyExistsError} when a Job of that name exists. */
  createJob(job: V1Job): Promise<V1Job>;
  setJobSuspended(namespace: string, name: string, suspend: boolean): Promise<V1Job>;
  /** Deletes with background propagation (its pods go too); a missing Job is not an error. */
  deleteJob(namespace: string, name: string, uid: string): Promise<void>;
  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  listConfigMaps(namespace: string, labelSelector: string): Promise<V1ConfigMap[]>;
  /** Throws {@link AlreadyExistsError} when a ConfigMap of that name exists. */
  createConfigMap(cm: V1ConfigMap): Promise<V1ConfigMap>;
  deleteConfigMap(namespace: string, name: string, uid: string): Promise<void>;
  listPods(namespace: string, labelSelector: string): Promise<V1Pod[]>;
  createEvent(event: CoreV1Event): Promise<void>;
}

/** HTTP status of a client-node error, if it is one. */
export function statusCodeOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const code = (err as { code?: unknown; statusCode?: unknown })?.statusCode ??
    (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

/** The apiserver's message from a client-node error (its Status body), else the error's message. */
export function messageOf(err: unknown): string {
  if (err instanceof ApiException) {
    try {
      const body = typeof err.body === "string" ? JSON.parse(err.body) : err.body;
      if (body?.message) return `${body.message} (HTTP ${err.code})`;
    } catch {
      // not JSON: fall through
    }
    return `HTTP ${err.code}: ${String(err.body).slice(0, 500)}`;
  }
  return err instanceof Error ? err.message : String(err);
}

async function orUndefined<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (statusCodeOf(err) === 404) return undefined;
    throw err;
  }
}

async function ignoreNotFound(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (statusCodeOf(err) !== 404) throw err;
  }
}

function rethrowConflicts(err: unknown): never {
  if (statusCodeOf(err) === 409) {
    const message = messageOf(err);
    if (/already exists/i.test(message)) throw new AlreadyExistsError(message);
    throw new ConflictError(message);
  }
  throw err;
}

/** {@link OperatorClient} over the real client library; every read goes to the API server. */
export class KubeOperatorClient implements OperatorClient {
  private readonly custom: CustomObjectsApi;
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;

  constructor(kc: KubeConfig) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.batch = kc.makeApiClient(BatchV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  getMetaTraining(namespace: string, name: string): Promise<MetaTraining | undefined> {
    return orUndefined(
      this.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        name,
      }),
    );
  }

  async replaceMetaTrainingStatus(mt: MetaTraining): Promise<MetaTraining> {
    try {
      return await this.custom.replaceNamespacedCustomObjectStatus({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace: mt.metadata.namespace,
        name: mt.metadata.name,
        body: mt,
      });
    } catch (err) {
      rethrowConflicts(err);
    }
  }

  getJob(namespace: string, name: string): Promise<V1Job | undefined> {
    return orUndefined(this.batch.readNamespacedJob({ namespace, name }));
  }

  async listJobs(namespace: string, labelSelector: string): Promise<V1Job[]> {
    return (await this.batch.listNamespacedJob({ namespace, labelSelector })).items;
  }

  async createJob(job: V1Job): Promise<V1Job> {
    try {
      return await this.batch.createNamespacedJob({
        namespace: job.metadata!.namespace!,
        body: job,
      });
    } catch (err) {
      rethrowConflicts(err);
    }
  }

  setJobSuspended(namespace: string, name: string, suspend: boolean): Promise<V1Job> {
    return this.batch.patchNamespacedJob(
      { namespace, name, body: { spec: { suspend } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }

  deleteJob(namespace: string, name: string, uid: string): Promise<void> {
    return ignoreNotFound(this.batch.deleteNamespacedJob({
      namespace,
      name,
      propagationPolicy: "Background",
      body: { preconditions: { uid } },
    }));
  }

  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    return orUndefined(this.core.readNamespacedConfigMap({ namespace, name }));
  }

  async listConfigMaps(namespace: string, labelSelector: string): Promise<V1ConfigMap[]> {
    return (await this.core.listNamespacedConfigMap({ namespace, labelSelector })).items;
  }

  async createConfigMap(cm: V1ConfigMap): Promise<V1ConfigMap> {
    try {
      return await this.core.createNamespacedConfigMap({
        namespace: cm.metadata!.namespace!,
        body: cm,
      });
    } catch (err) {
      rethrowConflicts(err);
    }
  }

  deleteConfigMap(namespace: string, name: string, uid: string): Promise<void> {
    return ignoreNotFound(
      this.core.deleteNamespacedConfigMap({ namespace, name, body: { preconditions: { uid } } }),
    );
  }

  async listPods(namespace: string, labelSelector: string): Promise<V1Pod[]> {
    return (await this.core.listNamespacedPod({ namespace, labelSelector })).items;
  }

  async createEvent(event: CoreV1Event): Promise<void> {
    await this.core.createNamespacedEvent({ namespace: event.metadata.namespace!, body: event });
  }
}
