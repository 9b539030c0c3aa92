/**
 * The standing matrix of hostile and clumsy requests: one row per request, each with the status
 * and error code it must get, against the real app over a file root (and an S3 root on s3rver),
 * with a bearer token set. A row whose answer changes is a regression, whichever side it moves to.
 *
 * To add a case: add a row to {@link ROWS} (and a fixture to `beforeAll` if it needs a file).
 * `request(...)` builds a valid request under the file root that a row overrides field by field.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import onnxProto from "onnx-proto";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import { encodeJsonl } from "../../lib/records.ts";
import { type S3Server, startS3Server } from "../../lib/s3-server.ts";
import { createStorage, type UriStorage } from "../../lib/storage.ts";
import { buildTestModel, jsonl, postScore } from "./fixtures.ts";

const TOKEN = "matrix-token";
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** What a row's `body` gets to build its request from. */
interface Ctx {
  /** `file:///…/root/`, the allowed file root. */
  root: string;
  /** The temporary folder above the root. */
  dir: string;
  /** A valid request under the file root (a fresh output each call), with fields overridden. */
  request(overrides?: Record<string, unknown>): Record<string, unknown>;
  /** A valid request under `s3://corpus/`, with fields overridden. */
  s3Request(overrides?: Record<string, unknown>): Record<string, unknown>;
}

interface Row {
  name: string;
  /** The request body: an object (sent as JSON) or a raw string. */
  body(ctx: Ctx): unknown;
  /** Request headers (default: the right bearer token). */
  headers?: Record<string, string>;
  /** Which app answers: the file-root one (default) or the S3 one. */
  app?: "file" | "s3";
  status: number;
  code: string;
}

