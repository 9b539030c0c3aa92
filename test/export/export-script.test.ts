/**
 * `scripts/export.ts` (deno task export) end to end on file:// storage: a run's config, training
 * shard and checkpoint in, a calibrated rater.onnx and artifacts.json out.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { quantileCalibration } from "../../lib/calibration.ts";
import { parseTrainConfig, TrainerArtifactsSchema } from "../../lib/config.ts";
import { checkpointUri, encodeCheckpoint } from "../../training/checkpoint.ts";
import {
  exportCalibratedRater,
  readRaterMetadata,
  scoreWithOnnx,
  sha256Hex,
} from "../../training/export-onnx.ts";
import { configDigest as trainerConfigDigest } from "../../training/trainer.ts";
import { randomRaterParams, variedRecords } from "./fixtures.ts";

const SCRIPT = new URL("../../scripts/export.ts", import.meta.url).pathname;
const SEQ_LEN = 32;

let dir: string;
let configPath: string;
const texts = variedRecords(SEQ_LEN, 400, 31).map((r, i) =>
  typeof r === "string" && r.length > 0 ? r : `record ${i} ${"ab".repeat(i % 20)}`
);
let configDigest: string;

function runExport(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output().then((o) => ({
    code: o.code,
    stdout: new TextDecoder().decode(o.stdout),
    stderr: new TextDecoder().decode(o.stderr),
  }));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "export-script-"));
  const output = join(dir, "run");
  await Deno.mkdir(join(dir, "train"));
  await Deno.writeTextFile(
    join(dir, "train", "part-0000.jsonl"),
    texts.map((text, i) => JSON.stringify({ id: `r${i}`, text })).join("\n") + "\n",
  );
  const rawConfig = {
    data: { train: join(dir, "train") + "/", heldout: join(dir, "train") + "/" },
    output,
    seqLen: SEQ_LEN,
    rater: { kind: "transformer", dModel: 16, layers: 1, heads: 2, ffn: 32 },
    seed: 5,
  };
  configPath = join(dir, "run.yaml");
  await Deno.writeTextFile(configPath, JSON.stringify(rawConfig)); // JSON is YAML too
  const config = parseTrainConfig(rawConfig);
  configDigest = trainerConfigDigest(config);
  const eta = randomRaterParams(config.rater, SEQ_LEN, 1);
  const etaEma = randomRaterParams(config.rater, SEQ_LEN, 2);
  for (const step of [10, 20]) {
    const bytes = encodeCheckpoint({
      step,
      rngState: 1,
      configDigest,
      eta,
      etaEma,
      metaOpt: [],
      members: [],
      metaLoss: null,
    });
    const path = new URL(checkpointUri("file://" + output, step)).pathname;
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, bytes);
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("exportCalibratedRater", () => {
  it("calibrates on the exported model's own onnxruntime scores of the reference sample", async () => {
    const rater = parseTrainConfig({ data: { train: "x", heldout: "y" }, output: "o" }).rater;
    const params = randomRaterParams(rater, SEQ_LEN, 9);
    const reference = texts.slice(0, 200);
    const out = await exportCalibratedRater({
      params,
      rater,
      seqLen: SEQ_LEN,
      configDigest,
      reference,
    });
    const scores = await scoreWithOnnx(out.model, reference, SEQ_LEN);
    expect(out.calibration).toEqual(quantileCalibration(scores));
    expect(readRaterMetadata(out.model).calibration).toEqual(out.calibration);
    expect(out.sha256).toBe(sha256Hex(out.model));
  });
});

describe("deno task export", () => {
  it("exports the newest checkpoint's averaged rater with the run's digest and writes artifacts.json", async () => {
    const r = await runExport(["--config", configPath, "--reference", "300"]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(summary).toMatchObject({ step: 20, weights: "ema", configSha256: configDigest });

    const model = await Deno.readFile(join(dir, "run", "rater.onnx"));
    const meta = readRaterMetadata(model);
    expect(meta.rater).toMatchObject({ kind: "transformer", dModel: 16, layers: 1, heads: 2 });
    expect(meta.seqLen).toBe(SEQ_LEN);
    expect(meta.configSha256).toBe(configDigest);
    expect(meta.calibration.samples).toBe(300);

    const artifacts = TrainerArtifactsSchema.parse(
      JSON.parse(await Deno.readTextFile(join(dir, "run", "artifacts.json"))),
    );
    expect(artifacts.sha256).toBe(sha256Hex(model));
    expect(artifacts.onnx).toBe(summary.onnx);
    expect(artifacts.calibration).toEqual(meta.calibration);
    expect(await Deno.readTextFile(join(dir, "run", "rater.onnx.sha256"))).toBe(
      `${sha256Hex(model)}  rater.onnx\n`,
    );
  });

  it("writes only the model to --to, from the named checkpoint and its current weights", async () => {
    const to = join(dir, "elsewhere", "r10.onnx");
    const r = await runExport([
      "--config",
      configPath,
      "--checkpoint",
      checkpointUri("file://" + join(dir, "run"), 10),
      "--weights",
      "current",
      "--to",
      to,
    ]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ step: 10, weights: "current", onnx: to });
    // The whole training split (fewer than the default 10000) is the reference sample.
    expect(readRaterMetadata(await Deno.readFile(to)).calibration.samples).toBe(texts.length);
  });

  it("refuses a config other than the one the checkpoint was trained under", async () => {
    const other = join(dir, "other.json");
    const raw = JSON.parse(await Deno.readTextFile(configPath));
    await Deno.writeTextFile(other, JSON.stringify({ ...raw, rater: { ...raw.rater, heads: 4 } }));
    const r = await runExport([
      "--config",
      other,
      "--output",
      join(dir, "run"),
      "--to",
      join(dir, "x.onnx"),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/was written under a different config .*: pass the run's own config/);
  });

  it("exits 2 with a clear message when the run has no checkpoints", async () => {
    const r = await runExport(["--config", configPath, "--output", join(dir, "empty-run")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no checkpoints under .*empty-run\/checkpoints\/: train first/);
  });
});
