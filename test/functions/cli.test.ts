/**
 * The fan-out CLI (`deno task score`) and the manifest CLI (`deno task manifest`), against the
 * real scoring function served on loopback over local files.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import { readManifestHeader } from "../../lib/manifest.ts";
import { FileStorage } from "../../lib/storage.ts";
import {
  manifestUriFor,
  parseScoreArgs,
  scoreAll,
  type ScoreAllDeps,
  type ScoreAllOptions,
} from "../../scripts/score.ts";
import { renderHistogram, summariseManifest } from "../../scripts/manifest.ts";
import { scoringClient, ScoringClientError } from "../../functions/client.ts";
import { readParquetManifest } from "../../lib/manifest-formats.ts";
import { RunSummarySchema, writeRunSummary } from "../../lib/run-summary.ts";
import { buildTestModel, jsonl, referenceTexts } from "./fixtures.ts";

const storage = new FileStorage();
let dir: string;
let root: string;
let app: ScoringApp;
let server: Deno.HttpServer<Deno.NetAddr>;
let endpoint: string;

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "score-cli-" });
  root = `file://${dir}/`;
  const model = await buildTestModel();
  await Deno.writeFile(`${dir}/model.onnx`, model.bytes);
  await Deno.mkdir(`${dir}/shards/sub`, { recursive: true });
  for (let s = 0; s < 5; s++) {
    const texts = referenceTexts(40 + s, 200 + s);
    const name = s === 4 ? "sub/part-4.jsonl" : `part-${s}.jsonl`;
    await Deno.writeTextFile(
      `${dir}/shards/${name}`,
      jsonl(texts.map((text, i) => ({ id: `${s}-${i}`, text }))),
    );
  }
  await Deno.writeTextFile(`${dir}/shards/README.txt`, "not a shard");
  app = createApp({ storage, allowedRoots: [root] });
  server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  endpoint = `http://127.0.0.1:${server.addr.port}`;
});

afterAll(async () => {
  await server.shutdown();
  await app.close();
  await Deno.remove(dir, { recursive: true });
});

const realDeps = (overrides: Partial<ScoreAllDeps> = {}): ScoreAllDeps => ({
  fetch,
  storage,
  sleep: () => Promise.resolve(),
  random: () => 0.5,
  ...overrides,
});

/** scoreAll's options for this file's server and model, over the shards under `input`. */
const scoreAllOptions = (
  input: string,
  output: string,
  rest: Omit<ScoreAllOptions, "endpoint" | "model" | "input" | "output">,
): ScoreAllOptions => ({ endpoint, model: `${root}model.onnx`, input, output, ...rest });

/** Runs `script` as a program with `args`; its stdout, once it has exited 0 (else its stderr). */
async function runScript(script: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  expect(out.code, new TextDecoder().decode(out.stderr)).toBe(0);
  return new TextDecoder().decode(out.stdout);
}

