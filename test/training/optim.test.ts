/**
 * The optimiser transformations in training/optim.ts against reference numbers computed in
 * float64 from the textbook formulas (Adam with bias correction, AdamW's decoupled decay,
 * global-norm clipping, linear warm-up), to float32 precision.
 */
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { useBackend } from "../../training/backend.ts";
import type { Params } from "../../training/params.ts";
import {
  addDecayedWeights,
  applyUpdates,
  averageUpdates,
  chain,
  clipByGlobalNorm,
  metaOptimizer,
  type Optimizer,
  scaleByAdam,
  scaleByLearningRate,
  warmupConstant,
} from "../../training/optim.ts";

const ADAM = { b1: 0.9, b2: 0.999, eps: 1e-8 };

beforeAll(async () => {
  await useBackend("cpu");
});

function expectValues(t: tf.Tensor, want: number[], tol = 1e-6) {
  const got = Array.from(t.dataSync());
  expect(got.length).toBe(want.length);
  got.forEach((v, i) =>
    expect(Math.abs(v - want[i]), `[${i}]: ${v} vs ${want[i]}`).toBeLessThan(tol)
  );
}

const w = (values: number[]): Params => ({ w: tf.tensor1d(values) });

/** Runs `opt` over a sequence of gradients, applying each update; returns θ after each step. */
function descend(opt: Optimizer, theta0: number[], grads: number[][]): number[][] {
  let params = w(theta0);
  let state = opt.init(params);
  const out: number[][] = [];
  for (const g of grads) {
    const r = opt.update(w(g), state, params);
    params = applyUpdates(params, r.updates);
    state = r.state;
    out.push(Array.from(params.w.dataSync()));
  }
  return out;
}

describe("scaleByAdam", () => {
  it("gives bias-corrected m̂/(√v̂+ε) and the moments for three steps", () => {
    tf.tidy(() => {
      const opt = chain(scaleByAdam(ADAM));
      const params = w([0, 0, 0]);
      let state = opt.init(params);
      const grads = [[0.1, -0.2, 0.5], [0.3, 0.1, -0.4], [-0.2, 0.05, 0.6]];
      // m_t = b1·m + (1−b1)·g, v_t = b2·v + (1−b2)·g², update = (m_t/(1−b1ᵗ)) / (√(v_t/(1−b2ᵗ)) + ε)
      const want = [
        [0.99999990000001, -0.9999999500000025, 0.9999999800000003],
        [0.9177810779440909, -0.26633702281323984, 0.05812504601751888],
        [0.25790379315796963, -0.06138885814960462, 0.4697584836073159],
      ];
      grads.forEach((g, t) => {
        const r = opt.update(w(g), state, params);
        expectValues(r.updates.w, want[t]);
        state = r.state;
      });
      expect(state[0].count).toBe(3);
      expectValues(state[0].slots.mu.w, [0.0151, -0.0022, 0.0645], 1e-8);
      expectValues(state[0].slots.nu.w, [1.3989001e-4, 5.241004e-5, 7.6934025e-4], 1e-10);
    });
  });
});

describe("AdamW (scaleByAdam → addDecayedWeights → scaleByLearningRate)", () => {
  it("decays θ decoupled from the moments: θ ← θ − lr·(adam + wd·θ)", () => {
    tf.tidy(() => {
      const opt = chain(scaleByAdam(ADAM), addDecayedWeights(0.1), scaleByLearningRate(0.01));
      const thetas = descend(opt, [1, -2, 0.5], [[0.1, -0.2, 0.5], [0.3, 0.1, -0.4]]);
      const first = [
        1 - 0.01 * (0.99999990000001 + 0.1),
        -2 - 0.01 * (-0.9999999500000025 - 0.2),
        0.5 - 0.01 * (0.9999999800000003 + 0.05),
      ];
      thetas[0].forEach((v, i) => expect(Math.abs(v - first[i])).toBeLessThan(1e-6));
      thetas[1].forEach((v, i) =>
        expect(Math.abs(v - [0.978833190219559, -1.9833486302713677, 0.4884292497396248][i]))
          .toBeLessThan(1e-6)
      );
    });
  });
});

