/**
 * Which objects under a prefix are record shards: one pattern (`lib/records.ts`) for scoring,
 * training and the evaluation, so a shard that is scored is also trained on and evaluated.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { encodeJsonl, encodeJsonlGz, isShardName, SHARD_PATTERN } from "../../lib/records.ts";
import { FileStorage, MemoryStorage } from "../../lib/storage.ts";
import { listShards, loadDataset } from "../../training/data.ts";
import { loadRecords } from "../../evaluation/data.ts";
import { manifestUriFor, scoreAll, SHARD_PATTERN as SCORE_PATTERN } from "../../scripts/score.ts";

const ACCEPTED = [
  "part-0.jsonl",
  "part-0.jsonl.gz",
  "part-0.ndjson",
  "part-0.ndjson.gz",
  "part-0.parquet",
];
const REJECTED = [
  "_done.json",
  "part-0.json",
  "part-0.json.gz",
  "part-0.gz",
  "part-0.parquet.gz",
  "part-0.jsonl.bak",
  "part-0.jsonlx",
  "README.txt",
  "jsonl",
];

const files = new FileStorage();

describe("isShardName", () => {
  it("accepts JSON Lines (.jsonl, .ndjson, each optionally .gz) and Parquet, as names, paths and URIs", () => {
    for (const name of ACCEPTED) {
      for (const prefix of ["", "/data/train/", "file:///data/train/", "s3://bucket/train/"]) {
        expect([prefix + name, isShardName(prefix + name)]).toEqual([prefix + name, true]);
      }
    }
  });

  it("rejects markers, plain JSON and other extensions", () => {
    for (const name of REJECTED) {
      expect([name, isShardName(`s3://bucket/train/${name}`)]).toEqual([name, false]);
    }
  });

  it("is the pattern the score CLI uses, and strips the whole extension from manifest names", () => {
    expect(SCORE_PATTERN).toBe(SHARD_PATTERN);
    const names = ACCEPTED.map((n) =>
      manifestUriFor(`s3://bkt/in/${n}`, "s3://bkt/in/", "s3://bkt/m/")
    );
    expect(names).toEqual(ACCEPTED.map(() => "s3://bkt/m/part-0.manifest.jsonl"));
  });
});

describe("every shard lister sees the same shards", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await Deno.makeTempDir({ prefix: "shards-" });
    await Deno.writeTextFile(join(dir, "a.jsonl"), encodeJsonl([{ id: "a1", text: "alpha" }]));
    await Deno.writeTextFile(
      join(dir, "b.ndjson"),
      encodeJsonl([{ id: "b1", text: "beta" }, { id: "b2", text: "bravo" }]),
    );
    await Deno.writeFile(
      join(dir, "c.ndjson.gz"),
      await encodeJsonlGz([{ id: "c1", text: "gamma" }]),
    );
    await Deno.writeTextFile(join(dir, "_done.json"), '{"records":4}\n');
  });

  afterAll(async () => {
    await Deno.remove(dir, { recursive: true });
  });

  it("training lists .ndjson and .ndjson.gz shards beside .jsonl ones, and not the marker", async () => {
    expect(await listShards(files, dir + "/")).toEqual(
      ["a.jsonl", "b.ndjson", "c.ndjson.gz"].map((n) => `file://${join(dir, n)}`),
    );
  });

  it("training data loading reads the records of .ndjson shards", async () => {
    const ds = await loadDataset(files, dir + "/", { seqLen: 8, name: "train" });
    expect(ds.stats).toMatchObject({ shards: 3, lines: 4, records: 4, skipped: {} });
    const text = (i: number) =>
      new TextDecoder().decode(ds.bytes.subarray(ds.offsets[i], ds.offsets[i + 1]));
    expect([0, 1, 2, 3].map(text)).toEqual(["alpha", "beta", "bravo", "gamma"]);
  });

  it("a prefix holding only an .ndjson shard is training data", async () => {
    const only = await Deno.makeTempDir({ prefix: "ndjson-only-" });
    try {
      await Deno.writeTextFile(join(only, "part.ndjson"), encodeJsonl([{ id: "x", text: "xyz" }]));
      const ds = await loadDataset(files, only + "/", { seqLen: 8, name: "heldout" });
      expect(ds.stats).toMatchObject({ shards: 1, records: 1 });
    } finally {
      await Deno.remove(only, { recursive: true });
    }
  });

  it("the evaluation reads the records of .ndjson shards", async () => {
    const records = await loadRecords(files, dir + "/");
    expect(records.map((r) => [r.id, r.text, r.line])).toEqual([
      ["a1", "alpha", 1],
      ["b1", "beta", 1],
      ["b2", "bravo", 2],
      ["c1", "gamma", 1],
    ]);
  });

  it("the score CLI scores the same shards the trainer lists", async () => {
    const store = new MemoryStorage();
    const names = ["a.jsonl", "b.ndjson", "c.ndjson.gz", "_done.json", "d.parquet"];
    for (const n of names) {
      await store.write(`s3://bkt/in/${n}`, "x");
      // Every manifest exists, so each listed shard is skipped without a request.
      await store.write(manifestUriFor(`s3://bkt/in/${n}`, "s3://bkt/in/", "s3://bkt/out/"), "{}");
    }
    const { outcomes } = await scoreAll(
      {
        endpoint: "http://127.0.0.1:9",
        model: "s3://bkt/rater.onnx",
        input: "s3://bkt/in/",
        output: "s3://bkt/out/",
        policy: { kind: "keepFraction", fraction: 0.5 },
      },
      {
        fetch: () => Promise.reject(new Error("no request expected: every manifest exists")),
        storage: store,
        sleep: () => Promise.resolve(),
        random: () => 0.5,
      },
    );
    expect(outcomes.map((o) => [o.shard, o.result])).toEqual(
      ["a.jsonl", "b.ndjson", "c.ndjson.gz", "d.parquet"].map((
        n,
      ) => [`s3://bkt/in/${n}`, "skipped"]),
    );
  });
});
