/**
 * The population of inner models: N learners that persist across meta-steps (each meta-step
 * continues training them) and are re-initialised periodically with staggered lifetimes, so the
 * rater always sees learners at every stage of training.
 *
 * Two parts: the bookkeeping (which member resets when; pure functions, see {@link dueForReset}),
 * and an executor that holds the learners' tensors and computes their meta-gradients: in this
 * thread ({@link LocalPopulation}) or spread over Web Workers (`training/worker-pool.ts`), with
 * identical results.
 *
 * @example
 * ```ts
 * const pop = new LocalPopulation(settings);
 * await pop.load(members);
 * const results = await pop.metaGradients(etaArrays, batchesPerMember);
 * ```
 */
import { type OptStateArrays, optStateFromArrays, optStateToArrays } from "./checkpoint.ts";
import {
  heldOutMetaLoss,
  type LearnerState,
  type MetaBatches,
  metaGradient,
  type MetaStepSettings,
} from "./meta-step.ts";
import { disposeParams, type ParamArrays, toArrays, toTensors } from "./params.ts";
import { disposeState } from "./optim.ts";

/**
 * Meta-steps between member i's resets are `resetEvery`; member i is offset by
 * ⌊i·resetEvery/N⌋, so after the first cycle the members' ages are spread evenly.
 */
export function resetOffset(i: number, n: number, resetEvery: number): number {
  return Math.floor((i * resetEvery) / n);
}

/** Whether member i is re-initialised at the start of meta-step `step` (0-based). */
export function dueForReset(step: number, i: number, n: number, resetEvery: number): boolean {
  return step > 0 && (step + resetOffset(i, n, resetEvery)) % resetEvery === 0;
}

/** A learner outside any backend: parameters and inner-optimiser state. */
export interface LearnerArrays {
  params: ParamArrays;
  opt: OptStateArrays;
}

/** One member's share of a meta-step. */
export interface MemberStepResult {
  grads: ParamArrays;
  metaLoss: number;
  innerLosses: number[];
  scores: Float32Array[];
}

/** Holds learners and computes their meta-gradients (they advance in place). */
export interface PopulationExecutor {
  readonly size: number;
  /** Replaces all learners. */
  load(learners: LearnerArrays[]): Promise<void>;
  /** Replaces learner i (a reset). */
  replace(i: number, learner: LearnerArrays): Promise<void>;
  /** One meta-gradient per learner (batches[i] is learner i's); each learner takes its K steps. */
  metaGradients(eta: ParamArrays, batches: MetaBatches[]): Promise<MemberStepResult[]>;
  /** Held-out loss after K rater-weighted steps from each learner's current state (no change). */
  heldOutLosses(eta: ParamArrays, batches: MetaBatches[]): Promise<number[]>;
  /** Downloads all learners. */
  save(): Promise<LearnerArrays[]>;
  close(): Promise<void>;
}

/** Learners as tensors on this thread's tfjs backend. */
export class LocalPopulation implements PopulationExecutor {
  private learners: LearnerState[] = [];

  constructor(private readonly settings: MetaStepSettings) {}

  get size(): number {
    return this.learners.length;
  }

  load(learners: LearnerArrays[]): Promise<void> {
    for (const l of this.learners) disposeLearner(l);
    this.learners = learners.map(uploadLearner);
    return Promise.resolve();
  }

  replace(i: number, learner: LearnerArrays): Promise<void> {
    disposeLearner(this.learners[i]);
    this.learners[i] = uploadLearner(learner);
    return Promise.resolve();
  }

  async metaGradients(eta: ParamArrays, batches: MetaBatches[]): Promise<MemberStepResult[]> {
    const etaT = toTensors(eta);
    try {
      const out: MemberStepResult[] = [];
      for (let i = 0; i < this.learners.length; i++) {
        const r = await metaGradient(etaT, this.learners[i], batches[i], this.settings);
        disposeLearner(this.learners[i]);
        this.learners[i] = r.next;
        const grads = await toArrays(r.grads);
        disposeParams(r.grads);
        out.push({ grads, metaLoss: r.metaLoss, innerLosses: r.innerLosses, scores: r.scores });
      }
      return out;
    } finally {
      disposeParams(etaT);
    }
  }

  async heldOutLosses(eta: ParamArrays, batches: MetaBatches[]): Promise<number[]> {
    const etaT = toTensors(eta);
    try {
      const out: number[] = [];
      for (let i = 0; i < this.learners.length; i++) {
        out.push(await heldOutMetaLoss(etaT, this.learners[i], batches[i], this.settings));
      }
      return out;
    } finally {
      disposeParams(etaT);
    }
  }

  async save(): Promise<LearnerArrays[]> {
    const out: LearnerArrays[] = [];
    for (const l of this.learners) {
      out.push({ params: await toArrays(l.params), opt: await optStateToArrays(l.opt) });
    }
    return out;
  }

  close(): Promise<void> {
    for (const l of this.learners) disposeLearner(l);
    this.learners = [];
    return Promise.resolve();
  }
}

function uploadLearner(l: LearnerArrays): LearnerState {
  return { params: toTensors(l.params), opt: optStateFromArrays(l.opt) };
}

function disposeLearner(l: LearnerState | undefined): void {
  if (!l) return;
  disposeParams(l.params);
  disposeState(l.opt);
}
