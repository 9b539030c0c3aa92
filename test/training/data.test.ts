/**
 * What the models see of a drawn record: the learners a window at a uniform offset (random windows,
 * the default) or the head, and the rater the same window (or, with a longer view, the window
 * around it); and the meta-step rates the rater's view while the learner trains on its own.
 */
import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import { InnerConfigSchema, RaterConfigSchema, TrainConfigSchema } from "../../lib/config.ts";
import { useBackend } from "../../training/backend.ts";
import { datasetFromTexts, loadDataset, recordAt, sampleBatch } from "../../training/data.ts";
import { parseTrainConfig, raterSeqLen } from "../../lib/config.ts";
import { readRaterMetadata } from "../../training/export-onnx.ts";
import { train } from "../../training/trainer.ts";
import { join } from "node:path";
import { initLmArrays } from "../../training/lm.ts";
import { type MetaBatches, metaGradient } from "../../training/meta-step.ts";
import { disposeParams, toTensors } from "../../training/params.ts";
import { innerOptimizer } from "../../training/optim.ts";
import { initRaterArrays, raterScores } from "../../training/rater.ts";
import { Rng } from "../../training/rng.ts";
import { FileStorage } from "../../lib/storage.ts";
import { DEFAULT_SCORE_CAP_BYTES } from "../../lib/windows.ts";

const storage = new FileStorage();

const seqLen = 8;
const dec = new TextDecoder();
const rows = (b: { tokens: Int32Array; lengths: Int32Array }) =>
  Array.from(
    { length: b.lengths.length },
    (_, i) => dec.decode(Uint8Array.from(b.tokens.subarray(i * seqLen, i * seqLen + b.lengths[i]))),
  );

beforeAll(async () => {
  await useBackend("cpu");
});

