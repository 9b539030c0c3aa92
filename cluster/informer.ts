/**
 * An informer: list, then watch from the list's resourceVersion, keeping a local cache and calling
 * handlers on changes. It relists on 410 Gone, resumes from the last seen version (bookmarks keep it
 * fresh) when a watch ends, and restarts with capped exponential backoff on any other error.
 *
 * Why not the client library's `makeInformer`: its ListWatch (client-node 2.0.1) stops for good on
 * any error other than 410, and it does not ask for bookmarks, so after a quiet period a resumed
 * watch can start from a version the server has already forgotten. This keeps the library's `Watch`
 * (the HTTP streaming and auth) and its typed list calls, and owns only the loop.
 *
 * @example
 * ```ts
 * const jobs = new Informer<V1Job>({
 *   kubeConfig: kc, path: "/apis/batch/v1/jobs", labelSelector: "app=x",
 *   list: () => batch.listJobForAllNamespaces({ labelSelector: "app=x" }),
 *   deserialize: (o) => ObjectSerializer.deserialize(o, "V1Job"),
 * });
 * jobs.on((type, job) => console.log(type, job.metadata?.name));
 * jobs.start(); await jobs.synced;
 * ```
 */
import { type KubeConfig, Watch } from "@kubernetes/client-node";
import { messageOf, statusCodeOf } from "./client.ts";
import { WakeableSleep } from "./sleep.ts";

/** What the informer needs of an object: its identity and version. */
export interface ObjectWithMeta {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

export type InformerEvent = "add" | "update" | "delete";
export type InformerHandler<T> = (event: InformerEvent, obj: T, old?: T) => void;

export interface InformerOptions<T extends ObjectWithMeta> {
  kubeConfig: KubeConfig;
  /** Collection path to watch (all namespaces or one), e.g. `/apis/batch/v1/jobs`. */
  path: string;
  /** Lists the same collection; its `metadata.resourceVersion` is where the watch starts. */
  list: () => Promise<{ metadata?: { resourceVersion?: string }; items: T[] }>;
  labelSelector?: string;
  /** Turns a raw watch object into the type `list` returns (e.g. typed dates). */
  deserialize?: (raw: unknown) => T;
  /** Server-side watch timeout; the watch is then resumed. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** First retry delay after an error; doubles up to {@link maxBackoffMs}. Default 500 ms. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  log?: (message: string) => void;
}

function keyOf(obj: ObjectWithMeta): string {
  return `${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? ""}`;
}

/** See the module documentation. */
export class Informer<T extends ObjectWithMeta> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private resourceVersion = "";
  private stopped = true;
  private abort: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private readonly sleeper = new WakeableSleep();
  private endWatch: (() => void) | undefined;
  private markSynced!: () => void;
  /** Resolves once the first list has filled the cache. */
  readonly synced: Promise<void>;
  /** Lists made (the first, and one per relist). */
  lists = 0;
  /** Watch requests made. */
  watches = 0;

  constructor(private readonly options: InformerOptions<T>) {
    this.synced = new Promise((resolve) => (this.markSynced = resolve));
  }

  /** Registers a change handler (called synchronously, in order of events). */
  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  /** The cached object, or undefined. */
  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  /** Cached objects, optionally filtered. */
  list(filter?: (obj: T) => boolean): T[] {
    const all = [...this.cache.values()];
    return filter ? all.filter(filter) : all;
  }

  /** Starts the list/watch loop (idempotent). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Stops watching; the cache keeps its last state. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    // Do not wait for the aborted stream to report its end: not every runtime reports it.
    this.endWatch?.();
    this.sleeper.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const initial = this.options.initialBackoffMs ?? 500;
    const max = this.options.maxBackoffMs ?? 30_000;
    let backoff = initial;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.relist();
        const started = performance.now();
        const outcome = await this.watchOnce();
        // A server that ends watches at once must not turn this loop into a busy loop.
        if (performance.now() - started < 50) await this.sleep(50);
        if (outcome === "gone") {
          this.options.log?.(`watch ${this.options.path}: 410 Gone, relisting`);
          this.resourceVersion = "";
        }
        backoff = initial;
      } catch (err) {
        if (this.stopped) break;
        if (statusCodeOf(err) === 410) {
          this.resourceVersion = "";
          continue;
        }
        this.options.log?.(
          `watch ${this.options.path} failed: ${messageOf(err)}; retrying in ${
            Math.round(backoff)
          } ms`,
        );
        await this.sleep(backoff * (0.8 + 0.4 * Math.random()));
        backoff = Math.min(backoff * 2, max);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return this.sleeper.sleep(ms);
  }

  private async relist(): Promise<void> {
    this.lists++;
    const list = await this.options.list();
    const seen = new Set<string>();
    for (const obj of list.items) {
      const key = keyOf(obj);
      seen.add(key);
      this.upsert(key, obj);
    }
    for (const [key, old] of [...this.cache]) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.emit("delete", old);
      }
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? "";
    this.markSynced();
  }

  private upsert(key: string, obj: T): void {
    const old = this.cache.get(key);
    if (old && old.metadata?.resourceVersion === obj.metadata?.resourceVersion) return;
    this.cache.set(key, obj);
    this.emit(old ? "update" : "add", obj, old);
  }

  private emit(event: InformerEvent, obj: T, old?: T): void {
    for (const h of this.handlers) {
      try {
        h(event, obj, old);
      } catch (err) {
        this.options.log?.(`informer handler failed: ${messageOf(err)}`);
      }
    }
  }

  /** One watch request; resolves when the server ends it, "gone" on 410. */
  private watchOnce(): Promise<"ended" | "gone"> {
    this.watches++;
    return new Promise((resolve, reject) => {
      let gone = false;
      this.endWatch = () => resolve("ended");
      const watch = new Watch(this.options.kubeConfig);
      const query: Record<string, string | number | boolean> = {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.options.watchTimeoutSeconds ?? 300,
      };
      if (this.options.labelSelector) query.labelSelector = this.options.labelSelector;
      const onEvent = (type: string, raw: unknown) => {
        // deno-lint-ignore no-explicit-any
        const rv = (raw as any)?.metadata?.resourceVersion as string | undefined;
        if (type === "ERROR") {
          // deno-lint-ignore no-explicit-any
          if ((raw as any)?.code === 410) gone = true;
          else {
            this.options.log?.(
              // deno-lint-ignore no-explicit-any
              `watch ${this.options.path}: server error event: ${(raw as any)?.message}`,
            );
          }
          return;
        }
        if (type === "BOOKMARK") {
          if (rv) this.resourceVersion = rv;
          return;
        }
        const obj = this.options.deserialize ? this.options.deserialize(raw) : raw as T;
        const key = keyOf(obj);
        if (type === "DELETED") {
          const old = this.cache.get(key);
          this.cache.delete(key);
          this.emit("delete", old ?? obj);
        } else if (type === "ADDED" || type === "MODIFIED") {
          this.upsert(key, obj);
        }
        if (rv) this.resourceVersion = rv;
      };
      const onDone = (err: unknown) => {
        this.abort = undefined;
        if (this.stopped) return resolve("ended");
        if (gone) return resolve("gone");
        if (!err) return resolve("ended");
        // The library's client-side inactivity timeout: resume like a server-side end.
        if ((err as { name?: string })?.name === "TimeoutError") return resolve("ended");
        if (statusCodeOf(err) === 410) return resolve("gone");
        reject(err);
      };
      watch.watch(this.options.path, query, onEvent, onDone).then((controller) => {
        this.abort = controller;
        if (this.stopped) controller.abort();
      }, reject);
    });
  }
}
