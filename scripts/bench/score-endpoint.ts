/**
 * The scoring function end to end (issues 4 and 12): a shard of whole documents (multi-KB
 * prose-like records, lib/rater-fixture.ts) in S3 (s3rver, real AWS SDK) to a manifest in S3, over
 * real HTTP on loopback, with one inference worker on one onnxruntime thread, the default demo
 * rater's shape and every byte of each document scored (default cap). Reported: text bytes/s of
 * wall-clock time; per core, bytes per CPU-second of this process (the HTTP server, the parse and
 * the inference worker: every thread of it; s3rver runs in its own Node process, not counted); and
 * raw onnxruntime on the same windows, one thread, measured in the same run, so
 * `ratioToRaw` is the cost of everything around inference.
 *
 * Then the latency of `GET /healthz` (real HTTP, one probe every 10 ms) while another large shard
 * is being scored: inference runs in a Web Worker, so the event loop must stay responsive. And the
 * same while a shard of a few very long lines is scored (issue 11: five 60 MB lines; long lines
 * are parsed in a worker, see lib/line-parser.ts), each probe timed from when it was due, as a
 * kubelet's would be.
 *
 *   deno run -A scripts/bench/score-endpoint.ts [--records 2000] [--batch 256]
 *     [--large-lines 5] [--large-line-mb 60]
 *
 * Prints `{"bench":"score-endpoint","bytesPerSec":…,"bytesPerCpuSecond":…,"rawBytesPerSec":…,
 * "ratioToRaw":…}`,
 * `{"bench":"healthz-under-load","p50Ms":…,"p99Ms":…}` and
 * `{"bench":"healthz-under-load","variant":"large-lines","p50Ms":…,"p99Ms":…,"maxMs":…}`.
 */
import { parseArgs } from "node:util";
import { createApp } from "../../functions/app.ts";
import { encodeJsonl } from "../../lib/records.ts";
import { startS3Server } from "../../lib/s3-server.ts";
import { createStorage } from "../../lib/storage.ts";
import { Rng } from "../../training/rng.ts";
import process from "node:process";
import {
  benchDocuments,
  benchModel,
  benchWindows,
  rawThroughput,
  utf8Bytes,
} from "./lib/rater-fixture.ts";
import { probeWhile } from "./lib/probe-schedule.ts";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "2000" },
    batch: { type: "string", default: "256" },
    "large-lines": { type: "string", default: "5" },
    "large-line-mb": { type: "string", default: "60" },
  },
});
const largeLines = Number(values["large-lines"]);
const largeLineBytes = Number(values["large-line-mb"]) * 1e6;
const records = Number(values.records);
const batchSize = Number(values.batch);
if (!(Number.isInteger(records) && records > 0 && Number.isInteger(batchSize) && batchSize > 0)) {
  throw new Error("usage: score-endpoint.ts [--records N>0] [--batch N>0]");
}
if (!(Number.isInteger(largeLines) && largeLines >= 0 && largeLineBytes > 0)) {
  throw new Error("usage: score-endpoint.ts [--large-lines N>=0] [--large-line-mb MB>0]");
}

const { rater, seqLen, model } = benchModel();
const rng = new Rng(1);
const docsA = benchDocuments(rng, records);
const shard = (prefix: string, docs: string[]) =>
  encodeJsonl(docs.map((text, i) => ({ id: `${prefix}-${i}`, text })));

const tmp = await Deno.makeTempDir({ prefix: "bench-score-endpoint-" });
const s3 = await startS3Server({ dir: `${tmp}/s3`, buckets: ["bench"] });
const storage = createStorage({ s3: s3.settings });
const app = createApp({
  storage,
  allowedRoots: ["s3://bench/"],
  batchSize,
  workers: 1,
  threadsPerWorker: 1,
  warmModels: ["s3://bench/rater.onnx"],
});
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
const base = `http://127.0.0.1:${server.addr.port}`;