describe("deno task score", () => {
  it("maps each shard to OUTPUT/<path below the input prefix>.manifest.jsonl", () => {
    expect(manifestUriFor("s3://b/in/a/part-1.jsonl.gz", "s3://b/in/", "s3://b/out")).toBe(
      "s3://b/out/a/part-1.manifest.jsonl",
    );
    expect(manifestUriFor("s3://b/in/part-1.ndjson", "s3://b/in/part-", "s3://b/out/")).toBe(
      "s3://b/out/part-1.manifest.jsonl",
    );
  });

  it("parses the policy flags and rejects ambiguous or malformed ones", () => {
    const base = ["--endpoint", "http://x", "--model", "m", "--input", "i/", "--output", "o/"];
    expect(parseScoreArgs(base).policy).toEqual({ kind: "keepFraction", fraction: 0.5 });
    expect(parseScoreArgs([...base, "--top-k", "3", "--of", "4"]).policy).toEqual({
      kind: "topK",
      k: 3,
      b: 4,
      seed: 0,
    });
    expect(() => parseScoreArgs([...base, "--threshold", "1", "--keep-fraction", "0.2"]))
      .toThrowError("give one of --keep-fraction, --threshold, --top-k");
    expect(() => parseScoreArgs([...base, "--threshold", "abc"])).toThrowError(
      '--threshold must be a number, got "abc"',
    );
    expect(() => parseScoreArgs(base.slice(2))).toThrowError("--endpoint is required");
  });

  it("scores every shard under the prefix, skips shards whose manifest exists, and sums up", async () => {
    const output = `${root}manifests/run1/`;
    // One manifest exists already: that shard must not be sent again.
    const existing = manifestUriFor(`${root}shards/part-0.jsonl`, `${root}shards/`, output);
    const pre = await app.request("/v1/score", {
      method: "POST",
      body: JSON.stringify({
        model: `${root}model.onnx`,
        input: `${root}shards/part-0.jsonl`,
        output: existing,
        policy: { kind: "keepFraction", fraction: 0.4 },
      }),
    });
    expect(pre.status).toBe(201);
    const sent: string[] = [];
    const progress: number[] = [];
    const { summary, outcomes } = await scoreAll(
      scoreAllOptions(`${root}shards/`, output, {
        policy: { kind: "keepFraction", fraction: 0.4 },
        concurrency: 3,
      }),
      realDeps({
        fetch: (url, init) => {
          sent.push(JSON.parse(String(init!.body)).input);
          return fetch(url, init);
        },
        onShard: (done) => progress.push(done),
      }),
    );
    expect(summary).toMatchObject({
      shards: 5,
      created: 4,
      cached: 0,
      skippedExisting: 1,
      failed: 0,
      records: 41 + 42 + 43 + 44,
      failures: [],
    });
    expect(summary.kept + summary.dropped).toBe(summary.records);
    expect(sent.sort()).toEqual(
      ["part-1.jsonl", "part-2.jsonl", "part-3.jsonl", "sub/part-4.jsonl"].map((n) =>
        `${root}shards/${n}`
      ),
    );
    expect(progress).toEqual([0, 1, 2, 3, 4, 5]);
    expect(outcomes.map((o) => o.manifest)).toContain(`${output}sub/part-4.manifest.jsonl`);
    const h = await readManifestHeader(storage, `${output}sub/part-4.manifest.jsonl`);
    expect(h.counts.records).toBe(44);
  });

  it("retries transient failures with capped, jittered exponential backoff; 4xx fail at once", async () => {
    const output = `${root}manifests/retry/`;
    const calls = new Map<string, number>();
    const sleeps: number[] = [];
    const flaky: typeof fetch = (url, init) => {
      const input = JSON.parse(String(init!.body)).input as string;
      const n = (calls.get(input) ?? 0) + 1;
      calls.set(input, n);
      if (input.endsWith("part-1.jsonl") && n <= 2) {
        return Promise.resolve(
          new Response(JSON.stringify({ error: { message: "busy" } }), { status: 503 }),
        );
      }
      if (input.endsWith("part-2.jsonl") && n === 1) {
        return Promise.reject(new TypeError("connection reset"));
      }
      if (input.endsWith("part-3.jsonl")) {
        return Promise.resolve(
          new Response(JSON.stringify({ error: { message: "bad policy" } }), { status: 400 }),
        );
      }
      return fetch(url, init);
    };
    const { summary } = await scoreAll(
      scoreAllOptions(`${root}shards/`, output, {
        policy: { kind: "threshold", threshold: 0 },
        concurrency: 1,
        retries: 3,
        backoffMs: 100,
        maxBackoffMs: 150,
      }),
      realDeps({ fetch: flaky, sleep: (ms) => (sleeps.push(ms), Promise.resolve()) }),
    );
    expect(calls.get(`${root}shards/part-1.jsonl`)).toBe(3);
    expect(calls.get(`${root}shards/part-2.jsonl`)).toBe(2);
    expect(calls.get(`${root}shards/part-3.jsonl`)).toBe(1);
    // random() = 0.5 of min(cap, 100·2^(attempt-1)): 50, 75 for part-1, 50 for part-2.
    expect(sleeps).toEqual([50, 75, 50]);
    expect(summary).toMatchObject({ created: 4, failed: 1 });
    expect(summary.failures).toEqual([
      { shard: `${root}shards/part-3.jsonl`, status: 400, error: "bad policy", attempts: 1 },
    ]);
  });

  it("runs as a program: prints a JSON summary and exits 0", async () => {
    const stdout = await runScript("scripts/score.ts", [
      "--endpoint",
      endpoint,
      "--model",
      `${root}model.onnx`,
      "--input",
      `${root}shards/`,
      "--output",
      `${root}manifests/cli/`,
      "--keep-fraction",
      "0.5",
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ shards: 5, created: 5, failed: 0, records: 210 });
    // Once after the fan-out: the run summary beside the manifests.
    const run = RunSummarySchema.parse(
      JSON.parse(await Deno.readTextFile(`${dir}/manifests/cli/_summary.json`)),
    );
    expect(run).toMatchObject({ shards: 5, records: 210 });
    expect(run.kept + run.dropped).toBe(210);
    expect(run.byPolicy).toEqual([
      {
        policy: { kind: "keepFraction", fraction: 0.5 },
        shards: 5,
        records: 210,
        kept: run.kept,
        dropped: run.dropped,
      },
    ]);
    expect(run.scores.histogram!.kept.reduce((a, b) => a + b, 0)).toBe(run.kept);
    expect(run.scores.histogram!.dropped.reduce((a, b) => a + b, 0)).toBe(run.dropped);
    let bytes = 0;
    for await (const o of storage.list(`${root}shards/`)) {
      if (o.uri.endsWith(".jsonl")) bytes += o.size;
    }
    expect(run.bytes).toBe(bytes);
  });
});

