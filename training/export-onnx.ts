/**
 * Exports the trained DataRater to ONNX: the graph is built node by node with protobuf and mirrors
 * `raterScores` (training/rater.ts, layers from training/nn.ts) op for op, so onnxruntime's scores
 * equal the TensorFlow.js forward pass (checked by test/export/parity.test.ts).
 *
 * Model contract the scoring function relies on:
 * - input `tokens` int32 [N, seqLen]: UTF-8 bytes, head kept, padded with 0 (`encodeBatch`);
 * - input `mask` float32 [N, seqLen]: 1 on real bytes (an empty record has one real 0 byte);
 * - output `scores` float32 [N]; N is dynamic.
 * - metadata `datarater.format` "1", `datarater.tokenizer`, `datarater.rater`,
 *   `datarater.calibration`, `datarater.config_sha256`, and `datarater.scoring`
 *   (`{window, stride, aggregation}`: how the scorer cuts a whole record into windows of the
 *   model's input width and aggregates their scores, lib/windows.ts; absent in older exports, read
 *   as `{window: seqLen, stride: seqLen, aggregation: "mean"}`), read back by
 *   {@link readRaterMetadata}.
 *
 * A patched transformer rater (`rater.patch` bytes per position) takes the same byte inputs: the
 * graph pads them to whole patches, sums each patch's (offset, byte) embeddings and runs the
 * blocks on the patch positions, as `prepareRaterBatch` in training/rater.ts does.
 *
 * {@link exportCalibratedRater} also computes the score calibration, from the exported graph's own
 * whole-record scores on a reference sample, so serving thresholds match serving scores exactly.
 *
 * LayerNorm and GELU are composed from primitives (not opset-17 LayerNormalization / Gelu) so
 * the arithmetic is the same as tfjs's, step for step.
 *
 * @example
 * ```ts
 * const bytes = exportRaterOnnx({ params, rater: cfg.rater, seqLen: cfg.seqLen, calibration, configDigest });
 * const meta = readRaterMetadata(bytes); // throws NotADataRaterModelError for any other model
 * const session = await ort.InferenceSession.create(bytes);
 * ```
 */
import { createHash } from "node:crypto";
import onnxProto from "onnx-proto";
import type { onnx as OnnxTypes } from "onnx-proto";
import { z } from "zod";
import { BYTE_VOCAB, encodeBatch } from "../lib/bytes.ts";
import {
  quantileCalibration,
  type ScoreCalibration,
  ScoreCalibrationSchema,
} from "../lib/calibration.ts";
import { type RaterConfig, RaterConfigSchema } from "../lib/config.ts";
import {
  aggregateScores,
  AGGREGATIONS,
  cutWindows,
  DEFAULT_SCORE_CAP_BYTES,
  type Window,
} from "../lib/windows.ts";
import { LN_EPS, MASK_BIAS } from "./nn.ts";
import type { ParamArrays } from "./params.ts";
import { raterPositions, raterShapes } from "./rater.ts";

const { onnx } = onnxProto;

/** Format version written to `datarater.format`; bump when the I/O contract changes. */
export const RATER_FORMAT = "1";
/** ONNX opset the graph is written for (ai.onnx domain). */
export const RATER_OPSET = 17;
/** Model I/O names (the contract). */
export const TOKENS_INPUT = "tokens";
export const MASK_INPUT = "mask";
export const SCORES_OUTPUT = "scores";

/** Metadata keys. */
export const META_KEYS = {
  format: "datarater.format",
  tokenizer: "datarater.tokenizer",
  rater: "datarater.rater",
  calibration: "datarater.calibration",
  configSha256: "datarater.config_sha256",
  scoring: "datarater.scoring",
} as const;

/** How the scorer rates a whole record with the model (metadata `datarater.scoring`). */
export const ScoringSpecSchema = z.object({
  /** Bytes per window: the model's input width (= tokenizer.maxLength). */
  window: z.number().int().min(1),
  /** Bytes between window starts (≤ window). */
  stride: z.number().int().min(1),
  /** How window scores become the record's score (lib/windows.ts `aggregateScores`). */
  aggregation: z.enum(AGGREGATIONS),
}).refine((s) => s.stride <= s.window, { message: "stride must be <= window", path: ["stride"] });
export type ScoringSpec = z.infer<typeof ScoringSpecSchema>;