try {
  await storage.write("s3://bench/rater.onnx", model);
  await storage.write("s3://bench/warm.jsonl", encodeJsonl([{ id: "w", text: "warm up" }]));
  await storage.write("s3://bench/a.jsonl", shard("a", docsA));
  await storage.write("s3://bench/b.jsonl", shard("b", benchDocuments(rng, records)));
  if (largeLines > 0) {
    // Prose with non-ASCII characters and escapes: the slowest kind of line to check and parse.
    const unit = "Grüße, naïve café\n\t«quote» ";
    const unitBytes = new TextEncoder().encode(JSON.stringify(unit)).length - 2;
    const text = unit.repeat(Math.floor(largeLineBytes / unitBytes));
    const lines = Array.from(
      { length: largeLines },
      (_, i) => JSON.stringify({ id: `L${i}`, text }),
    );
    await storage.write("s3://bench/large.jsonl", lines.join("\n") + "\n");
  }
  await app.warmUp();

  const score = async (input: string, output: string) => {
    const res = await fetch(`${base}/v1/score`, {
      method: "POST",
      body: JSON.stringify({
        model: "s3://bench/rater.onnx",
        input,
        output,
        policy: { kind: "keepFraction", fraction: 0.5 },
      }),
    });
    const body = await res.json();
    if (res.status !== 201) throw new Error(`score failed: ${res.status} ${JSON.stringify(body)}`);
    return body;
  };
  await score("s3://bench/warm.jsonl", "s3://bench/out/warm.manifest.jsonl");

  const textBytes = utf8Bytes(docsA);
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const result = await score("s3://bench/a.jsonl", "s3://bench/out/a.manifest.jsonl");
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  if (result.counts.records !== records) throw new Error("not every record was scored");
  // The reference, measured in this run on the same model, batch and windows.
  const { windows } = benchWindows(docsA, seqLen);
  const raw = await rawThroughput(model, windows, batchSize, 5);
  const mb = (bytesPerSec: number) => Math.round(bytesPerSec / 1e4) / 100;
  console.log(JSON.stringify({
    bench: "score-endpoint",
    bytesPerSec: Math.round(textBytes / seconds),
    mbPerSec: mb(textBytes / seconds),
    bytesPerCpuSecond: Math.round(textBytes / cpuSeconds),
    mbPerSecPerCore: mb(textBytes / cpuSeconds),
    cpuSeconds: Math.round(cpuSeconds * 100) / 100,
    rawBytesPerSec: Math.round(raw.bytesPerSec),
    rawMbPerSecPerCore: mb(raw.bytesPerSec),
    ratioToRaw: Math.round((textBytes / seconds / raw.bytesPerSec) * 1000) / 1000,
    recordsPerSec: Math.round(records / seconds),
    records,
    textBytes,
    windows: windows.length,
    seconds: Math.round(seconds * 1000) / 1000,
    batch: batchSize,
    window: seqLen,
    cap: result.scoring.cap,
    rater: `${rater.kind} d${rater.dModel} l${rater.layers} h${rater.heads} ffn${rater.ffn} ` +
      `patch${rater.patch}`,
    inferenceWorkers: 1,
    onnxThreads: 1,
    cores: navigator.hardwareConcurrency,
    store: "s3rver",
  }));

  // /healthz while shard b is scored.
  const latencies: number[] = [];
  let scoring = true;
  const load = score("s3://bench/b.jsonl", "s3://bench/out/b.manifest.jsonl").finally(() => {
    scoring = false;
  });
  await new Promise((r) => setTimeout(r, 200)); // let scoring get going
  while (scoring) {
    const t = performance.now();
    const res = await fetch(`${base}/healthz`);
    await res.body?.cancel();
    if (scoring) latencies.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 10));
  }
  await load;
  const figures = (ms: number[]) => {
    ms.sort((a, b) => a - b);
    const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
    const round = (x: number) => Math.round(x * 100) / 100;
    return { p50Ms: round(q(0.5)), p99Ms: round(q(0.99)), maxMs: round(ms[ms.length - 1]) };
  };
  console.log(JSON.stringify({
    bench: "healthz-under-load",
    ...figures(latencies),
    probes: latencies.length,
    records,
  }));

  if (largeLines > 0) {
    const { result: largeResult, latencies: largeLatencies, start: largeStart } = await probeWhile(
      score("s3://bench/large.jsonl", "s3://bench/out/large.manifest.jsonl"),
      10,
      async () => {
        const res = await fetch(`${base}/healthz`);
        await res.body?.cancel();
      },
    );
    if (largeResult.counts.records !== largeLines) {
      throw new Error("not every long line was scored");
    }
    console.log(JSON.stringify({
      bench: "healthz-under-load",
      variant: "large-lines",
      ...figures(largeLatencies),
      probes: largeLatencies.length,
      lines: largeLines,
      lineBytes: largeLineBytes,
      seconds: Math.round((performance.now() - largeStart) / 10) / 100,
    }));
  }
} finally {
  await server.shutdown();
  await app.close();
  storage.close();
  await s3.stop();
  await Deno.remove(tmp, { recursive: true });
}
