/**
 * Test fixtures for the scoring function: real DataRater ONNX exports (random weights, calibrated
 * on their own scores of a reference sample, as a trained export is) and record shards.
 */
import * as ort from "onnxruntime-node";
import { encodeBatch } from "../../lib/bytes.ts";
import { quantileCalibration, type ScoreCalibration } from "../../lib/calibration.ts";
import { RaterConfigSchema } from "../../lib/config.ts";
import {
  aggregateScores,
  type Aggregation,
  cutWindows,
  DEFAULT_SCORE_CAP_BYTES,
} from "../../lib/windows.ts";
import { exportRaterOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";
import { type AppOptions, createApp, type ScoringApp } from "../../functions/app.ts";
import { startTempS3, stopTempS3, type TempS3 } from "../support/temp-s3.ts";
import { createStorage, type UriStorage } from "../../lib/storage.ts";

/** A calibrated DataRater export and its digest. */
export interface TestModel {
  bytes: Uint8Array;
  sha256: string;
  calibration: ScoreCalibration;
  seqLen: number;
}

/** Varied reference texts: prose-like, numeric, repeated characters, empty. */
export function referenceTexts(n: number, seed = 7): string[] {
  const rng = new Rng(seed);
  const words = ["the", "rater", "scores", "records", "data", "of", "junk", "and", "clean", "text"];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const len = 1 + Math.floor(rng.next() * 40);
    const parts: string[] = [];
    for (let j = 0; j < len; j++) {
      const r = rng.next();
      parts.push(
        r < 0.7
          ? words[Math.floor(rng.next() * words.length)]
          : r < 0.85
          ? String(Math.floor(rng.next() * 1e6))
          : "#".repeat(1 + Math.floor(rng.next() * 8)),
      );
    }
    out.push(parts.join(" "));
  }
  return out;
}

/** Scores texts with onnxruntime directly (the reference the endpoint must agree with). */
export async function scoreDirect(
  bytes: Uint8Array,
  texts: (string | Uint8Array)[],
  seqLen: number,
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  try {
    const b = encodeBatch(texts, seqLen);
    const out = await session.run({
      tokens: new ort.Tensor("int32", b.tokens, [b.batch, seqLen]),
      mask: new ort.Tensor("float32", b.mask, [b.batch, seqLen]),
    });
    return new Float32Array(out.scores.data as Float32Array);
  } finally {
    await session.release();
  }
}

/**
 * Whole-record scores the endpoint must agree with, computed independently of functions/: each
 * text's UTF-8 bytes up to `cap` cut by lib/windows.ts, the windows scored by onnxruntime directly
 * ({@link scoreDirect}), aggregated per record. Also returns each record's spans.
 */
export async function scoreRecordsDirect(
  bytes: Uint8Array,
  texts: string[],
  seqLen: number,
  options: { stride?: number; aggregation?: Aggregation; cap?: number } = {},
): Promise<{ scores: Float32Array; spans: [number, number, number][][]; truncated: boolean[] }> {
  const plan = {
    window: seqLen,
    stride: options.stride ?? seqLen,
    cap: options.cap ?? DEFAULT_SCORE_CAP_BYTES,
  };
  const encoder = new TextEncoder();
  const windowBytes: Uint8Array[] = [];
  const cuts = texts.map((t) => cutWindows(encoder.encode(t), plan, windowBytes));
  const windowScores = await scoreDirect(bytes, windowBytes, seqLen);
  let at = 0;
  const scores = new Float32Array(texts.length);
  const spans = cuts.map((c, i) => {
    const ws = windowScores.subarray(at, at + c.spans.length);
    at += c.spans.length;
    scores[i] = aggregateScores(ws, c.spans, options.aggregation ?? "mean");
    return c.spans.map(([s, e], j) => [s, e, ws[j]] as [number, number, number]);
  });
  return { scores, spans, truncated: cuts.map((c) => c.truncated) };
}

/**
 * Builds a DataRater export from random weights, calibrated on its own whole-record scores of
 * {@link referenceTexts} (what training does with a reference sample).
 */