/** The scoring spec a rater config asks for at input width `seqLen`. */
export function scoringSpecFor(rater: RaterConfig, seqLen: number): ScoringSpec {
  const stride = rater.scoring?.stride ?? seqLen;
  if (stride > seqLen) {
    throw new ExportError(
      `rater.scoring.stride ${stride} is longer than the window (seqLen ${seqLen}): bytes between ` +
        "windows would never be read; use a stride <= seqLen",
    );
  }
  return { window: seqLen, stride, aggregation: rater.scoring?.aggregation ?? "mean" };
}

/** How records become model inputs; the scoring function must tokenise exactly so. */
export const TokenizerSpecSchema = z.object({
  kind: z.literal("utf8-bytes"),
  maxLength: z.number().int().min(1),
  truncation: z.literal("head"),
  pad: z.literal(0),
});
export type TokenizerSpec = z.infer<typeof TokenizerSpecSchema>;

/** Everything a DataRater export carries besides its weights. */
export interface RaterMetadata {
  format: string;
  tokenizer: TokenizerSpec;
  rater: RaterConfig;
  calibration: ScoreCalibration;
  /** sha256 (hex) of the training config that produced the rater. */
  configSha256: string;
  /** Bytes per record the model takes (= tokenizer.maxLength = the inputs' second dim). */
  seqLen: number;
  /** How a whole record is windowed and aggregated (defaults for exports that predate it). */
  scoring: ScoringSpec;
}

/** Inputs of {@link exportRaterOnnx}. */
export interface ExportRaterOptions {
  params: ParamArrays;
  rater: RaterConfig;
  seqLen: number;
  calibration: ScoreCalibration;
  /** sha256 hex of the training config (see {@link sha256Hex}). */
  configDigest: string;
}

/** The exporter was given parameters or settings that don't describe a rater. */
export class ExportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExportError";
  }
}

/** A model that is not (or not a readable version of) a DataRater export. */
export class NotADataRaterModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotADataRaterModelError";
  }
}

/** Lower-case hex sha256 of bytes (the model digest and the config digest). */
export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

// ONNX enum values (onnx.proto): TensorProto.DataType and AttributeProto.AttributeType.
const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const ATTR_INT = 2;
const ATTR_INTS = 7;

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Node attributes used here: one int or a list of ints. */
type Attr = number | number[];

/** Accumulates nodes and initializers with unique value names. */
class GraphBuilder {
  readonly nodes: OnnxTypes.INodeProto[] = [];
  readonly initializers: OnnxTypes.ITensorProto[] = [];
  private next = 0;
  private readonly constants = new Map<string, string>();

  /** Adds a float32 initializer (raw little-endian data, as ONNX requires). */
  floatTensor(name: string, shape: number[], values: Float32Array): string {
    if (!littleEndian) {
      throw new ExportError("ONNX export needs a little-endian host");
    }
    const raw = new Uint8Array(values.byteLength);
    raw.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    this.initializers.push({ name, dims: shape, dataType: FLOAT, rawData: raw });
    return name;
  }

  /** An int32 vector constant. */
  int32s(name: string, values: number[]): string {
    const raw = new Uint8Array(new Int32Array(values).buffer);
    this.initializers.push({ name, dims: [values.length], dataType: INT32, rawData: raw });
    return name;
  }

  /** A float32 scalar constant, shared between uses. */
  scalar(value: number): string {
    const key = `f:${value}`;
    let name = this.constants.get(key);
    if (!name) {
      name = `const_${this.constants.size}`;
      this.floatTensor(name, [], Float32Array.of(value));
      this.constants.set(key, name);
    }
    return name;
  }

  /** An int64 vector constant (shapes, axes, split sizes), shared between uses. */
  ints(values: number[]): string {
    const key = `i:${values.join(",")}`;
    let name = this.constants.get(key);
    if (!name) {
      name = `const_${this.constants.size}`;
      this.initializers.push({
        name,
        dims: [values.length],
        dataType: INT64,
        int64Data: values,
      });
      this.constants.set(key, name);
    }
    return name;
  }

