/**
 * The GPU path: the same meta-gradient on the WebGPU backend as on the CPU backend. Deno's WebGPU
 * runs here on a software adapter, so this exercises the path pods take on GPU nodes.
 */
import * as tf from "@tensorflow/tfjs";
import { expect, it } from "vitest";
import type { BackendName } from "../../training/backend.ts";
import { TINY_SEQ_LEN, tinyMetaGradient } from "../../training/tiny-meta-gradient.ts";
import { toyCorpus } from "./toy.ts";

const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;

/** The tiny config's meta-gradient on `backend`, over the toy corpus. */
function metaGradientOn(backend: BackendName) {
  const corpus = toyCorpus(2, 8, 4, TINY_SEQ_LEN);
  const texts = corpus.train.map((t) => t.text);
  return tinyMetaGradient(backend, {
    inner: [texts.slice(0, 4), texts.slice(4)],
    outer: corpus.heldout,
  });
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