describe("clipByGlobalNorm", () => {
  it("scales all gradients together to the max norm, and leaves smaller ones alone", () => {
    tf.tidy(() => {
      const grads = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([4]) }; // global norm 5
      const clip = clipByGlobalNorm(1);
      const r = clip.update(grads, clip.init(grads), grads);
      expectValues(r.updates.a, [0.6, 0]);
      expectValues(r.updates.b, [0.8]);
      const loose = clipByGlobalNorm(10).update(grads, clip.init(grads), grads);
      expectValues(loose.updates.a, [3, 0]);
      expectValues(loose.updates.b, [4]);
    });
  });
});

describe("warmupConstant", () => {
  it("rises linearly to the peak over the warm-up, the first update already at peak/warmup", () => {
    const lr = warmupConstant(1e-3, 4);
    [0, 1, 2, 3, 4, 10].forEach((count, i) =>
      expect(Math.abs(lr(count) - [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3][i])).toBeLessThan(1e-12)
    );
    expect(warmupConstant(2e-3, 0)(0)).toBe(2e-3);
  });

  it("drives scaleByLearningRate: update = −lr(count)·g", () => {
    tf.tidy(() => {
      const opt = chain(scaleByLearningRate(warmupConstant(0.1, 2)));
      const thetas = descend(opt, [1], [[2], [2], [2]]);
      // θ: 1 − 0.05·2, then − 0.1·2 twice.
      thetas.forEach((t, i) => expect(Math.abs(t[0] - [0.9, 0.7, 0.5][i])).toBeLessThan(1e-6));
    });
  });
});

describe("metaOptimizer", () => {
  it("is clip → Adam → decoupled decay → warm-up, step by step", () => {
    tf.tidy(() => {
      const opt = metaOptimizer({
        clipNorm: 0.5,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weightDecay: 0.1,
        lr: 0.01,
        warmupSteps: 4,
      });
      // Step 1 is at the clip threshold (norm 0.5), step 2 under it, step 3 clipped (norm √3).
      const thetas = descend(opt, [1, -2, 0.5], [[0.3, -0.4, 0], [0.1, 0.2, -0.2], [1, 1, 1]]);
      const want = [
        [0.9972500000833333, -1.9970000000625, 0.499875],
        [0.9923960555244847, -1.9946698149062845, 0.5033457463548087],
        [0.9846918547595885, -1.9944768485594757, 0.501485391951039],
      ];
      thetas.forEach((t, s) =>
        t.forEach((v, i) => expect(Math.abs(v - want[s][i])).toBeLessThan(1e-6))
      );
    });
  });
});

describe("averageUpdates", () => {
  it("runs one optimiser state per member and moves by the mean of their updates", () => {
    tf.tidy(() => {
      const opt = averageUpdates(chain(scaleByAdam(ADAM), scaleByLearningRate(0.1)));
      const params = w([0, 0]);
      let states = opt.init(params, 2);
      expect(states.length).toBe(2);
      const member1 = [[0.1, -0.2], [0.3, 0.1]];
      const member2 = [[-0.5, -0.4], [0.2, 0.2]];
      // −0.1 · ½(adam₁ + adam₂), each member's Adam on its own gradients.
      const want = [
        [3.999999514947561e-9, 0.09999999625000017],
        [-0.028608761955459985, 0.026633702702502995],
      ];
      for (let t = 0; t < 2; t++) {
        const r = opt.update([w(member1[t]), w(member2[t])], states, params);
        expectValues(r.updates.w, want[t]);
        states = r.state;
      }
      expectValues(states[0][0].slots.mu.w, [0.039, -0.008], 1e-8);
      expectValues(states[1][0].slots.mu.w, [-0.025, -0.016], 1e-8);
      expect(states.map((s) => s[0].count)).toEqual([2, 2]);
    });
  });

  it("refuses a gradient count that does not match the member states", () => {
    const opt = averageUpdates(chain(scaleByLearningRate(1)));
    const params = { w: tf.tensor1d([0]) };
    expect(() => opt.update([params], opt.init(params, 2), params)).toThrow(/1 gradients for 2/);
    params.w.dispose();
  });
});