  /** Appends a node; returns its output names (`outputs` of them). */
  node(
    opType: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    outputs = 1,
    outputNames?: string[],
  ): string[] {
    const id = this.next++;
    const out = outputNames ??
      Array.from({ length: outputs }, (_, i) => `${opType}_${id}_${i}`);
    const attribute: OnnxTypes.IAttributeProto[] = Object.entries(attrs).map(([name, v]) =>
      Array.isArray(v) ? { name, type: ATTR_INTS, ints: v } : { name, type: ATTR_INT, i: v }
    );
    this.nodes.push({
      opType,
      name: `${opType}_${id}`,
      input: inputs,
      output: out,
      attribute,
    });
    return out;
  }

  /** Single-output node. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}) {
    return this.node(opType, inputs, attrs)[0];
  }
}

/** nn.ts `layerNorm`: (x − μ) · rsqrt(σ² + ε) · g + b over the last axis. */
function layerNorm(g: GraphBuilder, x: string, gain: string, bias: string) {
  const mu = g.op("ReduceMean", [x], { axes: [-1], keepdims: 1 });
  const xc = g.op("Sub", [x, mu]);
  const variance = g.op("ReduceMean", [g.op("Mul", [xc, xc])], {
    axes: [-1],
    keepdims: 1,
  });
  const rstd = g.op("Reciprocal", [
    g.op("Sqrt", [g.op("Add", [variance, g.scalar(LN_EPS)])]),
  ]);
  return g.op("Add", [g.op("Mul", [g.op("Mul", [xc, rstd]), gain]), bias]);
}

/** nn.ts `gelu` (tanh approximation). */
function gelu(g: GraphBuilder, x: string) {
  const cube = g.op("Mul", [g.op("Mul", [x, x]), x]);
  const inner = g.op("Mul", [
    g.op("Add", [x, g.op("Mul", [cube, g.scalar(0.044715)])]),
    g.scalar(Math.sqrt(2 / Math.PI)),
  ]);
  return g.op("Mul", [
    g.op("Mul", [x, g.scalar(0.5)]),
    g.op("Add", [g.op("Tanh", [inner]), g.scalar(1)]),
  ]);
}

/** nn.ts `linear`: x @ w + b (MatMul broadcasts over leading axes). */
function linear(g: GraphBuilder, x: string, w: string, b: string) {
  return g.op("Add", [g.op("MatMul", [x, w]), b]);
}

/** nn.ts `selfAttention` on x [N, L, d] with additive key bias [N, 1, 1, L]. */
function selfAttention(
  g: GraphBuilder,
  x: string,
  prefix: string,
  d: number,
  heads: number,
  bias: string,
) {
  const dh = d / heads;
  const qkv = linear(g, x, `${prefix}.wqkv`, `${prefix}.bqkv`);
  const [q, k, v] = g.node("Split", [qkv, g.ints([d, d, d])], { axis: 2 }, 3);
  const splitHeads = (t: string, perm: number[]) =>
    g.op("Transpose", [g.op("Reshape", [t, g.ints([0, 0, heads, dh])])], {
      perm,
    });
  const qh = splitHeads(q, [0, 2, 1, 3]); // [N, H, L, dh]
  const kt = splitHeads(k, [0, 2, 3, 1]); // [N, H, dh, L]
  const vh = splitHeads(v, [0, 2, 1, 3]);
  const scores = g.op("Mul", [
    g.op("MatMul", [qh, kt]),
    g.scalar(1 / Math.sqrt(dh)),
  ]);
  const attn = g.op("Softmax", [g.op("Add", [scores, bias])], { axis: -1 });
  const merged = g.op("Reshape", [
    g.op("Transpose", [g.op("MatMul", [attn, vh])], { perm: [0, 2, 1, 3] }),
    g.ints([0, 0, d]),
  ]);
  return linear(g, merged, `${prefix}.wo`, `${prefix}.bo`);
}

/** nn.ts `transformerBlock`: pre-norm attention and MLP with residuals. */
function transformerBlock(
  g: GraphBuilder,
  x: string,
  layer: number,
  d: number,
  heads: number,
  bias: string,
) {
  const l = `l${layer}`;
  const h = g.op("Add", [
    x,
    selfAttention(
      g,
      layerNorm(g, x, `${l}.ln1.g`, `${l}.ln1.b`),
      `${l}.attn`,
      d,
      heads,
      bias,
    ),
  ]);
  const m = linear(
    g,
    gelu(
      g,
      linear(
        g,
        layerNorm(g, h, `${l}.ln2.g`, `${l}.ln2.b`),
        `${l}.mlp.w1`,
        `${l}.mlp.b1`,
      ),
    ),
    `${l}.mlp.w2`,
    `${l}.mlp.b2`,
  );
  return g.op("Add", [h, m]);
}

/**
 * rater.ts pooling: Σ_t x_t · mask_t / length, x [N, L, d] → [N, d] (length = Σ_t mask_t ≥ 1;
 * training folds the same weights into its constants).
 */
function maskedMeanPool(g: GraphBuilder, x: string, mask: string) {
  const axis1 = g.ints([1]);
  const lengths = g.op("ReduceSum", [mask, axis1], { keepdims: 1 }); // [N, 1]
  const weights = g.op("Unsqueeze", [g.op("Div", [mask, lengths]), g.ints([2])]); // [N, L, 1]
  return g.op("ReduceSum", [g.op("Mul", [x, weights]), axis1], { keepdims: 0 });
}

/** Checks that `params` hold exactly the rater's parameters with the right shapes. */
function checkParams(params: ParamArrays, rater: RaterConfig, seqLen: number) {
  const shapes = raterShapes(rater, seqLen);
  for (const [name, shape] of Object.entries(shapes)) {
    const p = params[name];
    if (!p) {
      throw new ExportError(
        `parameter "${name}" is missing: these are not ${rater.kind} rater parameters for this config`,
      );
    }
    const size = shape.reduce((a, b) => a * b, 1);
    if (
      p.shape.length !== shape.length || p.shape.some((s, i) => s !== shape[i])
    ) {
      throw new ExportError(
        `parameter "${name}" has shape [${p.shape}] but the rater config needs [${shape}] (seqLen ${seqLen})`,
      );
    }
    if (p.values.length !== size) {
      throw new ExportError(
        `parameter "${name}" has ${p.values.length} values for shape [${shape}]`,
      );
    }
    if (!p.values.every(Number.isFinite)) {
      throw new ExportError(
        `parameter "${name}" contains NaN or Infinity: refusing to export a diverged rater`,
      );
    }
  }
  const extra = Object.keys(params).filter((n) => !(n in shapes));
  if (extra.length) {
    throw new ExportError(
      `unexpected parameters ${extra.join(", ")}: pass only the rater's parameters`,
    );
  }
}

/**
 * Builds the ONNX model of a rater (both kinds) from its parameter values, with the DataRater
 * metadata. Returns the serialized ModelProto.
 */
export function exportRaterOnnx(opts: ExportRaterOptions): Uint8Array {
  const rater = RaterConfigSchema.parse(opts.rater);
  const { seqLen, params } = opts;
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new ExportError(`seqLen must be a positive integer, got ${seqLen}`);
  }
  if (!/^[0-9a-f]{64}$/.test(opts.configDigest)) {
    throw new ExportError(
      `configDigest must be a lower-case sha256 hex digest, got "${opts.configDigest}"`,
    );
  }
  const calibration = ScoreCalibrationSchema.parse(opts.calibration);
  const scoring = scoringSpecFor(rater, seqLen);
  checkParams(params, rater, seqLen);

