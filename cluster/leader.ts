/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it (the
 * client library has none): a replica becomes leader by writing its identity into the Lease with
 * optimistic concurrency (the resourceVersion makes two simultaneous takeovers impossible: one
 * gets 409 Conflict), keeps it by renewing every retry period, and steps down when it could not
 * renew within the renew deadline. Others take over once the holder's lease has not been renewed
 * for its duration, judged by their own clock from when they last saw the record change (so
 * clock skew between nodes does not matter).
 *
 * @example
 * ```ts
 * const elector = new LeaderElector({
 *   kubeConfig: kc, namespace: "datarater-system", name: "datarater-operator", identity: "pod-a",
 *   onStartedLeading: () => controller.start(), onStoppedLeading: () => controller.stop(),
 * });
 * elector.start();
 * ```
 */
import { CoordinationV1Api, type KubeConfig, type V1Lease } from "@kubernetes/client-node";
import { messageOf, statusCodeOf } from "./client.ts";
import { WakeableSleep } from "./sleep.ts";

export interface LeaderElectionOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Lease name. */
  name: string;
  /** This replica (pod name); unique among replicas. */
  identity: string;
  /** How long a lease lasts without renewal (whole seconds in the Lease). Default 15 s. */
  leaseDurationMs?: number;
  /** The leader steps down if it could not renew for this long. Default 10 s. */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  onStartedLeading: () => void | Promise<void>;
  onStoppedLeading: () => void | Promise<void>;
  /** Called whenever the observed holder changes. */
  onNewLeader?: (identity: string) => void;
  log?: (message: string) => void;
  now?: () => number;
}

/** Lease times are MicroTime: RFC 3339 with exactly six fractional digits. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** See the module documentation. */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly now: () => number;
  private observed: { holder: string; renewTime: string; at: number } | undefined;
  private stopped = true;
  private leading = false;
  private loop: Promise<void> | undefined;
  private readonly sleeper = new WakeableSleep();
  private release = true;

  constructor(private readonly options: LeaderElectionOptions) {
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    this.now = options.now ?? Date.now;
    if (this.renewDeadlineMs >= this.leaseDurationMs) {
      throw new Error("renewDeadlineMs must be shorter than leaseDurationMs");
    }
  }

  /** Whether this replica currently holds the lease. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Campaigns (and, once leading, renews) until stopped. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /**
   * Stops campaigning. With `release` (the default) a leader hands the lease back so another
   * replica takes over at once; without it the lease simply expires (what a crash looks like).
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.release = options.release ?? true;
    this.stopped = true;
    this.sleeper.wake();
    await this.loop;
  }

  private sleep(ms: number): Promise<void> {
    return this.sleeper.sleep(ms);
  }

  private async run(): Promise<void> {
    let lastRenew = 0;
    while (!this.stopped) {
      const ok = await this.tryAcquireOrRenew();
      if (this.stopped) break;
      if (ok) {
        lastRenew = this.now();
        if (!this.leading) {
          this.leading = true;
          this.options.log?.(`${this.options.identity} became leader`);
          // Not awaited: starting the work (cache sync) must not delay the next renewal.
          Promise.resolve(this.options.onStartedLeading()).catch((err) =>
            this.options.log?.(`starting as leader failed: ${messageOf(err)}`)
          );
        }
      } else if (this.leading && this.now() - lastRenew >= this.renewDeadlineMs) {
        this.leading = false;
        this.options.log?.(
          `${this.options.identity} lost the lease (no renewal within the deadline)`,
        );
        await this.options.onStoppedLeading();
      }
      await this.sleep(this.retryPeriodMs);
    }
    if (this.leading) {
      this.leading = false;
      // Stop working before letting anyone else start: never two leaders acting at once.
      await this.options.onStoppedLeading();
      if (this.release) await this.releaseLease();
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = this.now();
    const leaseSeconds = Math.max(1, Math.ceil(this.leaseDurationMs / 1000));
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name });
    } catch (err) {
      if (statusCodeOf(err) !== 404) {
        this.options.log?.(`reading lease ${namespace}/${name}: ${messageOf(err)}`);
        return false;
      }
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: leaseSeconds,
              acquireTime: microTime(now) as unknown as Date,
              renewTime: microTime(now) as unknown as Date,
              leaseTransitions: 0,
            },
          },
        });
        this.observe(identity, microTime(now), now);
        return true;
      } catch (createErr) {
        if (statusCodeOf(createErr) !== 409) {
          this.options.log?.(`creating lease ${namespace}/${name}: ${messageOf(createErr)}`);
        }
        return false;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    const renewTime = String(spec.renewTime ?? "");
    this.observe(holder, renewTime, now);
    const durationMs = (spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
    if (holder && holder !== identity && this.observed!.at + durationMs > now) return false;
    const mine = holder === identity;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds: leaseSeconds,
      acquireTime: (mine ? spec.acquireTime : microTime(now)) as Date,
      renewTime: microTime(now) as unknown as Date,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    try {
      await this.api.replaceNamespacedLease({ namespace, name, body: lease });
      this.observe(identity, String(lease.spec.renewTime), now);
      return true;
    } catch (err) {
      if (statusCodeOf(err) !== 409) {
        this.options.log?.(`updating lease ${namespace}/${name}: ${messageOf(err)}`);
      }
      return false;
    }
  }

  private observe(holder: string, renewTime: string, now: number): void {
    if (
      !this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime
    ) {
      if (this.observed?.holder !== holder && holder) this.options.onNewLeader?.(holder);
      this.observed = { holder, renewTime, at: now };
    }
  }

  private async releaseLease(): Promise<void> {
    const { namespace, name, identity } = this.options;
    try {
      const lease = await this.api.readNamespacedLease({ namespace, name });
      if (lease.spec?.holderIdentity !== identity) return;
      lease.spec = {
        ...lease.spec,
        holderIdentity: undefined,
        leaseDurationSeconds: 1,
        renewTime: microTime(this.now()) as unknown as Date,
      };
      await this.api.replaceNamespacedLease({ namespace, name, body: lease });
    } catch (err) {
      this.options.log?.(`releasing lease ${namespace}/${name}: ${messageOf(err)}`);
    }
  }
}
