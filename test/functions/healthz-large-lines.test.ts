/**
 * Parsing a shard's lines runs on the main thread: a shard of very long lines must still leave the
 * event loop free often enough that `/healthz` answers within the liveness probe's timeout (1 s in
 * k8s/function/deployment.yaml), probed over a real socket as Kubernetes does.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import { FileStorage } from "../../lib/storage.ts";
import { buildTestModel } from "./fixtures.ts";
import { probeWhile } from "../../scripts/bench/lib/probe-schedule.ts";

let dir: string;
let app: ScoringApp;

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "healthz-large-" });
  await Deno.writeFile(`${dir}/model.onnx`, (await buildTestModel()).bytes);
  // Three lines of 20 MB (the case is five of 60 MB: the same work per line, scaled
  // down), of non-ASCII text with escapes, the slowest kind to check, decode and parse.
  const text = "Grüße, naïve café\n\t«quote» ".repeat(20e6 / 30);
  const line = (i: number) => JSON.stringify({ id: `big${i}`, text });
  await Deno.writeTextFile(`${dir}/large.jsonl`, [0, 1, 2].map(line).join("\n") + "\n");
  app = createApp({ storage: new FileStorage(), allowedRoots: [`file://${dir}/`] });
  await app.warmUp();
});

afterAll(async () => {
  await app?.close();
  await Deno.remove(dir, { recursive: true });
});

it("/healthz answers within the probe timeout while a shard of 20 MB lines is scored", async () => {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const scored = fetch(`${base}/v1/score`, {
      method: "POST",
      body: JSON.stringify({
        model: `file://${dir}/model.onnx`,
        input: `file://${dir}/large.jsonl`,
        output: `file://${dir}/large.manifest.jsonl`,
        policy: { kind: "threshold", threshold: 0 },
      }),
    }).then(async (res) => ({ status: res.status, body: await res.json() }));
    // Probes go out on a fixed schedule, as the kubelet's do.
    const { result, latencies } = await probeWhile(scored, 50, async () => {
      const res = await fetch(`${base}/healthz`);
      expect(await res.json()).toEqual({ status: "ok" });
    });
    expect(result.status).toBe(201);
    expect(result.body.counts.records).toBe(3);
    expect(latencies.length).toBeGreaterThan(1);
    // Not a speed test: ~0.2 s here at worst; 1 s is the probe's timeout.
    expect(Math.max(...latencies)).toBeLessThan(1000);
  } finally {
    await server.shutdown();
  }
}, 120_000);