  const g = new GraphBuilder();
  for (const [name, { shape, values }] of Object.entries(params)) {
    g.floatTensor(name, shape, values);
  }
  const d = rater.dModel;
  // The one-hot matmuls of training are Gathers here: same values, no multiply-adds.
  let x: string;
  let pooled: string;
  if (rater.kind === "mlp") {
    x = g.op("Gather", ["embed", TOKENS_INPUT], { axis: 0 }); // [N, L, d]
    pooled = maskedMeanPool(g, x, MASK_INPUT);
    const h = gelu(g, linear(g, pooled, "mlp.w1", "mlp.b1"));
    g.node("Reshape", [linear(g, h, "mlp.w2", "mlp.b2"), g.ints([-1])], {}, 1, [
      SCORES_OUTPUT,
    ]);
  } else {
    // Patches: pad the bytes to whole patches, embed each (offset-in-patch, byte) pair, weigh it by
    // its mask (padding adds nothing) and sum a patch's embeddings; a position is real iff its
    // first byte is (masks are prefixes).
    const patch = rater.patch;
    const positions = raterPositions(rater, seqLen);
    const extra = positions * patch - seqLen;
    const padded = (t: string) => extra ? g.op("Pad", [t, g.ints([0, 0, 0, extra])]) : t;
    const tokens3 = g.op("Reshape", [padded(TOKENS_INPUT), g.ints([0, positions, patch])]);
    const mask3 = g.op("Reshape", [padded(MASK_INPUT), g.ints([0, positions, patch])]);
    const offsets = g.int32s(
      "patch_offsets",
      Array.from({ length: patch }, (_, j) => j * BYTE_VOCAB),
    );
    const embedded = g.op("Gather", ["embed", g.op("Add", [tokens3, offsets])], { axis: 0 });
    x = g.op("ReduceSum", [
      g.op("Mul", [embedded, g.op("Unsqueeze", [mask3, g.ints([3])])]),
      g.ints([2]),
    ], { keepdims: 0 }); // [N, P, d]
    x = g.op("Add", [x, "pos"]);
    const positionMask = g.op("Reshape", [
      g.op("Slice", [mask3, g.ints([0]), g.ints([1]), g.ints([2])]),
      g.ints([0, positions]),
    ]); // [N, P]
    const bias = g.op("Unsqueeze", [
      g.op("Mul", [
        g.op("Sub", [g.scalar(1), positionMask]),
        g.scalar(MASK_BIAS),
      ]),
      g.ints([1, 2]),
    ]); // [N, 1, 1, P]
    for (let i = 0; i < rater.layers; i++) {
      x = transformerBlock(g, x, i, d, rater.heads, bias);
    }
    pooled = maskedMeanPool(g, layerNorm(g, x, "lnf.g", "lnf.b"), positionMask);
    g.node(
      "Reshape",
      [linear(g, pooled, "head.w", "head.b"), g.ints([-1])],
      {},
      1,
      [SCORES_OUTPUT],
    );
  }

