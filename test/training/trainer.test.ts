/**
 * The trainer's bookkeeping: exact resume, the population's staggered resets and advancing
 * learners, the export's artifacts, and clear errors for bad configs and bad data.
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  configDigest,
  ConfigError,
  parseTrainConfig,
  TrainerArtifactsSchema,
  TrainerProgressSchema,
} from "../../lib/config.ts";
import { FileStorage } from "../../lib/storage.ts";
import { sha256Hex } from "../../training/export-onnx.ts";
import {
  checkpointUri,
  decodeCheckpoint,
  encodeCheckpoint,
  listCheckpoints,
} from "../../training/checkpoint.ts";
import { DataError, loadDataset } from "../../training/data.ts";
import { dueForReset, resetOffset } from "../../training/population.ts";
import { train, type TrainResult } from "../../training/trainer.ts";
import { main } from "../../training/main.ts";
import type { ParamArrays } from "../../training/nn.ts";

const storage = new FileStorage();
let dir: string;

function lines(records: unknown[]): string {
  return records.map((r) => JSON.stringify(r)).join("\n") + "\n";
}

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "trainer-test-" });
  const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
  const text = (i: number) =>
    Array.from({ length: 6 }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(" ");
  await Deno.mkdir(join(dir, "train"));
  await Deno.mkdir(join(dir, "heldout"));
  const train = Array.from({ length: 40 }, (_, i) => ({ id: `t${i}`, text: text(i) }));
  train.push({ id: "empty", text: "" });
  await Deno.writeTextFile(join(dir, "train", "shard-0.jsonl"), lines(train) + "not json\n");
  // A line with invalid UTF-8 bytes inside the text.
  const bad = new TextEncoder().encode('{"id":"bad","text":"caf');
  await Deno.writeFile(
    join(dir, "train", "shard-1.jsonl"),
    new Uint8Array([...bad, 0xc3, 0x28, ...new TextEncoder().encode('"}\n')]),
  );
  await Deno.writeTextFile(
    join(dir, "heldout", "shard-0.jsonl"),
    lines(Array.from({ length: 12 }, (_, i) => ({ id: `h${i}`, text: text(100 + i) }))),
  );
});

function config(output: string, extra: Record<string, unknown> = {}) {
  return parseTrainConfig({
    data: { train: join(dir, "train") + "/", heldout: join(dir, "heldout") + "/" },
    output,
    seqLen: 16,
    rater: { kind: "mlp", dModel: 8, hidden: 8 },
    inner: { dModel: 8, layers: 1, heads: 2, ffn: 8, lr: 1e-2 },
    meta: {
      steps: 6,
      population: 3,
      resetEvery: 4,
      unroll: 2,
      lr: 1e-2,
      warmupSteps: 2,
      innerBatch: 4,
      outerBatch: 4,
    },
    checkpointEvery: 2,
    ...extra,
  });
}

function expectSameArrays(a: ParamArrays, b: ParamArrays) {
  expect(Object.keys(a)).toEqual(Object.keys(b));
  for (const k of Object.keys(a)) expect(b[k].values, k).toEqual(a[k].values);
}

describe("meta-training run", () => {
  let uninterrupted: TrainResult;
  let outputA: string;

  beforeAll(async () => {
    outputA = join(dir, "run-a");
    uninterrupted = await train(storage, config(outputA), { progress: "none" });
  });

  it("resuming after an interruption ends with exactly the parameters of an uninterrupted run", async () => {
    const outputB = join(dir, "run-b");
    const first = await train(storage, config(outputB), { progress: "none", stopAfter: 3 });
    expect(first.step).toBe(3);
    expect(first.exported).toBeUndefined();
    const resumed = await train(storage, config(outputB), { progress: "none" });
    expect(resumed.step).toBe(6);
    expectSameArrays(uninterrupted.eta, resumed.eta);
    expectSameArrays(uninterrupted.etaEma, resumed.etaEma);
    for (let i = 0; i < 3; i++) {
      expectSameArrays(uninterrupted.members[i].params, resumed.members[i].params);
    }
    expect(resumed.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(resumed.metrics.map((m) => m.metaLoss)).toEqual(
      uninterrupted.metrics.map((m) => m.metaLoss),
    );
  });

  it("resets members on staggered steps and keeps training the others", () => {
    // resetEvery 4, 3 members: offsets 0, 1, 2 → member 2 resets at step 2, member 1 at 3, member 0 at 4.
    expect(uninterrupted.members.map((m) => m.age)).toEqual([2, 3, 4]);
    expect(uninterrupted.members.map((m) => m.resets)).toEqual([1, 1, 1]);
    const ages = uninterrupted.metrics.map((m) => m.ages);
    expect(ages[0]).toEqual([1, 1, 1]);
    expect(ages[1]).toEqual([2, 2, 2]);
    expect(ages[2]).toEqual([3, 3, 1]); // member 2 was re-initialised at the start of step 3
    expect(ages[3]).toEqual([4, 1, 2]);
    expect(ages[4]).toEqual([1, 2, 3]);
    // A learner's inner Adam took K = 2 updates per meta-step of its life: it advances.
    for (const m of uninterrupted.members) expect(m.opt[0].count).toBe(2 * m.age);
  });

  it("moves the learners' parameters between checkpoints (they persist and train)", async () => {
    const cps = await listCheckpoints(storage, outputA);
    expect(cps.map((c) => c.step)).toEqual([2, 4, 6]);
    const at4 = decodeCheckpoint(await storage.readBytes(checkpointUri(outputA, 4)));
    const at6 = decodeCheckpoint(await storage.readBytes(checkpointUri(outputA, 6)));
    // Member 2 was not reset between steps 4 and 6: same lineage, new values.
    expect(at6.members[2].resets).toBe(at4.members[2].resets);
    expect(at6.members[2].age).toBe(at4.members[2].age + 2);
    expect(at6.members[2].params["head.w"].values).not.toEqual(
      at4.members[2].params["head.w"].values,
    );
  });

  it("exports rater.onnx with its sha256, artifacts.json and progress phase done", async () => {
    expect(uninterrupted.exported).toBeDefined();
    expect(["final", "ema"]).toContain(uninterrupted.exported!.chosen);
    const onnx = await Deno.readFile(join(outputA, "rater.onnx"));
    const sha = sha256Hex(onnx);
    expect((await Deno.readTextFile(join(outputA, "rater.onnx.sha256"))).split(/\s/)[0]).toBe(sha);
    const artifacts = TrainerArtifactsSchema.parse(
      JSON.parse(await Deno.readTextFile(join(outputA, "artifacts.json"))),
    );
    expect(artifacts.sha256).toBe(sha);
    // All 41 usable train records (40 + the invalid-UTF-8 one) are the reference sample.
    expect(artifacts.calibration.samples).toBe(41);
    const progress = TrainerProgressSchema.parse(
      JSON.parse(await Deno.readTextFile(join(outputA, "progress.json"))),
    );
    expect(progress.phase).toBe("done");
    expect(progress.step).toBe(6);
    // The operator compares this with a new spec's digest before reusing the output.
    expect(progress.configDigest).toBe(configDigest(config(outputA)));
    const metrics = (await Deno.readTextFile(join(outputA, "metrics.jsonl"))).trim().split("\n");
    expect(metrics).toHaveLength(6);
    expect(Object.keys(JSON.parse(metrics[0]))).toEqual(
      expect.arrayContaining(["metaLoss", "innerLoss", "scoreMean", "scoreStd"]),
    );
  });

  it("gives identical parameters with the population spread over two workers", async () => {
    const outputW = join(dir, "run-workers");
    const w = await train(storage, config(outputW, { workers: 2 }), {
      progress: "none",
      stopAfter: 2,
    });
    const at2 = decodeCheckpoint(await storage.readBytes(checkpointUri(outputA, 2)));
    expectSameArrays(at2.eta, w.eta);
    for (let i = 0; i < 3; i++) expectSameArrays(at2.members[i].params, w.members[i].params);
  });

  it("releases every tensor it allocated once the run is over", async () => {
    const before = tf.memory().numTensors;
    await train(storage, config(join(dir, "run-leak"), { checkpointEvery: 100 }), {
      progress: "none",
      steps: 3,
      export: false,
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  it("refuses to resume a run under a different configuration", async () => {
    const other = config(outputA, { seed: 7 });
    await expect(train(storage, other, { progress: "none", steps: 8 })).rejects.toThrow(
      /different configuration/,
    );
  });
});

describe("population schedule", () => {
  it("spreads reset steps evenly over the period, one member at a time", () => {
    const n = 4, every = 8;
    expect([0, 1, 2, 3].map((i) => resetOffset(i, n, every))).toEqual([0, 2, 4, 6]);
    const resetSteps = [0, 1, 2, 3].map((i) =>
      Array.from({ length: 17 }, (_, s) => s).filter((s) => dueForReset(s, i, n, every))
    );
    expect(resetSteps).toEqual([[8, 16], [6, 14], [4, 12], [2, 10]]);
    expect(dueForReset(0, 0, n, every)).toBe(false);
  });
});

describe("checkpoint format", () => {
  it("round-trips every array and number bit for bit", () => {
    const arr = (v: number[]) => ({ shape: [v.length], values: Float32Array.from(v) });
    const state = {
      step: 5,
      rngState: 123456,
      configDigest: "abc",
      eta: { w: arr([1.5, -2, Math.PI]) },
      etaEma: { w: arr([0, 1e-30, -0]) },
      metaOpt: [[{ count: 5, slots: { mu: { w: arr([1, 2, 3]) } } }]],
      members: [{ params: { p: arr([7]) }, opt: [{ count: 10, slots: {} }], age: 5, resets: 0 }],
      metaLoss: 3.25,
    };
    const back = decodeCheckpoint(encodeCheckpoint(state));
    expect(back).toEqual(state);
  });
});

describe("errors", () => {
  it("names the bad field and what was expected in a config error", () => {
    let err: unknown;
    try {
      config(join(dir, "x"), { meta: { population: 0 }, rater: { kind: "lstm" } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const paths = (err as ConfigError).issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(["meta.population", "rater.kind"]));
  });

  it("loads records, skipping bad lines and empty texts, keeping invalid UTF-8", async () => {
    const ds = await loadDataset(storage, join(dir, "train") + "/", { seqLen: 16, name: "train" });
    expect(ds.count).toBe(41);
    expect(ds.stats.skipped).toEqual({ "bad-json": 1 });
    expect(ds.stats.emptyText).toBe(1);
    expect(ds.stats.invalidUtf8).toBe(1);
  });

  it("says the data prefix is empty when there is no data", async () => {
    await expect(loadDataset(storage, join(dir, "nothing") + "/", { seqLen: 16, name: "train" }))
      .rejects.toThrow(/train|no data at/);
    await expect(loadDataset(storage, join(dir, "nothing") + "/", { seqLen: 16, name: "train" }))
      .rejects.toBeInstanceOf(DataError);
  });

  it("says there are no usable records when every line is invalid", async () => {
    const p = join(dir, "bad.jsonl");
    await Deno.writeTextFile(p, 'nope\n{"id":"a","text":""}\n{"id":"b"}\n');
    await expect(loadDataset(storage, p, { seqLen: 16, name: "heldout" })).rejects.toThrow(
      /heldout data at .* has no usable records .*1 bad-json, 1 missing-text, 1 empty text/,
    );
  });

  it("exits non-zero with the reason for a bad config file or unreachable data", async () => {
    const bad = join(dir, "bad.yaml");
    await Deno.writeTextFile(bad, "data: {train: x}\noutput: y\nmeta: {population: -1}\n");
    expect(await main(["--config", bad], storage)).toBe(2);
    const missing = join(dir, "missing.json");
    await Deno.writeTextFile(
      missing,
      JSON.stringify({
        data: { train: join(dir, "absent") + "/", heldout: join(dir, "absent") + "/" },
        output: join(dir, "run-missing"),
      }),
    );
    expect(await main(["--config", missing], storage)).toBe(3);
    expect(await main([], storage)).toBe(2);
  });
});