export async function buildTestModel(
  options: { kind?: "mlp" | "transformer"; seqLen?: number; seed?: number; dModel?: number } = {},
): Promise<TestModel> {
  const seqLen = options.seqLen ?? 64;
  const rater = RaterConfigSchema.parse({
    kind: options.kind ?? "mlp",
    dModel: options.dModel ?? 16,
    layers: 1,
    heads: 2,
    ffn: 32,
    hidden: 16,
  });
  const params = initRaterArrays(rater, seqLen, new Rng(options.seed ?? 1));
  const configDigest = sha256Hex(JSON.stringify({ rater, seqLen, seed: options.seed ?? 1 }));
  const provisional = exportRaterOnnx({
    params,
    rater,
    seqLen,
    calibration: quantileCalibration([0, 1]),
    configDigest,
  });
  const reference = (await scoreRecordsDirect(provisional, referenceTexts(512), seqLen)).scores;
  const calibration = quantileCalibration(reference);
  const bytes = exportRaterOnnx({ params, rater, seqLen, calibration, configDigest });
  return { bytes, sha256: sha256Hex(bytes), calibration, seqLen };
}

/** JSON Lines of `{id, text}` records. */
export function jsonl(records: { id: string | number; text: string }[]): string {
  return records.map((r) => JSON.stringify(r)).join("\n") + "\n";
}

/** POSTs a body (an object, or a raw string) to `/v1/score`; the status and the JSON answer. */
export async function postScore(
  app: ScoringApp,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const res = await app.request("/v1/score", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/**
 * Apps for one test file, each over `defaults()` (read at creation: the file's root is only known
 * after its beforeAll) with per-test overrides; `closeAll` in the file's afterAll.
 */
export function appPool(defaults: () => AppOptions) {
  const apps: ScoringApp[] = [];
  return {
    app(options: Partial<AppOptions> = {}): ScoringApp {
      const a = createApp({ ...defaults(), ...options });
      apps.push(a);
      return a;
    },
    async closeAll() {
      for (const a of apps) await a.close();
    },
  };
}

/**
 * Score requests with the model at `<root>model.onnx` and a threshold-0 policy, each to an output
 * of its own under `<root>out/` (so no test sees another's manifest as cached).
 */
export function thresholdRequests(root: () => string) {
  let outputs = 0;
  return (input: string, overrides: Record<string, unknown> = {}) => ({
    model: `${root()}model.onnx`,
    input,
    output: `${root()}out/m${outputs++}.manifest.jsonl`,
    policy: { kind: "threshold", threshold: 0 },
    ...overrides,
  });
}

/** A {@link TempS3} with a model written to `modelUri`. */
export interface S3Rig extends TempS3 {
  model: TestModel;
}

/** Starts an {@link S3Rig}; {@link stopS3Rig} undoes it. */
export async function startS3Rig(options: {
  prefix: string;
  buckets: string[];
  modelUri: string;
  model: Parameters<typeof buildTestModel>[0];
}): Promise<S3Rig> {
  const temp = await startTempS3(options.prefix, options.buckets);
  const model = await buildTestModel(options.model);
  await temp.storage.write(options.modelUri, model.bytes);
  return { ...temp, model };
}

/** Closes `app` (before the storage it reads), then the rest of the rig. */
export async function stopS3Rig(rig: S3Rig | undefined, app: ScoringApp | undefined) {
  await app?.close();
  await stopTempS3(rig);
}

/** A temporary folder as the only allowed root, a test model in it, and an app over it. */
export interface FileRig {
  tmp: string;
  storage: UriStorage;
  modelUri: string;
  app: ScoringApp;
}

/** Starts a {@link FileRig} (mlp rater, seqLen 32, batches of 16); {@link stopFileRig} undoes it. */
export async function startFileRig(prefix: string): Promise<FileRig> {
  const tmp = await Deno.makeTempDir({ prefix });
  const storage = createStorage();
  const model = await buildTestModel({ kind: "mlp", seqLen: 32 });
  const modelUri = `file://${tmp}/rater.onnx`;
  await storage.write(modelUri, model.bytes);
  const app = createApp({ storage, allowedRoots: [`file://${tmp}/`], batchSize: 16 });
  return { tmp, storage, modelUri, app };
}

/** Closes the app (before the storage it reads), then the storage, and removes the folder. */
export async function stopFileRig(rig: FileRig | undefined) {
  if (!rig) return;
  await rig.app.close();
  rig.storage.close();
  await Deno.remove(rig.tmp, { recursive: true });
}