  const batchDim = { dimParam: "N" };
  const inputType = (elemType: number) => ({
    tensorType: {
      elemType,
      shape: { dim: [batchDim, { dimValue: seqLen }] },
    },
  });
  const tokenizer: TokenizerSpec = {
    kind: "utf8-bytes",
    maxLength: seqLen,
    truncation: "head",
    pad: 0,
  };
  const model: OnnxTypes.IModelProto = {
    irVersion: 8,
    producerName: "datarater",
    producerVersion: RATER_FORMAT,
    docString: `DataRater (${rater.kind}) scoring ${seqLen}-byte UTF-8 windows of a record ` +
      `(every ${scoring.stride} bytes, record score = ${scoring.aggregation} of its windows)`,
    opsetImport: [{ domain: "", version: RATER_OPSET }],
    graph: {
      name: `datarater_${rater.kind}`,
      node: g.nodes,
      initializer: g.initializers,
      input: [
        { name: TOKENS_INPUT, type: inputType(INT32) },
        { name: MASK_INPUT, type: inputType(FLOAT) },
      ],
      output: [{
        name: SCORES_OUTPUT,
        type: {
          tensorType: { elemType: FLOAT, shape: { dim: [batchDim] } },
        },
      }],
    },
    metadataProps: [
      { key: META_KEYS.format, value: RATER_FORMAT },
      { key: META_KEYS.tokenizer, value: JSON.stringify(tokenizer) },
      { key: META_KEYS.rater, value: JSON.stringify(rater) },
      { key: META_KEYS.calibration, value: JSON.stringify(calibration) },
      { key: META_KEYS.configSha256, value: opts.configDigest },
      { key: META_KEYS.scoring, value: JSON.stringify(scoring) },
    ],
  };
  return onnx.ModelProto.encode(model).finish();
}

/**
 * Whole-record scores with onnxruntime-node on a serialized rater, computed exactly as the scoring
 * function does: each record's UTF-8 bytes up to `cap` are cut into the windows of the model's
 * `datarater.scoring` spec (lib/windows.ts), the windows are scored in batches (`encodeBatch`), and
 * a record's score is the spec's aggregate of its window scores. A record no longer than the window
 * is one window: its score is the model's output on it. onnxruntime-node is imported lazily so
 * modules that only read metadata (the scoring worker, edge runtimes) don't load the native addon
 * through here.
 */
