/**
 * The GPU path: the same meta-gradient on the WebGPU backend as on the CPU backend. Deno's WebGPU
 * runs here on a software adapter, so this exercises the path pods take on GPU nodes.
 */
import * as tf from "@tensorflow/tfjs";
import { expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import { InnerConfigSchema, RaterConfigSchema } from "../../lib/config.ts";
import { type BackendName, useBackend } from "../../training/backend.ts";
import { initLmArrays } from "../../training/lm.ts";
import { metaGradient } from "../../training/meta-step.ts";
import { disposeParams, toArrays, toTensors } from "../../training/params.ts";
import { innerOptimizer } from "../../training/optim.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";
import { toyCorpus } from "./toy.ts";

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;

async function metaGradientOn(backend: BackendName) {
  await useBackend(backend);
  const seqLen = 8;
  const rater = RaterConfigSchema.parse({ kind: "mlp", dModel: 4, hidden: 4 });
  const inner = InnerConfigSchema.parse({ dModel: 8, layers: 1, heads: 2, ffn: 8, lr: 1e-2 });
  const rng = new Rng(11);
  const eta = toTensors(initRaterArrays(rater, seqLen, rng));
  const params = toTensors(initLmArrays(inner, seqLen, rng));
  const corpus = toyCorpus(2, 8, 4, seqLen);
  const texts = corpus.train.map((t) => t.text);
  const r = await metaGradient(eta, { params, opt: innerOptimizer(inner).init(params) }, {
    inner: [encodeBatch(texts.slice(0, 4), seqLen), encodeBatch(texts.slice(4), seqLen)],
    outer: encodeBatch(corpus.heldout, seqLen),
  }, { rater, inner });
  const grads = await toArrays(r.grads);
  for (const p of [eta, params, r.grads, r.next.params]) disposeParams(p);
  return { metaLoss: r.metaLoss, grads };
}

it.skipIf(!adapter)("computes the same meta-gradient on WebGPU as on the CPU backend", async () => {
  const cpu = await metaGradientOn("cpu");
  const webgpu = await metaGradientOn("webgpu");
  expect(tf.getBackend()).toBe("webgpu");
  expect(webgpu.metaLoss).toBeCloseTo(cpu.metaLoss, 4);
  for (const name of Object.keys(cpu.grads)) {
    const a = cpu.grads[name].values, b = webgpu.grads[name].values;
    const scale = Math.max(...a.map(Math.abs));
    for (let i = 0; i < a.length; i++) {
      expect(Math.abs(a[i] - b[i]), `${name}[${i}]`).toBeLessThanOrEqual(1e-3 * scale + 1e-9);
    }
  }
});
