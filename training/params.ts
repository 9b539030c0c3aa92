/**
 * Parameters as a flat map of named tensors, their seeded initial values, and the one conversion
 * between tensors and plain arrays (used by checkpoints, export, the worker pool and the tests).
 *
 * @example
 * ```ts
 * const params = toTensors(initArrays({ "head.w": [4, 1], "head.b": [1] }, new Rng(0)));
 * const arrays = await toArrays(params);
 * disposeParams(params);
 * ```
 */
import * as tf from "@tensorflow/tfjs";
import type { Rng } from "./rng.ts";

/** Parameters by name; names are stable (`l0.attn.wqkv`) and shared with checkpoints and ONNX. */
export type Params = Record<string, tf.Tensor>;
/** Parameter values outside any tensor backend, for checkpoints and export. */
export type ParamArrays = Record<
  string,
  { shape: number[]; values: Float32Array }
>;

const INIT_STD = 0.02;

/**
 * Initial values for named shapes: LayerNorm gains 1, biases 0, matrices N(0, 0.02²) drawn from the
 * seeded generator (not tfjs's RNG), so a run is reproducible across backends and resumes.
 */
export function initArrays(
  shapes: Record<string, number[]>,
  rng: Rng,
): ParamArrays {
  const out: ParamArrays = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const size = shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (name.endsWith(".g")) values = new Float32Array(size).fill(1);
    else if (shape.length === 1) values = new Float32Array(size);
    else values = rng.normals(size, INIT_STD);
    out[name] = { shape, values };
  }
  return out;
}

/** Uploads parameter arrays to the active backend. */
export function toTensors(arrays: ParamArrays): Params {
  const out: Params = {};
  for (const [name, { shape, values }] of Object.entries(arrays)) {
    out[name] = tf.tensor(values, shape, "float32");
  }
  return out;
}

/**
 * Downloads parameters (async, so it also works on WebGPU). The values are copies: some backends
 * hand out views of their own memory, which a later disposal or kernel could overwrite.
 */
export async function toArrays(params: Params): Promise<ParamArrays> {
  const out: ParamArrays = {};
  for (const [name, t] of Object.entries(params)) {
    out[name] = { shape: [...t.shape], values: Float32Array.from(await t.data() as Float32Array) };
  }
  return out;
}

/** Disposes every tensor of a parameter map. */
export function disposeParams(params: Params): void {
  for (const t of Object.values(params)) t.dispose();
}