describe("deno task manifest", () => {
  it("summary PREFIX prints the run summary; convert writes the Parquet manifests and dolma attributes", async () => {
    const prefix = `${root}manifests/run1/`;
    const { summary } = await writeRunSummary(storage, prefix, { bins: 5 });
    const run = (...args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "scripts/manifest.ts", ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const shown = await run("summary", prefix, "--json");
    expect(shown.code, new TextDecoder().decode(shown.stderr)).toBe(0);
    expect(JSON.parse(new TextDecoder().decode(shown.stdout))).toEqual(summary);
    const text = await run("summary", prefix);
    expect(new TextDecoder().decode(text.stdout)).toMatch(
      new RegExp(`^records {3}${summary.records}: kept ${summary.kept} `, "m"),
    );

    const converted = await run(
      "convert",
      prefix,
      "--parquet",
      "--dolma",
      "r1",
      "--dolma-uri",
      `${dir}/nowhere.jsonl`,
    );
    expect(converted.code).toBe(2); // one URI for many manifests is refused
    const ok = await run("convert", prefix, "--parquet");
    expect(ok.code, new TextDecoder().decode(ok.stderr)).toBe(0);
    const lines = new TextDecoder().decode(ok.stdout).trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBe(summary.shards);
    for (const l of lines) {
      expect(l.parquet).toBe(l.manifest.replace(/\.manifest\.jsonl$/, ".manifest.parquet"));
      const pq = await readParquetManifest(storage, l.parquet);
      expect(pq.header).toEqual(await readManifestHeader(storage, l.manifest));
    }
  });

  it("the histogram counts every entry once, split into kept and dropped", async () => {
    const uri = `${root}manifests/run1/part-1.manifest.jsonl`;
    const { header, histogram } = await summariseManifest(storage, uri, 8);
    expect(histogram!.kept.length).toBe(8);
    expect(histogram!.kept.reduce((a, b) => a + b, 0)).toBe(header.counts.kept);
    expect(histogram!.dropped.reduce((a, b) => a + b, 0)).toBe(header.counts.dropped);
    expect(histogram!.edges[0]).toBe(header.scores.min);
    expect(histogram!.edges[8]).toBeCloseTo(header.scores.max!, 12);
    const lines = renderHistogram(histogram!);
    expect(lines.length).toBe(8);
    expect(lines[0]).toMatch(/kept \d+, dropped \d+$/);
  });

  it("runs as a program: prints the summary, histogram and verification", async () => {
    const stdout = await runScript("scripts/manifest.ts", [
      `${root}manifests/run1/part-2.manifest.jsonl`,
      "--verify",
    ]);
    expect(stdout).toMatch(
      /^records {3}42: kept \d+ \(\d+\.\d%\), dropped \d+, skipped invalid 0$/m,
    );
    expect(stdout).toMatch(/^verify {4}ok \(by etag\)$/m);
    expect(stdout.split("\n").filter((l) => / kept \d+, dropped \d+$/.test(l)).length).toBe(20);
  });
});

describe("deno task score retries (p-retry)", () => {
  const answering = (status: number, calls: string[]): typeof fetch => (_url, init) => {
    calls.push(JSON.parse(String(init!.body)).input);
    return Promise.resolve(
      new Response(JSON.stringify({ error: { code: "x", message: `answered ${status}` } }), {
        status,
      }),
    );
  };
  const options = (output: string) =>
    scoreAllOptions(`${root}shards/sub/`, `${root}manifests/${output}/`, {
      policy: { kind: "threshold", threshold: 0 },
      retries: 2,
      backoffMs: 100,
      maxBackoffMs: 1000,
    });
  /** Scores the one shard under `shards/sub/` against a server that always answers `status`. */
  const scoreAnswering = async (status: number, output: string) => {
    const calls: string[] = [];
    const sleeps: number[] = [];
    const { summary } = await scoreAll(
      options(output),
      realDeps({
        fetch: answering(status, calls),
        sleep: (ms) => (sleeps.push(ms), Promise.resolve()),
      }),
    );
    return { calls, sleeps, summary };
  };
  /** The failure scoreAll reports for that shard after `attempts` answers of `status`. */
  const failedAfter = (status: number, attempts: number) => ({
    shard: `${root}shards/sub/part-4.jsonl`,
    status,
    error: `answered ${status}`,
    attempts,
  });

  it("a 4xx is final: one request, no sleep", async () => {
    for (const status of [400, 403, 404, 409, 413, 422]) {
      const { calls, sleeps, summary } = await scoreAnswering(status, `final-${status}`);
      expect(calls).toEqual([`${root}shards/sub/part-4.jsonl`]);
      expect(sleeps).toEqual([]);
      expect(summary.failures).toEqual([failedAfter(status, 1)]);
    }
  });

  it("a 502 (and 408, 429, a dropped connection) is retried: 1 + retries requests, then fails", async () => {
    for (const status of [502, 500, 504, 408, 429]) {
      const { calls, sleeps, summary } = await scoreAnswering(status, `retried-${status}`);
      expect(calls.length).toBe(3);
      // random() = 0.5 of 100·2^(attempt-1); no sleep after the last attempt.
      expect(sleeps).toEqual([50, 100]);
      expect(summary.failures).toEqual([failedAfter(status, 3)]);
    }
    let n = 0;
    const dropped: typeof fetch = () => (n++, Promise.reject(new Error("connection refused")));
    const { summary } = await scoreAll(options("dropped"), realDeps({ fetch: dropped }));
    expect(n).toBe(3);
    expect(summary.failures).toEqual([
      {
        shard: `${root}shards/sub/part-4.jsonl`,
        status: undefined,
        error: "request failed: connection refused",
        attempts: 3,
      },
    ]);
  });

  it("a 502 then a success: two requests, the shard is created", async () => {
    let n = 0;
    const once502: typeof fetch = (url, init) =>
      n++ === 0 ? Promise.resolve(new Response("bad gateway", { status: 502 })) : fetch(url, init);
    const { summary, outcomes } = await scoreAll(options("once502"), realDeps({ fetch: once502 }));
    expect(n).toBe(2);
    expect(summary).toMatchObject({ created: 1, failed: 0 });
    expect(outcomes[0]).toMatchObject({ result: "created", attempts: 2, status: 201 });
  });
});

describe("the scoring client (functions/client.ts)", () => {
  it("scores one shard (201), then finds it (200, cached), typed by the app's route", async () => {
    const client = scoringClient({ endpoint });
    const request = {
      model: `${root}model.onnx`,
      input: `${root}shards/part-0.jsonl`,
      output: `${root}client/part-0.manifest.jsonl`,
      policy: { kind: "keepFraction" as const, fraction: 0.5 },
    };
    const first = await client.score(request);
    expect(first.status).toBe(201);
    expect(first.result).toMatchObject({
      manifest: request.output,
      cached: false,
      counts: { records: 40 },
    });
    const again = await client.score(request);
    expect(again.status).toBe(200);
    expect(again.result.cached).toBe(true);
    expect(await client.ready()).toBe(true);
  });

  it("an error answer is a ScoringClientError with the status, the API code and retryability", async () => {
    const client = scoringClient({ endpoint });
    const err = await client.score({
      model: `${root}model.onnx`,
      input: "file:///elsewhere/part-0.jsonl",
      output: `${root}client/x.manifest.jsonl`,
      policy: { kind: "threshold", threshold: 0 },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ScoringClientError);
    expect(err).toMatchObject({ status: 403, code: "forbidden", retryable: false });
    expect(err.message).toMatch(
      /^input file:\/\/\/elsewhere\/part-0\.jsonl is outside the allowed roots/,
    );
    const down = scoringClient({ endpoint: "http://127.0.0.1:1" });
    const refused = await down.score({
      model: "m",
      input: "i",
      output: "o",
      policy: { kind: "threshold", threshold: 0 },
    }).catch((e) => e);
    expect(refused).toBeInstanceOf(ScoringClientError);
    expect(refused).toMatchObject({ status: undefined, retryable: true });
    expect(await down.ready()).toBe(false);
  });

  it("sends the bearer token", async () => {
    const seen: (string | null)[] = [];
    const client = scoringClient({
      endpoint,
      token: "t0k",
      fetch: (url, init) => {
        seen.push(new Headers(init?.headers).get("authorization"));
        return fetch(url, init);
      },
    });
    await client.ready();
    expect(seen).toEqual(["Bearer t0k"]);
  });
});
