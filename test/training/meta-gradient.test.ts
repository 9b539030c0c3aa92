/**
 * The meta-gradient is exact: it matches central finite differences of the held-out loss after a
 * 2-step Adam unroll (with a carried, warmed-up Adam state), parameter by parameter.
 */
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import { InnerConfigSchema, type RaterConfig, RaterConfigSchema } from "../../lib/config.ts";
import { useBackend } from "../../training/backend.ts";
import { initLmArrays } from "../../training/lm.ts";
import {
  heldOutMetaLoss,
  type LearnerState,
  type MetaBatches,
  metaGradient,
} from "../../training/meta-step.ts";
import { disposeParams, type Params, toTensors } from "../../training/params.ts";
import { innerOptimizer } from "../../training/optim.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";
import { toyCorpus } from "./toy.ts";

const seqLen = 12;
// Adam with a large step and ε = 1e-3: big enough meta-gradients for float32 differences.
const inner = InnerConfigSchema.parse({
  dModel: 8,
  layers: 1,
  heads: 2,
  ffn: 8,
  lr: 0.1,
  eps: 1e-3,
});

beforeAll(async () => {
  // The pure-JS backend: same float32 math, no wasm start-up, deterministic.
  await useBackend("cpu");
});

async function setup(rater: RaterConfig) {
  const rng = new Rng(3);
  const etaArrays = initRaterArrays(rater, seqLen, rng);
  // A larger rater init so the batch-softmax weights differ noticeably between records.
  for (const v of Object.values(etaArrays)) v.values.forEach((x, i) => (v.values[i] = 10 * x));
  const eta = toTensors(etaArrays);
  const corpus = toyCorpus(5, 24, 8, seqLen);
  const enc = (xs: string[]) => encodeBatch(xs, seqLen);
  const texts = corpus.train.map((t) => t.text);
  const batches: MetaBatches = {
    inner: [enc(texts.slice(0, 8)), enc(texts.slice(8, 16))],
    outer: enc(corpus.heldout),
  };
  const settings = { rater, inner };
  const params = toTensors(initLmArrays(inner, seqLen, rng));
  let learner: LearnerState = { params, opt: innerOptimizer(inner).init(params) };
  // Warm the learner up (a persistent population member is mid-training): 3 steps.
  for (let s = 0; s < 3; s++) {
    const r = await metaGradient(eta, learner, {
      inner: [batches.inner[s % 2]],
      outer: batches.outer,
    }, settings);
    disposeParams(r.grads);
    learner = r.next;
  }
  const result = await metaGradient(eta, learner, batches, settings);
  const loss = (p: Params) => heldOutMetaLoss(p, learner, batches, settings);
  return { eta, result, loss };
}

/** Central difference of `loss` along parameter `name`[j]. */
async function centralDifference(
  eta: Params,
  loss: (p: Params) => Promise<number>,
  name: string,
  j: number,
  h: number,
): Promise<number> {
  const values = (await eta[name].data()) as Float32Array;
  const at = async (d: number) => {
    const v = Float32Array.from(values);
    v[j] += d;
    const t = tf.tensor(v, eta[name].shape);
    const l = await loss({ ...eta, [name]: t });
    t.dispose();
    return l;
  };
  return (await at(h) - await at(-h)) / (2 * h);
}

/**
 * `step(|g|)`: the finite-difference step. float32 losses resolve ~2e-7, so a small gradient needs a
 * larger step to rise above rounding; a large one (a strongly curved direction) needs a smaller
 * step to keep the truncation error down.
 */
async function check(
  rater: RaterConfig,
  perTensor: number,
  step: (absGrad: number) => number,
  zeroGrad: string[],
) {
  const { eta, result, loss } = await setup(rater);
  expect(Number.isFinite(result.metaLoss)).toBe(true);
  expect(result.innerLosses).toHaveLength(2);
  let checked = 0;
  for (const name of Object.keys(eta)) {
    const g = (await result.grads[name].data()) as Float32Array;
    if (zeroGrad.includes(name)) {
      // Scores enter only through a softmax over the batch: a shift of every score changes
      // nothing, so a parameter that only shifts all scores has exactly zero meta-gradient.
      for (const v of g) expect(Math.abs(v)).toBeLessThan(1e-6);
      continue;
    }
    const largest = [...g.keys()].sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]))
      .slice(0, perTensor);
    for (const j of largest) {
      const fd = await centralDifference(eta, loss, name, j, step(Math.abs(g[j])));
      const rel = Math.abs(fd - g[j]) / Math.abs(g[j]);
      expect(rel, `${name}[${j}]: analytic ${g[j]}, finite difference ${fd}`).toBeLessThan(1e-2);
      checked++;
    }
  }
  expect(checked).toBeGreaterThan(0);
}

describe("meta-gradient through a 2-step Adam unroll", () => {
  it("matches central finite differences on every checked parameter of an MLP rater", async () => {
    const rater = RaterConfigSchema.parse({ kind: "mlp", dModel: 4, hidden: 4 });
    await check(rater, 3, () => 3e-2, ["mlp.b2"]);
  });

  it("matches central finite differences on every tensor of a transformer rater", async () => {
    const rater = RaterConfigSchema.parse({
      kind: "transformer",
      dModel: 4,
      layers: 1,
      heads: 1,
      ffn: 4,
      patch: 1,
    });
    await check(rater, 1, (g) => (g > 0.05 ? 3e-3 : 1e-2), ["lnf.b", "head.b"]);
  });

  it("matches central finite differences on every tensor of a patched transformer rater (4 bytes per position)", async () => {
    const rater = RaterConfigSchema.parse({
      kind: "transformer",
      dModel: 4,
      layers: 1,
      heads: 1,
      ffn: 4,
      patch: 4,
    });
    // A position sums four (×10 init) byte embeddings, so the loss curves more sharply along the
    // large gradients: their truncation error needs a smaller step (it shrinks as h², seen here
    // from 110% at 3e-3 to 1.2% at 3e-4).
    await check(rater, 1, (g) => (g > 0.05 ? 1e-4 : 3e-3), ["lnf.b", "head.b"]);
  });
});
