/**
 * Every bad input gets its status code and a message that says what is wrong; nothing partial is
 * ever written. Runs the real app in-process (`app.request`) over local files, with faults
 * injected into storage where a test needs them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import onnxProto from "onnx-proto";
import { gzip } from "../../lib/records.ts";
import { FileStorage } from "../../lib/storage.ts";
import { readManifestHeader } from "../../lib/manifest.ts";
import {
  appPool,
  buildTestModel,
  jsonl,
  postScore as post,
  type TestModel,
  thresholdRequests,
} from "./fixtures.ts";
import { faultStorage, racingWrites } from "./fault-storage.ts";

const storage = new FileStorage();
let dir: string;
let root: string;
let model: TestModel;
const { app, closeAll } = appPool(() => ({ storage, allowedRoots: [root] }));
let outputs = 0;
const thresholdRequest = thresholdRequests(() => root);
const request = (overrides: Record<string, unknown> = {}) =>
  thresholdRequest(`${root}good.jsonl`, overrides);

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "score-errors-" });
  root = `file://${dir}/`;
  model = await buildTestModel();
  await Deno.writeFile(`${dir}/model.onnx`, model.bytes);
  await Deno.writeTextFile(
    `${dir}/good.jsonl`,
    jsonl(Array.from({ length: 50 }, (_, i) => ({ id: `g${i}`, text: `record number ${i}` }))),
  );
});

afterAll(async () => {
  await closeAll();
  await Deno.remove(dir, { recursive: true });
});

async function shard(name: string, content: string | Uint8Array): Promise<string> {
  const path = `${dir}/${name}`;
  if (typeof content === "string") await Deno.writeTextFile(path, content);
  else await Deno.writeFile(path, content);
  return `${root}${name}`;
}

async function expectNoManifest(uri: string) {
  expect(await storage.stat(uri)).toBeNull();
}

describe("request validation", () => {
  it("a body that is not JSON is a 400 bad_request", async () => {
    const r = await post(app(), "{nope");
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("bad_request");
    expect(r.body.error.message).toMatch(/^request body is not valid JSON/);
  });

  it("a missing or invalid field is a 400 naming the field", async () => {
    const req = request();
    delete (req as Record<string, unknown>).policy;
    const r = await post(app(), req);
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^invalid request: policy: /);
    expect(r.body.error.issues[0].path).toBe("policy");

    const r2 = await post(app(), request({ policy: { kind: "topK", k: 9, b: 4 } }));
    expect(r2.status).toBe(400);
    expect(r2.body.error.message).toMatch(/policy\.k: k must be <= b/);
  });

  it("a URI of an unsupported scheme is a 400 (no fetching of arbitrary hosts)", async () => {
    const r = await post(app(), request({ input: "http://169.254.169.254/latest/meta-data" }));
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(
      /^input: invalid storage URI .*only s3:\/\/ and file:\/\//,
    );
  });

  it("a prefix instead of one shard or manifest object is a 400 pointing at the fan-out CLI", async () => {
    const r = await post(app(), request({ input: root }));
    expect(r.status).toBe(400);
    expect(r.body.error.message).toBe(
      `input ${root} is a prefix: give one object (a shard, and its manifest's URI); ` +
        "`deno task score` fans out over every shard under a prefix",
    );
    const r2 = await post(app(), request({ output: `${root}out/` }));
    expect(r2.status).toBe(400);
    expect(r2.body.error.field).toBe("output");
  });

  it("a URI outside the allowed roots is a 403 naming the roots", async () => {
    const r = await post(app(), request({ input: "file:///etc/passwd" }));
    expect(r.status).toBe(403);
    expect(r.body.error.message).toBe(
      `input file:///etc/passwd is outside the allowed roots (${root})`,
    );
    // ".." cannot climb out of a root: URIs are normalised before the check.
    const r2 = await post(app(), request({ output: `${root}../escape.manifest.jsonl` }));
    expect(r2.status).toBe(403);
    // A root is a folder, not a name prefix: file:///dir/ does not allow file:///dir-other/.
    const r3 = await post(app(), request({ input: `file://${dir}-other/x.jsonl` }));
    expect(r3.status).toBe(403);
  });

  it("with no roots configured every score request is a 403 saying what to set", async () => {
    const r = await post(app({ allowedRoots: [] }), request());
    expect(r.status).toBe(403);
    expect(r.body.error.message).toMatch(
      /no storage roots are configured.*DATARATER_ALLOWED_ROOTS/,
    );
  });

  it("a configured bearer token is required: 401 without it or with a wrong one", async () => {
    const a = app({ token: "s3cret" });
    const none = await post(a, request());
    expect(none.status).toBe(401);
    expect(none.body.error.message).toBe("missing `Authorization: Bearer <token>` header");
    const wrong = await post(a, request(), { authorization: "Bearer nope" });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.message).toBe("the bearer token is wrong");
    const ok = await post(a, request(), { authorization: "Bearer s3cret" });
    expect(ok.status).toBe(201);
    // Probes stay open.
    expect((await a.request("/healthz")).status).toBe(200);
  });

  it("an oversized request body is a 413", async () => {
    const r = await post(app({ maxBodyBytes: 200 }), request({ pad: "x".repeat(500) }));
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe("payload_too_large");
    expect(r.body.error.message).toMatch(/request body is over 200 bytes/);
  });

  it("an input over the size limit is a 413 and nothing is written", async () => {
    const req = request();
    const r = await post(app({ maxInputBytes: 100 }), req);
    expect(r.status).toBe(413);
    expect(r.body.error.message).toMatch(/good\.jsonl is \d+ bytes, over the 100-byte limit/);
    await expectNoManifest(req.output);
  });

  it("an unknown route is a JSON 404", async () => {
    const res = await app().request("/v2/nothing");
    expect(res.status).toBe(404);
    expect((await res.json()).error.message).toBe("no route GET /v2/nothing");
  });
});

describe("missing objects and bad models", () => {
  it("a missing input is a 404 naming it", async () => {
    const r = await post(app(), request({ input: `${root}missing.jsonl` }));
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({
      code: "not_found",
      field: "input",
      message: `input ${root}missing.jsonl does not exist`,
    });
  });

  it("a missing model is a 404 naming it", async () => {
    const r = await post(app(), request({ model: `${root}nope.onnx` }));
    expect(r.status).toBe(404);
    expect(r.body.error.message).toBe(`model ${root}nope.onnx does not exist`);
  });

  it("a file that is not ONNX is a 422 not_a_datarater_model", async () => {
    await Deno.writeTextFile(`${dir}/text.onnx`, "definitely not a model");
    const req = request({ model: `${root}text.onnx` });
    const r = await post(app(), req);
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe("not_a_datarater_model");
    expect(r.body.error.message).toMatch(/is not a DataRater export: not an ONNX model/);
    await expectNoManifest(req.output);
  });

  it("an ONNX model without DataRater metadata is a 422 saying which metadata is missing", async () => {
    const { onnx } = onnxProto;
    const decoded = onnx.ModelProto.decode(model.bytes);
    decoded.metadataProps = [];
    await Deno.writeFile(`${dir}/plain.onnx`, onnx.ModelProto.encode(decoded).finish());
    const r = await post(app(), request({ model: `${root}plain.onnx` }));
    expect(r.status).toBe(422);
    expect(r.body.error.message).toMatch(/without "datarater\.format" metadata/);
  });
});

describe("bad records", () => {
  it("a malformed JSON line fails the request with its line number; nothing is written", async () => {
    const input = await shard(
      "badline.jsonl",
      '{"id":"a","text":"x"}\n{"id":"b","text":"y"}\n{"id":"c", oops}\n',
    );
    const req = request({ input });
    const r = await post(app(), req);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "invalid_record", line: 3, kind: "bad-json" });
    expect(r.body.error.message).toMatch(/badline\.jsonl line 3: not valid JSON/);
    expect(r.body.error.message).toMatch(/"onInvalid": "skip"/);
    await expectNoManifest(req.output);
  });

  it("with onInvalid skip, invalid lines are skipped and counted with their line numbers", async () => {
    const lines = [
      '{"id":"a","text":"x"}',
      "{broken",
      '{"text":"no id"}',
      '{"id":"d"}',
      "[1,2]",
      '{"id":"f","text":"fine"}',
    ];
    const input = await shard("skip.jsonl", lines.join("\n"));
    const req = request({ input, onInvalid: "skip" });
    const r = await post(app(), req);
    expect(r.status).toBe(201);
    expect(r.body.counts).toMatchObject({ records: 2, skippedInvalid: 4 });
    const header = await readManifestHeader(storage, req.output);
    expect(header.invalid.map((i) => i.line)).toEqual([2, 3, 4, 5]);
    expect(header.invalid[1].error).toBe('field "id" must be a string or number');
    expect(header.invalid[2].error).toBe('field "text" must be a string');
  });

  it("missing id or text fields fail with the field name; custom field names are honoured", async () => {
    const input = await shard("fields.jsonl", '{"key":"a","body":"x"}\n{"key":"b"}\n');
    const r = await post(app(), request({ input }));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ line: 1, kind: "missing-id" });
    expect(r.body.error.message).toMatch(/line 1: field "id" must be a string or number/);
    const r2 = await post(app(), request({ input, fields: { id: "key", text: "body" } }));
    expect(r2.status).toBe(400);
    expect(r2.body.error).toMatchObject({ line: 2, kind: "missing-text" });
    expect(r2.body.error.message).toMatch(/line 2: field "body" must be a string/);
  });

  it("duplicate ids fail with both line numbers, or keep the first when skipping", async () => {
    const input = await shard(
      "dups.jsonl",
      jsonl([{ id: "a", text: "1" }, { id: "b", text: "2" }, { id: "a", text: "3" }]),
    );
    const r = await post(app(), request({ input }));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "duplicate_id", line: 3, id: "a", firstLine: 1 });
    expect(r.body.error.message).toMatch(/line 3: duplicate id "a" \(first at line 1\)/);
    const req = request({ input, onInvalid: "skip" });
    const r2 = await post(app(), req);
    expect(r2.status).toBe(201);
    expect(r2.body.counts).toMatchObject({ records: 2, skippedInvalid: 1 });
    const header = await readManifestHeader(storage, req.output);
    expect(header.invalid).toEqual([{ line: 3, error: 'duplicate id "a" (first at line 1)' }]);
  });

  it("invalid UTF-8 fails with the line number, or is skipped and counted", async () => {
    const enc = new TextEncoder();
    const bytes = new Uint8Array([
      ...enc.encode('{"id":"a","text":"ok"}\n{"id":"b","text":"bad '),
      0xff,
      0xfe,
      ...enc.encode('"}\n{"id":"c","text":"\\ud800 lone surrogate"}\n'),
    ]);
    const input = await shard("utf8.jsonl", bytes);
    const r = await post(app(), request({ input }));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "invalid_record", line: 2, kind: "invalid-utf8" });
    expect(r.body.error.message).toMatch(/line 2 is not valid UTF-8/);
    const r2 = await post(app(), request({ input, onInvalid: "skip" }));
    expect(r2.status).toBe(201);
    expect(r2.body.counts).toMatchObject({ records: 1, skippedInvalid: 2 });
  });

  it("an empty shard (or only blank lines) is a 422 and gets no manifest", async () => {
    for (const [name, content] of [["empty.jsonl", ""], ["blank.jsonl", "\n  \n\n"]]) {
      const req = request({ input: await shard(name, content) });
      const r = await post(app(), req);
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe("empty_shard");
      expect(r.body.error.message).toMatch(/has no records/);
      await expectNoManifest(req.output);
    }
    const gz = request({ input: await shard("empty.jsonl.gz", await gzip("")) });
    expect((await post(app(), gz)).status).toBe(422);
  });
});

describe("failures mid-shard leave no partial manifest", () => {
  it("a read that breaks mid-shard is a 502 and writes nothing; a retry succeeds", async () => {
    const big = jsonl(Array.from({ length: 2000 }, (_, i) => ({ id: `x${i}`, text: `text ${i}` })));
    const input = await shard("big.jsonl", big);
    const faulty = faultStorage({
      failReadAfterBytes: { match: (u) => u === input, bytes: big.length / 2 },
    }, storage);
    const req = request({ input });
    const r = await post(app({ storage: faulty, batchSize: 64 }), req);
    expect(r.status).toBe(502);
    expect(r.body.error.code).toBe("storage_error");
    expect(r.body.error.message).toMatch(
      /reading input .*big\.jsonl failed mid-shard: injected fault: connection reset.*nothing was written/,
    );
    await expectNoManifest(req.output);
    const retry = await post(app(), req);
    expect(retry.status).toBe(201);
    expect(retry.body.counts.records).toBe(2000);
  });

  it("a shard that takes longer than the time limit is a 504 and writes nothing", async () => {
    const input = `${root}good.jsonl`;
    const faulty = faultStorage(
      { stallReadAfterBytes: { match: (u) => u === input, bytes: 10 } },
      storage,
    );
    const req = request({ input });
    const a = app({ storage: faulty, timeoutMs: 300 });
    const r = await post(a, req);
    expect(r.status).toBe(504);
    expect(r.body.error.message).toMatch(/took longer than 300 ms; nothing was written/);
    await expectNoManifest(req.output);
    const metrics = await (await a.request("/metrics")).text();
    expect(metrics).toMatch(/datarater_errors_total\{kind="timeout"\} 1/);
  });
});

describe("create-only manifests (If-None-Match: *)", () => {
  it("the same request again returns the existing manifest with cached: true", async () => {
    const a = app();
    const req = request();
    const first = await post(a, req);
    expect(first.status).toBe(201);
    expect(first.body.cached).toBe(false);
    const again = await post(a, req);
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ ...first.body, cached: true });
  });

  it("a different model or policy for an existing output is a 409, never an overwrite", async () => {
    const a = app();
    const req = request();
    expect((await post(a, req)).status).toBe(201);
    const before = await Deno.readTextFile(new URL(req.output));
    const r = await post(a, { ...req, policy: { kind: "keepFraction", fraction: 0.5 } });
    expect(r.status).toBe(409);
    expect(r.body.error.message).toMatch(
      /already exists for a different request \(its policy is \{"kind":"threshold","threshold":0\}, this request's \{"kind":"keepFraction","fraction":0.5\}\)/,
    );
    const other = await buildTestModel({ seed: 2 });
    await Deno.writeFile(`${dir}/other.onnx`, other.bytes);
    const r2 = await post(a, { ...req, model: `${root}other.onnx` });
    expect(r2.status).toBe(409);
    expect(r2.body.error.message).toMatch(
      new RegExp(`written by model sha256 ${model.sha256}, this request's is ${other.sha256}`),
    );
    expect(await Deno.readTextFile(new URL(req.output))).toBe(before);
  });

  it("an output that exists but is not a manifest is a 409", async () => {
    const req = request();
    await Deno.mkdir(`${dir}/out`, { recursive: true });
    await Deno.writeTextFile(new URL(req.output), "precious data\n");
    const r = await post(app(), req);
    expect(r.status).toBe(409);
    expect(r.body.error.message).toMatch(/exists and is not a manifest/);
    expect(await Deno.readTextFile(new URL(req.output))).toBe("precious data\n");
  });

  it("two replicas racing on one shard: the write that loses the race (412) returns the winner's manifest", async () => {
    // Both replicas pass the existence check before either writes.
    const faulty = racingWrites(storage);
    const req = request();
    const [a, b] = await Promise.all([
      post(app({ storage: faulty }), req),
      post(app({ storage: faulty }), req),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 201]);
    const [created, cached] = a.status === 201 ? [a, b] : [b, a];
    expect(cached.body).toEqual({ ...created.body, cached: true });
  });

  it("two replicas racing with different policies: one wins, the other gets a 409", async () => {
    const faulty = racingWrites(storage);
    const req = request();
    const [a, b] = await Promise.all([
      post(app({ storage: faulty }), req),
      post(app({ storage: faulty }), { ...req, policy: { kind: "threshold", threshold: 1 } }),
    ]);
    expect([a.status, b.status].sort()).toEqual([201, 409]);
  });
});

describe("probes and metrics", () => {
  it("/healthz answers ok; /readyz is 503 until the warm models are loaded, then 200", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = app({
      warmModels: [`${root}model.onnx`],
      storage: faultStorage({ beforeRead: () => gate }, storage),
    });
    expect(await (await a.request("/healthz")).json()).toEqual({ status: "ok" });
    const warming = await a.request("/readyz");
    expect(warming.status).toBe(503);
    expect(await warming.json()).toEqual({ status: "not ready", warming: [`${root}model.onnx`] });
    release();
    await a.warmUp();
    const ready = await a.request("/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: "ready",
      models: [model.sha256],
      runtime: "node",
    });
  });

  it("/readyz is 503 with the reason when a warm model cannot be loaded", async () => {
    const a = app({ warmModels: [`${root}absent.onnx`] });
    await a.warmUp();
    const res = await a.request("/readyz");
    expect(res.status).toBe(503);
    expect((await res.json()).error).toBe(`model ${root}absent.onnx does not exist`);
  });

  it("/metrics is Prometheus text with requests, records, latency histograms and errors by kind", async () => {
    const a = app();
    await post(a, request());
    await post(a, request({ input: `${root}missing.jsonl` }));
    const res = await a.request("/metrics");
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(
      /datarater_http_requests_total\{route="\/v1\/score",method="POST",status="201"\} 1/,
    );
    expect(text).toMatch(/datarater_records_total\{outcome="kept"\} \d+/);
    expect(text).toMatch(/datarater_records_total\{outcome="dropped"\} \d+/);
    expect(text).toMatch(
      /datarater_http_request_duration_seconds_bucket\{le="0.05",route="\/v1\/score"\}/,
    );
    expect(text).toMatch(/datarater_inference_batch_duration_seconds_count 1/);
    expect(text).toMatch(/datarater_errors_total\{kind="not_found"\} 1/);
    expect(text).toMatch(/datarater_shards_total\{result="created"\} 1/);
  });
});

describe("bearer auth through hono/bearer-auth", () => {
  it("another scheme or a malformed token is a 401 like a missing or wrong one, with the challenge", async () => {
    const a = app({ token: "s3cret" });
    const basic = await a.request("/v1/score", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Basic czNjcmV0" },
      body: JSON.stringify(request()),
    });
    expect(basic.status).toBe(401);
    expect(basic.headers.get("www-authenticate")).toBe('Bearer realm="datarater"');
    expect((await basic.json()).error).toEqual({
      code: "unauthorized",
      message: "missing `Authorization: Bearer <token>` header",
    });
    const odd = await post(a, request(), { authorization: "Bearer not a token!" });
    expect(odd.status).toBe(401);
    expect(odd.body.error).toEqual({ code: "unauthorized", message: "the bearer token is wrong" });
    const prefix = await post(a, request(), { authorization: "Bearer s3cre" });
    expect(prefix.status).toBe(401);
    expect(prefix.body.error.message).toBe("the bearer token is wrong");
    const lower = await post(a, request(), { authorization: "bearer s3cret" });
    expect(lower.status).toBe(201);
  });
});

describe("the body read through hono/validator", () => {
  it("a JSON body is read whatever its Content-Type label, as before the validator", async () => {
    const a = app();
    const req = request();
    const labels: Record<string, string>[] = [{}, {
      "content-type": "application/x-www-form-urlencoded",
    }];
    for (const headers of labels) {
      const res = await a.request("/v1/score", {
        method: "POST",
        headers,
        body: JSON.stringify({ ...req, output: `${root}out/label-${outputs++}.manifest.jsonl` }),
      });
      expect(res.status).toBe(201);
    }
    const bad = await a.request("/v1/score", { method: "POST", body: JSON.stringify({}) });
    expect(bad.status).toBe(400);
    const body = await bad.json();
    expect(body.error.code).toBe("bad_request");
    expect(body.error.issues.map((i: { path: string }) => i.path)).toEqual([
      "model",
      "input",
      "output",
      "policy",
    ]);
  });
});

describe("request time limits (issue #11 items 9 and 10)", () => {
  it("a body that never arrives in full is a 408 within the body limit, over a real socket", async () => {
    const a = app({ bodyTimeoutMs: 300 });
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, a.fetch);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    try {
      const started = performance.now();
      await conn.write(
        new TextEncoder().encode(
          "POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
            'Content-Length: 100\r\n\r\n{"mo',
        ),
      );
      let answer = "";
      const buf = new Uint8Array(4096);
      const read = (async () => {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) return;
          answer += new TextDecoder().decode(buf.subarray(0, n));
          if (/\r\n\r\n[\s\S]*\}\}/.test(answer)) return;
        }
      })();
      let hang: ReturnType<typeof setTimeout> | undefined;
      const gaveUp = await Promise.race([
        read.then(() => false),
        new Promise<boolean>((r) => (hang = setTimeout(() => r(true), 5000))),
      ]);
      clearTimeout(hang);
      const elapsed = performance.now() - started;
      expect(gaveUp, `no answer in 5 s; got ${JSON.stringify(answer)}`).toBe(false);
      expect(answer).toMatch(/^HTTP\/1\.1 408 /);
      const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
      expect(body.error).toEqual({
        code: "request_timeout",
        message: "the request body did not arrive within 300 ms",
        timeoutMs: 300,
      });
      expect(elapsed).toBeGreaterThanOrEqual(290);
      expect(elapsed).toBeLessThan(3000);
    } finally {
      conn.close();
      await server.shutdown();
    }
    const metrics = await (await a.request("/metrics")).text();
    expect(metrics).toMatch(/datarater_errors_total\{kind="request_timeout"\} 1/);
  });

  it("a timeout while the manifest is written waits for the write: 201 and the manifest is there", async () => {
    const timeoutMs = 1500;
    let writeBegan = 0;
    const faulty = faultStorage({
      beforeWrite: async () => {
        writeBegan = performance.now();
        await new Promise((r) => setTimeout(r, timeoutMs + 500));
      },
    }, storage);
    const a = app({ storage: faulty, timeoutMs, warmModels: [`${root}model.onnx`] });
    await a.warmUp();
    const req = request();
    const started = performance.now();
    const r = await post(a, req);
    // The timer fired while the write was held: the answer waited for the write to settle.
    expect(writeBegan).toBeGreaterThan(0);
    expect(writeBegan - started).toBeLessThan(timeoutMs);
    expect(performance.now() - started).toBeGreaterThan(timeoutMs);
    expect(r.status).toBe(201);
    expect(r.body.manifest).toBe(req.output);
    expect((await readManifestHeader(storage, req.output)).counts.records).toBe(50);
  });

  it("a write that fails after the timeout fired answers its failure (502), never a 504, and no manifest", async () => {
    const timeoutMs = 1500;
    const faulty = faultStorage({
      beforeWrite: async (uri) => {
        await new Promise((r) => setTimeout(r, timeoutMs + 500));
        throw new Error(`injected fault: the store dropped the write of ${uri}`);
      },
    }, storage);
    const a = app({ storage: faulty, timeoutMs, warmModels: [`${root}model.onnx`] });
    await a.warmUp();
    const req = request();
    const r = await post(a, req);
    expect(r.status).toBe(502);
    expect(r.body.error.code).toBe("storage_error");
    await expectNoManifest(req.output);
  });

  it("once the timeout has answered 504, a scoring that reaches the write stage writes nothing", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let writes = 0;
    const faulty = faultStorage({
      // Holds the model load (this request's only whole-object read) past the time limit.
      beforeRead: (uri) => uri.endsWith("slow-model.onnx") ? held : Promise.resolve(),
      beforeWrite: () => (writes++, Promise.resolve()),
    }, storage);
    await Deno.copyFile(`${dir}/model.onnx`, `${dir}/slow-model.onnx`);
    const a = app({ storage: faulty, timeoutMs: 300 });
    const req = request({ model: `${root}slow-model.onnx` });
    const r = await post(a, req);
    expect(r.status).toBe(504);
    expect(r.body.error.code).toBe("timeout");
    release();
    // Let the abandoned scoring run on to where it would write.
    await new Promise((r) => setTimeout(r, 1500));
    expect(writes).toBe(0);
    await expectNoManifest(req.output);
  });
});