export async function scoreWithOnnx(
  model: Uint8Array,
  records: readonly (string | Uint8Array)[],
  seqLen: number,
  options: { batchSize?: number; cap?: number } = {},
): Promise<Float32Array> {
  const { scoring } = readRaterMetadata(model);
  if (scoring.window !== seqLen) {
    throw new ExportError(`the model's window is ${scoring.window} bytes, not ${seqLen}`);
  }
  const batchSize = options.batchSize ?? 256;
  const plan = { ...scoring, cap: options.cap ?? DEFAULT_SCORE_CAP_BYTES };
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  });
  const out = new Float32Array(records.length);
  const encoder = new TextEncoder();
  try {
    let windows: Uint8Array[] = [];
    let owners: { record: number; spans: Window[] }[] = [];
    const flush = async () => {
      if (!windows.length) return;
      const scores = new Float32Array(windows.length);
      for (let start = 0; start < windows.length; start += batchSize) {
        const batch = encodeBatch(windows.slice(start, start + batchSize), seqLen);
        const result = await session.run({
          [TOKENS_INPUT]: new ort.Tensor("int32", batch.tokens, [batch.batch, seqLen]),
          [MASK_INPUT]: new ort.Tensor("float32", batch.mask, [batch.batch, seqLen]),
        });
        scores.set(result[SCORES_OUTPUT].data as Float32Array, start);
      }
      let at = 0;
      for (const { record, spans } of owners) {
        out[record] = aggregateScores(
          scores.subarray(at, at + spans.length),
          spans,
          scoring.aggregation,
        );
        at += spans.length;
      }
      windows = [];
      owners = [];
    };
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const bytes = typeof r === "string" ? encoder.encode(r) : r;
      const { spans } = cutWindows(bytes, plan, windows);
      owners.push({ record: i, spans });
      if (windows.length >= batchSize) await flush();
    }
    await flush();
  } finally {
    await session.release();
  }
  return out;
}

/** An exported, calibrated rater and its digest. */
export interface CalibratedExport {
  model: Uint8Array;
  sha256: string;
  calibration: ScoreCalibration;
}

/**
 * Exports a rater whose calibration is computed from the exported model's own scores on
 * `reference` (a sample of the training distribution). Calibrating on the ONNX graph rather than
 * the tfjs forward pass means thresholds and percentiles match the scores the scoring function
 * will compute bit for bit.
 */
export async function exportCalibratedRater(
  opts: Omit<ExportRaterOptions, "calibration"> & {
    reference: readonly (string | Uint8Array)[];
  },
): Promise<CalibratedExport> {
  if (opts.reference.length === 0) {
    throw new ExportError(
      "calibration needs a non-empty reference sample of the training records",
    );
  }
  // The metadata doesn't affect the scores: export once with a placeholder to score the sample.
  const draft = exportRaterOnnx({ ...opts, calibration: quantileCalibration([0]) });
  const scores = await scoreWithOnnx(draft, opts.reference, opts.seqLen);
  const calibration = quantileCalibration(scores);
  const model = exportRaterOnnx({ ...opts, calibration });
  return { model, sha256: sha256Hex(model), calibration };
}

/**
 * The rater config as exports carry it: exports from before patching had one byte per position and
 * no `patch` field, so a missing `patch` reads as 1, not as today's default.
 */
const RaterMetadataConfigSchema = z.preprocess(
  (v) => v !== null && typeof v === "object" && !("patch" in v) ? { ...v, patch: 1 } : v,
  RaterConfigSchema,
) as unknown as z.ZodType<RaterConfig>;