describe("sampleBatch", () => {
  const long = "0123456789abcdefghijklmnopqrstuvwxyz"; // 36 bytes
  const texts = [long, "short"];

  it("with random windows the rater rates exactly the windows the learner trains on, from anywhere in the record", () => {
    const ds = datasetFromTexts("t", texts, seqLen, 1024);
    const rng = new Rng(1);
    const offsets = new Set<number>();
    for (let draw = 0; draw < 200; draw++) {
      const { lm, rater, starts } = sampleBatch(ds, 4, rng, seqLen, "random");
      // One batch: the rater's score of an example is computed from the learner's own bytes.
      expect(rater).toBe(lm);
      const windows = rows(lm);
      for (let i = 0; i < 4; i++) {
        const source = windows[i] === "short" ? "short" : long;
        // The window is a seqLen-byte piece of the same record (the whole record when shorter).
        expect(windows[i].length).toBe(Math.min(seqLen, source.length));
        expect(windows[i]).toBe(source.slice(starts[i], starts[i] + seqLen));
        if (source === long) offsets.add(starts[i]);
        else expect(starts[i]).toBe(0);
      }
    }
    // Every offset 0 … 36 − 8 is drawn: the tail of a long record is trained on and rated too.
    expect([...offsets].sort((a, b) => a - b)).toEqual(
      Array.from({ length: long.length - seqLen + 1 }, (_, i) => i),
    );
  });

  it("with random windows over a long record most windows lie past its head", () => {
    const record = Array.from({ length: 500 }, (_, i) => String.fromCharCode(97 + (i % 26)))
      .join(""); // 500 bytes
    const ds = datasetFromTexts("t", [record], seqLen, 16384);
    const { lm, rater, starts } = sampleBatch(ds, 400, new Rng(5), seqLen, "random");
    expect(rater).toBe(lm);
    const past = Array.from(starts).filter((s) => s >= 250).length;
    // Uniform starts over 0 … 492: about half lie in the record's second half.
    expect(past).toBeGreaterThan(150);
    expect(past).toBeLessThan(250);
    expect(Math.max(...starts)).toBeGreaterThan(480);
    rows(lm).forEach((w, i) => expect(w).toBe(record.slice(starts[i], starts[i] + seqLen)));
  });

  it("gives a longer rater view the window around the learner's, moved back at the record's end", () => {
    const ds = datasetFromTexts("t", texts, seqLen, 1024);
    const rng = new Rng(6);
    const froms = new Set<number>();
    for (let draw = 0; draw < 100; draw++) {
      const { lm, rater, starts } = sampleBatch(ds, 4, rng, seqLen, "random", 20);
      expect(rater.seqLen).toBe(20);
      const windows = rows(lm);
      for (let i = 0; i < 4; i++) {
        const view = dec.decode(
          Uint8Array.from(rater.tokens.subarray(i * 20, i * 20 + rater.lengths[i])),
        );
        if (view === "short") {
          expect(windows[i]).toBe("short");
          continue;
        }
        const from = Math.min(starts[i], long.length - 20);
        froms.add(from);
        expect(view).toBe(long.slice(from, from + 20));
        expect(view).toContain(windows[i]);
      }
    }
    expect(Math.max(...froms)).toBe(long.length - 20);
    expect(froms.size).toBe(long.length - 20 + 1);
  });

  it("with head windows the learner sees exactly what the rater sees", () => {
    const ds = datasetFromTexts("t", texts, seqLen, 1024);
    const { lm, rater } = sampleBatch(ds, 6, new Rng(2), seqLen, "head");
    expect(lm).toBe(rater);
    expect(rows(lm).every((r) => r === long.slice(0, seqLen) || r === "short")).toBe(true);
  });

  it("gives the rater a longer head than the learners when rater.seqLen is larger", () => {
    const ds = datasetFromTexts("t", texts, seqLen, 1024);
    const { lm, rater } = sampleBatch(ds, 6, new Rng(3), seqLen, "head", 20);
    expect(rater.seqLen).toBe(20);
    expect(lm.seqLen).toBe(seqLen);
    for (let i = 0; i < 6; i++) {
      const view = dec.decode(
        Uint8Array.from(rater.tokens.subarray(i * 20, i * 20 + rater.lengths[i])),
      );
      expect(view === long.slice(0, 20) || view === "short").toBe(true);
    }
    expect(rows(lm).every((r) => r === long.slice(0, seqLen) || r === "short")).toBe(true);
  });

  it("is a function of the generator's state (a resumed run draws the same batches)", () => {
    const ds = datasetFromTexts("t", texts, seqLen, 1024);
    const a = sampleBatch(ds, 5, new Rng(9), seqLen, "random");
    const b = sampleBatch(ds, 5, new Rng(9), seqLen, "random");
    expect(a.lm.tokens).toEqual(b.lm.tokens);
    expect(a.rater.tokens).toEqual(b.rater.tokens);
  });

  it("defaults to random windows keeping up to the scorer's 16 KiB cap of each record", () => {
    const c = TrainConfigSchema.parse({ data: { train: "a/", heldout: "b/" }, output: "o/" });
    expect(c.data.window).toBe("random");
    expect(c.data.maxRecordBytes).toBe(16384);
    expect(c.data.maxRecordBytes).toBe(DEFAULT_SCORE_CAP_BYTES);
    expect(() =>
      TrainConfigSchema.parse({
        data: { train: "a/", heldout: "b/", window: "middle" },
        output: "o/",
      })
    ).toThrow(/window/);
  });
});

