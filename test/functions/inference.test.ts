/**
 * The inference worker pool: scores equal onnxruntime's on the main thread, models are validated
 * as DataRater exports before a session opens, and failures are typed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  InferenceError,
  InferencePool,
  NotADataRaterModelError,
} from "../../functions/inference.ts";
import { encodeBatch } from "../../lib/bytes.ts";
import { buildTestModel, referenceTexts, scoreDirect, type TestModel } from "./fixtures.ts";

let model: TestModel;
let pool: InferencePool;

beforeAll(async () => {
  model = await buildTestModel({ kind: "transformer", seqLen: 32 });
  pool = new InferencePool({ workers: 2 });
});
afterAll(() => pool.close());

describe("InferencePool", () => {
  it("scores in Web Workers equal onnxruntime-node's scores on the main thread", async () => {
    const meta = await pool.load(model.sha256, model.bytes);
    expect(pool.activeRuntime).toBe("node");
    expect(meta.seqLen).toBe(32);
    expect(meta.calibration).toEqual(model.calibration);
    expect(pool.isLoaded(model.sha256)).toBe(true);
    const texts = referenceTexts(300, 9);
    const direct = await scoreDirect(model.bytes, texts, 32);
    // Several batches at once spread over both workers, answered in request order.
    const parts = await Promise.all(
      [0, 100, 200].map((o) => pool.score(model.sha256, encodeBatch(texts.slice(o, o + 100), 32))),
    );
    const scores = parts.flatMap((p) => [...p]);
    expect(scores.length).toBe(300);
    for (let i = 0; i < 300; i++) expect(Math.abs(scores[i] - direct[i])).toBeLessThan(1e-6);
  });

  it("rejects a model that is not a DataRater export with the reason, and forgets it", async () => {
    const err = await pool.load("f".repeat(64), new TextEncoder().encode("nope")).catch((e) => e);
    expect(err).toBeInstanceOf(NotADataRaterModelError);
    expect(err.message).toMatch(/^not an ONNX model/);
    expect(pool.isLoaded("f".repeat(64))).toBe(false);
  });

  it("scoring a model that was never loaded is an InferenceError", async () => {
    await expect(pool.score("e".repeat(64), encodeBatch(["x"], 32))).rejects.toThrowError(
      InferenceError,
    );
  });

  it("a batch whose shape does not match the model is an InferenceError from onnxruntime", async () => {
    await expect(pool.score(model.sha256, encodeBatch(["x"], 16))).rejects.toThrowError(
      InferenceError,
    );
  });

  it("the WASM runtime (onnxruntime-web, for hosts without native addons) gives the same scores", async () => {
    const web = new InferencePool({ runtime: "web" });
    try {
      await web.load(model.sha256, model.bytes);
      expect(web.activeRuntime).toBe("web");
      const texts = referenceTexts(64, 4);
      const scores = await web.score(model.sha256, encodeBatch(texts, 32));
      const direct = await scoreDirect(model.bytes, texts, 32);
      for (let i = 0; i < 64; i++) expect(Math.abs(scores[i] - direct[i])).toBeLessThan(1e-4);
    } finally {
      await web.close();
    }
  });

  it("unload closes the sessions; close rejects later calls", async () => {
    const other = new InferencePool();
    await other.load(model.sha256, model.bytes);
    await other.unload(model.sha256);
    expect(other.isLoaded(model.sha256)).toBe(false);
    await other.close();
    await expect(other.load(model.sha256, model.bytes)).rejects.toThrowError(/closed/);
  });
});