/** Parses one JSON metadata value against its schema, naming the key on failure. */
function parseMeta<T>(
  props: Map<string, string>,
  key: string,
  schema: z.ZodType<T>,
): T {
  const raw = props.get(key);
  if (raw === undefined) {
    throw new NotADataRaterModelError(
      `DataRater metadata "${key}" is missing: the export is incomplete; re-export the rater`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new NotADataRaterModelError(
      `DataRater metadata "${key}" is not valid JSON: re-export the rater`,
    );
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new NotADataRaterModelError(
      `DataRater metadata "${key}" is invalid: ${
        r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
          .join("; ")
      }`,
    );
  }
  return r.data;
}

/** Element type and dims of a graph input/output as written in the ModelProto. */
function valueSignature(v: OnnxTypes.IValueInfoProto | undefined) {
  const t = v?.type?.tensorType;
  return {
    elemType: t?.elemType ?? 0,
    dims: (t?.shape?.dim ?? []).map((d) =>
      d.dimParam ? d.dimParam : d.dimValue == null ? "?" : Number(d.dimValue)
    ),
  };
}

/**
 * Reads and validates the DataRater metadata and I/O contract of a serialized ONNX model.
 * (onnxruntime's JS sessions don't expose custom metadata, so this reads the bytes: the caller
 * has them anyway to compute the model's sha256 and create the session.) Throws
 * {@link NotADataRaterModelError} saying what is wrong for anything but a DataRater export.
 */
export function readRaterMetadata(bytes: Uint8Array): RaterMetadata {
  let model: OnnxTypes.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new NotADataRaterModelError(
      `not an ONNX model (protobuf decoding failed: ${(e as Error).message}): ` +
        "pass the rater.onnx a DataRater training run exported",
    );
  }
  const props = new Map(
    (model.metadataProps ?? []).map((p) => [p.key ?? "", p.value ?? ""]),
  );
  const format = props.get(META_KEYS.format);
  if (format === undefined || !model.graph) {
    throw new NotADataRaterModelError(
      `not a DataRater model: ${
        model.graph ? "an ONNX model" : "a file"
      } without "${META_KEYS.format}" metadata; pass the rater.onnx a DataRater training run exported`,
    );
  }
  if (format !== RATER_FORMAT) {
    throw new NotADataRaterModelError(
      `DataRater model format "${format}" is not supported (this build reads "${RATER_FORMAT}"): ` +
        "re-export the rater with this version",
    );
  }
  const tokenizer = parseMeta(props, META_KEYS.tokenizer, TokenizerSpecSchema);
  const rater = parseMeta(props, META_KEYS.rater, RaterMetadataConfigSchema);
  const calibration = parseMeta(
    props,
    META_KEYS.calibration,
    ScoreCalibrationSchema,
  );
  const configSha256 = props.get(META_KEYS.configSha256) ?? "";
  if (!/^[0-9a-f]{64}$/.test(configSha256)) {
    throw new NotADataRaterModelError(
      `DataRater metadata "${META_KEYS.configSha256}" is missing or not a sha256 hex digest`,
    );
  }
  const seqLen = tokenizer.maxLength;
  const inputs = model.graph.input ?? [];
  const tokens = valueSignature(inputs.find((v) => v.name === TOKENS_INPUT));
  const mask = valueSignature(inputs.find((v) => v.name === MASK_INPUT));
  const scores = valueSignature(
    (model.graph.output ?? []).find((v) => v.name === SCORES_OUTPUT),
  );
  const ok = tokens.elemType === INT32 && tokens.dims.length === 2 &&
    tokens.dims[1] === seqLen && mask.elemType === FLOAT &&
    mask.dims.length === 2 && mask.dims[1] === seqLen &&
    scores.elemType === FLOAT && scores.dims.length === 1;
  if (!ok) {
    throw new NotADataRaterModelError(
      `DataRater model I/O does not match format ${RATER_FORMAT}: expected tokens int32 [N, ${seqLen}], ` +
        `mask float32 [N, ${seqLen}] → scores float32 [N]; got tokens ${
          JSON.stringify(tokens)
        }, mask ${JSON.stringify(mask)}, scores ${JSON.stringify(scores)}`,
    );
  }
  const scoring = props.has(META_KEYS.scoring)
    ? parseMeta(props, META_KEYS.scoring, ScoringSpecSchema)
    : { window: seqLen, stride: seqLen, aggregation: "mean" as const };
  if (scoring.window !== seqLen) {
    throw new NotADataRaterModelError(
      `DataRater metadata "${META_KEYS.scoring}" has window ${scoring.window}, but the model takes ` +
        `${seqLen} bytes: re-export the rater`,
    );
  }
  return { format, tokenizer, rater, calibration, configSha256, seqLen, scoring };
}