const ROWS: Row[] = [
  // Authentication and the request itself
  {
    name: "no Authorization header",
    body: (c) => c.request(),
    headers: {},
    status: 401,
    code: "unauthorized",
  },
  {
    name: "a wrong bearer token",
    body: (c) => c.request(),
    headers: { authorization: "Bearer nope" },
    status: 401,
    code: "unauthorized",
  },
  {
    name: "a body over the limit",
    body: (c) => c.request({ pad: "x".repeat(70 * 1024) }),
    status: 413,
    code: "payload_too_large",
  },
  { name: "a body that is not JSON", body: () => "{nope", status: 400, code: "bad_request" },
  {
    name: "an invalid policy",
    body: (c) => c.request({ policy: { kind: "topK", k: 9, b: 4 } }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "an unknown field",
    body: (c) => c.request({ extra: 1 }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "a prefix as input",
    body: (c) => c.request({ input: c.root }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "output equal to input",
    body: (c) => c.request({ output: `${c.root}good.jsonl` }),
    status: 400,
    code: "bad_request",
  },
  // Schemes and roots
  {
    name: "an SSRF-style http URL",
    body: (c) => c.request({ input: "http://169.254.169.254/latest/meta-data" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "another scheme (ftp)",
    body: (c) => c.request({ model: "ftp://example.com/m.onnx" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "a file outside the roots",
    body: (c) => c.request({ input: "file:///etc/passwd" }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "`..` in a file URI",
    body: (c) => c.request({ output: `${c.root}../escape.manifest.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "`%2e%2e` in a file URI",
    body: (c) => c.request({ input: `${c.root}%2e%2e/outside/secret.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "a bare path outside the roots",
    body: (c) => c.request({ input: `${c.dir}/outside/secret.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  // Links and special files inside the root
  {
    name: "an input linked to a file outside",
    body: (c) => c.request({ input: `${c.root}link-secret.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "a model linked to a file outside",
    body: (c) => c.request({ model: `${c.root}link-model.onnx` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "an output under a folder linked outside",
    body: (c) => c.request({ output: `${c.root}linkdir/new/m.manifest.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "an output linked to /dev/zero",
    body: (c) => c.request({ output: `${c.root}zero.manifest.jsonl` }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "an output that is a FIFO",
    body: (c) => c.request({ output: `${c.root}fifo.manifest.jsonl` }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "an output that is a folder",
    body: (c) => c.request({ output: `${c.root}afolder` }),
    status: 400,
    code: "bad_request",
  },
  // Malformed names
  {
    name: "%00 in a file URI",
    body: (c) => c.request({ input: `${c.root}a%00.jsonl` }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "an over-long name",
    body: (c) => c.request({ output: `${c.root}${"n".repeat(300)}.manifest.jsonl` }),
    status: 400,
    code: "bad_request",
  },
  // Inputs and models
  {
    name: "a missing input",
    body: (c) => c.request({ input: `${c.root}nope.jsonl` }),
    status: 404,
    code: "not_found",
  },
  {
    name: "a line that is not valid UTF-8",
    body: (c) => c.request({ input: `${c.root}bad-utf8.jsonl` }),
    status: 400,
    code: "invalid_record",
  },
  {
    name: "a line that is not JSON",
    body: (c) => c.request({ input: `${c.root}bad-json.jsonl` }),
    status: 400,
    code: "invalid_record",
  },
  {
    name: "duplicate ids",
    body: (c) => c.request({ input: `${c.root}dup.jsonl` }),
    status: 400,
    code: "duplicate_id",
  },
  {
    name: "an empty shard",
    body: (c) => c.request({ input: `${c.root}empty.jsonl` }),
    status: 422,
    code: "empty_shard",
  },
  {
    name: "a model that is not ONNX",
    body: (c) => c.request({ model: `${c.root}text.onnx` }),
    status: 422,
    code: "not_a_datarater_model",
  },
  {
    name: "a model whose graph onnxruntime refuses",
    body: (c) => c.request({ model: `${c.root}badgraph.onnx` }),
    status: 422,
    code: "not_a_datarater_model",
  },
  // S3 (s3rver resolves dot segments, so these would reach other buckets and prefixes)
  { name: "s3: the control", app: "s3", body: (c) => c.s3Request(), status: 201, code: "" },
  {
    name: "s3: reading another bucket through `..`",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://corpus/../other/secret.jsonl" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "s3: writing into another bucket through `..`",
    app: "s3",
    body: (c) => c.s3Request({ output: "s3://corpus/../other/x.manifest.jsonl" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "s3: `%2e%2e` in a key",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://corpus/%2e%2e/other/secret.jsonl" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "s3: an empty segment",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://corpus//good.jsonl" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "s3: a prefix root's sibling prefix",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://tenants/tenantB/secret.jsonl" }),
    status: 403,
    code: "forbidden",
  },
  {
    name: "s3: a prefix root's sibling through `..`",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://tenants/tenantA/../tenantB/secret.jsonl" }),
    status: 400,
    code: "bad_request",
  },
  {
    name: "s3: a bucket outside the roots",
    app: "s3",
    body: (c) => c.s3Request({ input: "s3://other/secret.jsonl" }),
    status: 403,
    code: "forbidden",
  },
];

let ctx: Ctx;
let fileApp: ScoringApp;
let s3: S3Server;
let s3Storage: UriStorage;
let s3App: ScoringApp;
let dir: string;

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "bad-input-matrix-" });
  const r = `${dir}/root`;
  await Deno.mkdir(`${r}/afolder`, { recursive: true });
  await Deno.mkdir(`${dir}/outside`);
  const model = await buildTestModel();
  const good = Array.from({ length: 10 }, (_, i) => ({ id: `g${i}`, text: `record ${i}` }));
  await Deno.writeFile(`${r}/model.onnx`, model.bytes);
  await Deno.writeTextFile(`${r}/good.jsonl`, jsonl(good));
  await Deno.writeFile(
    `${r}/bad-utf8.jsonl`,
    new Uint8Array([...new TextEncoder().encode('{"id":"a","text":"'), 0xff, 0xfe, 0x22, 0x7d, 10]),
  );
  await Deno.writeTextFile(`${r}/bad-json.jsonl`, '{"id":"a","text":"x"}\n{"id":"b", oops}\n');
  await Deno.writeTextFile(`${r}/dup.jsonl`, jsonl([good[0], good[1], good[0]]));
  await Deno.writeTextFile(`${r}/empty.jsonl`, "\n\n");
  await Deno.writeTextFile(`${r}/text.onnx`, "definitely not a model");
  const { onnx } = onnxProto;
  const broken = onnx.ModelProto.decode(model.bytes);
  broken.graph!.node![0].opType = "NoSuchOperator";
  await Deno.writeFile(`${r}/badgraph.onnx`, onnx.ModelProto.encode(broken).finish());
  await Deno.writeTextFile(`${dir}/outside/secret.jsonl`, jsonl(good));
  await Deno.writeFile(`${dir}/outside/model.onnx`, model.bytes);
  await Deno.symlink(`${dir}/outside/secret.jsonl`, `${r}/link-secret.jsonl`);
  await Deno.symlink(`${dir}/outside/model.onnx`, `${r}/link-model.onnx`);
  await Deno.symlink(`${dir}/outside`, `${r}/linkdir`);
  await Deno.symlink("/dev/zero", `${r}/zero.manifest.jsonl`);
  await new Deno.Command("mkfifo", { args: [`${r}/fifo.manifest.jsonl`] }).output();
  const root = `file://${r}/`;
  fileApp = createApp({
    storage: createStorage(),
    allowedRoots: [root],
    token: TOKEN,
    timeoutMs: 5000,
  });

  s3 = await startS3Server({ dir: `${dir}/s3`, buckets: ["corpus", "other", "tenants"] });
  s3Storage = createStorage({ s3: s3.settings });
  await s3Storage.write("s3://corpus/model.onnx", model.bytes);
  await s3Storage.write("s3://corpus/good.jsonl", encodeJsonl(good));
  await s3Storage.write("s3://other/secret.jsonl", encodeJsonl(good));
  await s3Storage.write("s3://tenants/tenantB/secret.jsonl", encodeJsonl(good));
  s3App = createApp({
    storage: s3Storage,
    allowedRoots: ["s3://corpus/", "s3://tenants/tenantA/"],
    token: TOKEN,
  });

  let n = 0;
  ctx = {
    root,
    dir,
    request: (o = {}) => ({
      model: `${root}model.onnx`,
      input: `${root}good.jsonl`,
      output: `${root}out/m${n++}.manifest.jsonl`,
      policy: { kind: "threshold", threshold: 0 },
      ...o,
    }),
    s3Request: (o = {}) => ({
      model: "s3://corpus/model.onnx",
      input: "s3://corpus/good.jsonl",
      output: `s3://corpus/out/m${n++}.manifest.jsonl`,
      policy: { kind: "threshold", threshold: 0 },
      ...o,
    }),
  };
}, 60_000);

afterAll(async () => {
  // A reader blocked on the FIFO (a regression) is released: O_RDWR opens never block.
  await Deno.open(`${dir}/root/fifo.manifest.jsonl`, { read: true, write: true })
    .then((f) => f.close()).catch(() => {});
  await fileApp?.close();
  await s3App?.close();
  s3Storage?.close();
  await s3?.stop();
  await Deno.remove(dir, { recursive: true });
});

describe("bad-input matrix", () => {
  for (const row of ROWS) {
    it(`${row.name} → ${row.status}${row.code ? ` ${row.code}` : ""}`, async () => {
      const app = row.app === "s3" ? s3App : fileApp;
      const r = await postScore(app, row.body(ctx), row.headers ?? AUTH);
      expect(r.status, JSON.stringify(r.body)).toBe(row.status);
      if (row.code) expect(r.body.error.code).toBe(row.code);
      if (r.status >= 400) {
        // Every refusal says something; none is the catch-all.
        expect(r.body.error.message.length).toBeGreaterThan(10);
        expect(r.body.error.code).not.toBe("internal");
      }
    });
  }
});
