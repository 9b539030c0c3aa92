/**
 * One export procedure (training/export.ts): the trainer's end-of-run export and `deno task export`
 * on the run's final checkpoint write the same rater.onnx, digest and artifacts.json, calibrated on
 * the exported graph's own scores of a sample drawn without replacement.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { quantileCalibration } from "../../lib/calibration.ts";
import { parseTrainConfig, raterSeqLen, TrainerArtifactsSchema } from "../../lib/config.ts";
import { FileStorage } from "../../lib/storage.ts";
import { datasetFromTexts, loadDataset, recordAt } from "../../training/data.ts";
import { exportRater, REFERENCE_SIZE, referenceSample } from "../../training/export.ts";
import { readRaterMetadata, scoreWithOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { datasetOptions, train, type TrainResult } from "../../training/trainer.ts";

const SCRIPT = new URL("../../scripts/export.ts", import.meta.url).pathname;
const storage = new FileStorage();
// More records than the reference sample, so the sample is a proper draw, not the whole split.
const TRAIN_RECORDS = REFERENCE_SIZE + 904;

let dir: string;
let output: string;
let configPath: string;
let rawConfig: Record<string, unknown>;
let trained: TrainResult;
const fromTrainer: Record<string, Uint8Array> = {};

const FILES = ["rater.onnx", "rater.onnx.sha256", "artifacts.json"];
const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"];
const text = (i: number) =>
  Array.from({ length: 1 + (i % 5) }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(" ") +
  ` ${i}`;

function lines(n: number, prefix: string, offset: number): string {
  return Array.from(
    { length: n },
    (_, i) => JSON.stringify({ id: `${prefix}${i}`, text: text(i + offset) }),
  )
    .join("\n") + "\n";
}

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "one-export-" });
  output = join(dir, "run");
  await Deno.mkdir(join(dir, "train"));
  await Deno.mkdir(join(dir, "heldout"));
  await Deno.writeTextFile(join(dir, "train", "shard-0.jsonl"), lines(TRAIN_RECORDS, "t", 0));
  await Deno.writeTextFile(join(dir, "heldout", "shard-0.jsonl"), lines(16, "h", 100_000));
  rawConfig = {
    data: { train: join(dir, "train") + "/", heldout: join(dir, "heldout") + "/" },
    output,
    seqLen: 16,
    rater: { kind: "mlp", dModel: 8, hidden: 8 },
    inner: { dModel: 8, layers: 1, heads: 2, ffn: 8, lr: 1e-2 },
    meta: { steps: 2, population: 2, unroll: 1, lr: 1e-2, innerBatch: 4, outerBatch: 4 },
    checkpointEvery: 2,
    seed: 11,
  };
  configPath = join(dir, "run.json");
  await Deno.writeTextFile(configPath, JSON.stringify(rawConfig));
  trained = await train(storage, parseTrainConfig(rawConfig), { progress: "none", log: () => {} });
  for (const f of FILES) fromTrainer[f] = await Deno.readFile(join(output, f));
});

afterAll(async () => {
  await Deno.remove(dir, { recursive: true });
});

describe("the trainer's export and deno task export", () => {
  it("write byte-identical rater.onnx and digest, and artifacts.json up to its finishedAt", async () => {
    expect(trained.exported).toBeDefined();
    for (const f of FILES) await Deno.remove(join(output, f));
    const weights = trained.exported!.chosen === "ema" ? "ema" : "current";
    const cli = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SCRIPT, "--config", configPath, "--weights", weights],
      stdout: "piped",
      stderr: "piped",
    }).output();
    expect(new TextDecoder().decode(cli.stderr)).not.toMatch(/error/i);
    expect(cli.code).toBe(0);
    expect(JSON.parse(new TextDecoder().decode(cli.stdout).trim())).toMatchObject({
      step: 2,
      sha256: trained.exported!.sha256,
    });

    const model = await Deno.readFile(join(output, "rater.onnx"));
    expect(model).toEqual(fromTrainer["rater.onnx"]);
    expect(await Deno.readFile(join(output, "rater.onnx.sha256"))).toEqual(
      fromTrainer["rater.onnx.sha256"],
    );
    const parse = (bytes: Uint8Array) =>
      TrainerArtifactsSchema.parse(JSON.parse(new TextDecoder().decode(bytes)));
    const a = parse(fromTrainer["artifacts.json"]);
    const b = parse(await Deno.readFile(join(output, "artifacts.json")));
    expect(Number.isNaN(Date.parse(a.finishedAt))).toBe(false);
    expect(Number.isNaN(Date.parse(b.finishedAt))).toBe(false);
    expect({ ...b, finishedAt: "" }).toEqual({ ...a, finishedAt: "" });
    expect(b.sha256).toBe(sha256Hex(model));
  });

  it("calibrates on the ONNX graph's own scores of a seeded sample drawn without replacement", async () => {
    const config = parseTrainConfig(rawConfig);
    const seqLen = raterSeqLen(config);
    const trainSet = await loadDataset(storage, config.data.train, {
      ...datasetOptions(config),
      name: "train",
    });
    const reference = referenceSample(trainSet, REFERENCE_SIZE, config.seed);
    const meta = readRaterMetadata(fromTrainer["rater.onnx"]);
    expect(meta.calibration.samples).toBe(REFERENCE_SIZE);
    expect(meta.calibration).toEqual(
      quantileCalibration(await scoreWithOnnx(fromTrainer["rater.onnx"], reference, seqLen)),
    );
  });
});

describe("referenceSample", () => {
  const ds = datasetFromTexts("train", Array.from({ length: 50 }, (_, i) => text(i)), 32);
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);

  it("draws distinct records, the same ones for the same seed", () => {
    const a = referenceSample(ds, 30, 3).map(decode);
    expect(a).toHaveLength(30);
    expect(new Set(a).size).toBe(30);
    expect(referenceSample(ds, 30, 3).map(decode)).toEqual(a);
    expect(referenceSample(ds, 30, 4).map(decode)).not.toEqual(a);
  });

  it("takes every record once when the split is no larger than the sample", () => {
    const all = Array.from({ length: ds.count }, (_, i) => decode(recordAt(ds, i)));
    expect(referenceSample(ds, 80, 3).map(decode).sort()).toEqual([...all].sort());
  });
});

describe("exportRater", () => {
  it("with `to` writes only the model there, no digest and no artifacts.json", async () => {
    const config = parseTrainConfig(rawConfig);
    const other = join(dir, "other-run");
    const to = join(dir, "elsewhere", "r.onnx");
    const ds = datasetFromTexts("train", ["one", "two", "three"], 16);
    const out = await exportRater(storage, {
      config,
      params: trained.eta,
      train: ds,
      output: other,
      to,
    });
    expect(out.uri).toBe(to);
    expect(sha256Hex(await Deno.readFile(to))).toBe(out.sha256);
    expect(out.calibration.samples).toBe(3);
    expect(await storage.stat(to + ".sha256")).toBeNull();
    expect(await storage.stat(join(other, "artifacts.json"))).toBeNull();
  });
});
