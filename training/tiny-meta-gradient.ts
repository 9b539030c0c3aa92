/**
 * One meta-gradient of a tiny config on a named backend, as plain arrays: what the backend
 * comparisons hold one backend to another with (`test/training/backend.test.ts`, and the GPU kit's
 * `check` in `scripts/gpu-kit/entry.ts`), so both compare the same computation.
 *
 * @example
 * ```ts
 * const texts = ["a b c", "d e f", "g h i", "j k l"];
 * const { metaLoss } = await tinyMetaGradient("cpu", { inner: [texts, texts], outer: texts });
 * ```
 */
import { encodeBatch } from "../lib/bytes.ts";
import { InnerConfigSchema, RaterConfigSchema } from "../lib/config.ts";
import { type BackendName, useBackend } from "./backend.ts";
import { initLmArrays } from "./lm.ts";
import { metaGradient } from "./meta-step.ts";
import { disposeParams, type ParamArrays, toArrays, toTensors } from "./params.ts";
import { innerOptimizer } from "./optim.ts";
import { initRaterArrays } from "./rater.ts";
import { Rng } from "./rng.ts";

/** The tiny config's sequence length (texts are cut or padded to it). */
export const TINY_SEQ_LEN = 8;

/** The meta-gradient of the tiny config from fixed seeds on `backend`: one inner step a batch. */
export async function tinyMetaGradient(
  backend: BackendName,
  texts: { inner: string[][]; outer: string[] },
): Promise<{ metaLoss: number; grads: ParamArrays }> {
  await useBackend(backend);
  const seqLen = TINY_SEQ_LEN;
  const rater = RaterConfigSchema.parse({ kind: "mlp", dModel: 4, hidden: 4 });
  const inner = InnerConfigSchema.parse({ dModel: 8, layers: 1, heads: 2, ffn: 8, lr: 1e-2 });
  const rng = new Rng(11);
  const eta = toTensors(initRaterArrays(rater, seqLen, rng));
  const params = toTensors(initLmArrays(inner, seqLen, rng));
  const r = await metaGradient(eta, { params, opt: innerOptimizer(inner).init(params) }, {
    inner: texts.inner.map((batch) => encodeBatch(batch, seqLen)),
    outer: encodeBatch(texts.outer, seqLen),
  }, { rater, inner });
  const grads = await toArrays(r.grads);
  for (const p of [eta, params, r.grads, r.next.params]) disposeParams(p);
  return { metaLoss: r.metaLoss, grads };
}