describe("random windows through the loader and the trainer", () => {
  const long = (i: number) => `record ${i}: ` + "lorem ipsum dolor sit amet ".repeat(20); // ~550 B

  it("loadDataset keeps up to maxBytes of each record (the head only by default)", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const lines = [0, 1, 2].map((i) => JSON.stringify({ id: String(i), text: long(i) }));
      await Deno.writeTextFile(join(dir, "a.jsonl"), lines.join("\n") + "\n");
      const heads = await loadDataset(storage, dir + "/", { seqLen: 16, name: "train" });
      const whole = await loadDataset(storage, dir + "/", {
        seqLen: 16,
        name: "train",
        maxBytes: 100,
      });
      expect(recordAt(heads, 1).length).toBe(16);
      expect(recordAt(whole, 1).length).toBe(100);
      expect(dec.decode(recordAt(whole, 1))).toBe(long(1).slice(0, 100));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  it("meta-trains with random windows and resumes to the same parameters", async () => {
    const texts = Array.from({ length: 40 }, (_, i) => long(i));
    const datasets = {
      train: datasetFromTexts("train", texts.slice(0, 30), seqLen, 1024),
      heldout: datasetFromTexts("heldout", texts.slice(30), seqLen, 1024),
    };
    const run = async (output: string, stopAfter?: number) =>
      await train(
        storage,
        parseTrainConfig({
          data: { train: "unused", heldout: "unused", window: "random" },
          output,
          seqLen,
          backend: "cpu",
          rater: { kind: "mlp", dModel: 8, hidden: 8 },
          inner: { dModel: 8, layers: 1, heads: 2, ffn: 8 },
          meta: { steps: 4, population: 2, resetEvery: 3, innerBatch: 4, outerBatch: 4 },
          checkpointEvery: 2,
        }),
        { datasets, export: false, progress: "none", stopAfter },
      );
    const a = await Deno.makeTempDir();
    const b = await Deno.makeTempDir();
    try {
      const straight = await run(a);
      await run(b, 2); // interrupted after a checkpoint
      const resumed = await run(b);
      expect(resumed.step).toBe(4);
      for (const [name, v] of Object.entries(straight.eta)) {
        expect(Array.from(resumed.eta[name].values), name).toEqual(Array.from(v.values));
      }
    } finally {
      await Deno.remove(a, { recursive: true });
      await Deno.remove(b, { recursive: true });
    }
  });
});

describe("a rater with its own view length", () => {
  it("trains on a longer view than the learners and exports that length for the scorer", async () => {
    const texts = Array.from({ length: 30 }, (_, i) => `record ${i} ` + "abc ".repeat(10));
    const output = await Deno.makeTempDir();
    try {
      const config = parseTrainConfig({
        data: { train: "unused", heldout: "unused" },
        output,
        seqLen,
        backend: "cpu",
        rater: { kind: "transformer", dModel: 8, layers: 1, heads: 2, ffn: 8, seqLen: 24 },
        inner: { dModel: 8, layers: 1, heads: 2, ffn: 8 },
        meta: { steps: 2, population: 2, innerBatch: 4, outerBatch: 4 },
      });
      expect(raterSeqLen(config)).toBe(24);
      await train(storage, config, {
        datasets: {
          train: datasetFromTexts("train", texts.slice(0, 20), seqLen, 24),
          heldout: datasetFromTexts("heldout", texts.slice(20), seqLen, 24),
        },
        progress: "none",
      });
      const meta = readRaterMetadata(await Deno.readFile(join(output, "rater.onnx")));
      expect(meta.seqLen).toBe(24);
      expect(meta.rater.seqLen).toBe(24);
    } finally {
      await Deno.remove(output, { recursive: true });
    }
  });
});

describe("meta-step with a separate rater view", () => {
  it("rates the rater's view and trains the learner on its own", async () => {
    const rater = RaterConfigSchema.parse({ kind: "mlp", dModel: 8, hidden: 8 });
    const inner = InnerConfigSchema.parse({ dModel: 8, layers: 1, heads: 2, ffn: 8 });
    const rng = new Rng(4);
    const eta = toTensors(initRaterArrays(rater, seqLen, rng));
    const params = toTensors(initLmArrays(inner, seqLen, rng));
    const learner = { params, opt: innerOptimizer(inner).init(params) };
    const settings = { rater, inner };
    const windows = encodeBatch(["aaaabbbb", "ccccdddd", "eeeeffff"], seqLen);
    const heads = encodeBatch(["zz", "yyyyyyyy", "x"], seqLen);
    const outer = encodeBatch(["abcdefgh"], seqLen);

    const run = async (b: MetaBatches) => {
      const r = await metaGradient(eta, learner, b, settings);
      const grads = Object.fromEntries(
        Object.entries(r.grads).map(([k, v]) => [k, Array.from(v.dataSync())]),
      );
      const theta = Array.from(Object.values(r.next.params)[0].dataSync());
      disposeParams(r.grads);
      disposeParams(r.next.params);
      return { scores: Array.from(r.scores[0]), grads, theta, metaLoss: r.metaLoss };
    };
    const split = await run({ inner: [windows], raterInner: [heads], outer });
    const same = await run({ inner: [windows], outer });
    const explicit = await run({ inner: [windows], raterInner: [windows], outer });

    const expected = tf.tidy(() => Array.from(raterScores(eta, rater, heads).dataSync()));
    split.scores.forEach((s, i) => expect(s).toBeCloseTo(expected[i], 5));
    expect(split.scores).not.toEqual(same.scores);
    // Naming the learner's own batch as the rater's view changes nothing.
    expect(explicit).toEqual(same);
    await expect(metaGradient(eta, learner, { inner: [windows], raterInner: [], outer }, settings))
      .rejects.toThrow(/raterInner has 0 batches for 1 inner/);
  });
});
