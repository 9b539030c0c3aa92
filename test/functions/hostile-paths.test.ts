/**
 * Paths a hostile or clumsy caller sends to escape the allowed roots or to make the function
 * hang or fail as if it were the server's fault: dot segments in S3 keys (against s3rver, which
 * resolves them), symlinks inside file roots, outputs that are not regular files, NUL bytes and
 * over-long names, a model whose graph onnxruntime refuses. Each case asserts the status, the
 * error code, and that nothing was read or written outside the roots.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import onnxProto from "onnx-proto";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import { startupCleanup } from "../../functions/main.ts";
import { SPOOL_PREFIX } from "../../lib/manifest.ts";
import { encodeJsonl } from "../../lib/records.ts";
import { type S3Server, startS3Server } from "../../lib/s3-server.ts";
import {
  createStorage,
  FileStorage,
  InvalidUriError,
  parseUri,
  PreconditionFailedError,
  type UriStorage,
} from "../../lib/storage.ts";
import { hostTag, tempFileOwner } from "../../lib/tempfiles.ts";
import {
  buildTestModel,
  jsonl,
  postScore as post,
  type TestModel,
  thresholdRequests,
} from "./fixtures.ts";

const SECRET = "SECRET-CONTENT-root:x:0:0:do-not-echo";
let dir: string;
let rootDir: string;
let outside: string;
let root: string;
let model: TestModel;
let fileApp: ScoringApp;
const files = new FileStorage();

let s3: S3Server;
let s3Storage: UriStorage;
let s3App: ScoringApp;

const records = (prefix: string) =>
  Array.from({ length: 20 }, (_, i) => ({ id: `${prefix}${i}`, text: `record ${i}` }));

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "hostile-paths-" });
  rootDir = `${dir}/root`;
  outside = `${dir}/outside`;
  await Deno.mkdir(`${rootDir}/inner`, { recursive: true });
  await Deno.mkdir(outside);
  root = `file://${rootDir}/`;
  model = await buildTestModel();
  await Deno.writeFile(`${rootDir}/model.onnx`, model.bytes);
  await Deno.writeFile(`${outside}/model.onnx`, model.bytes);
  await Deno.writeTextFile(`${rootDir}/good.jsonl`, jsonl(records("g")));
  await Deno.writeTextFile(`${outside}/secret.jsonl`, jsonl(records("secret")));
  await Deno.writeTextFile(`${outside}/passwd`, `${SECRET}\n`);
  // Links inside the root that lead out of it, and one that stays inside.
  await Deno.symlink(`${outside}/secret.jsonl`, `${rootDir}/link-secret.jsonl`);
  await Deno.symlink(`${outside}/passwd`, `${rootDir}/link-passwd.jsonl`);
  await Deno.symlink(`${outside}/model.onnx`, `${rootDir}/link-model.onnx`);
  await Deno.symlink(outside, `${rootDir}/linkdir`);
  await Deno.symlink(`${outside}/created.manifest.jsonl`, `${rootDir}/dangling.manifest.jsonl`);
  await Deno.symlink("/dev/zero", `${rootDir}/zero.manifest.jsonl`);
  await Deno.symlink(`${rootDir}/good.jsonl`, `${rootDir}/inner/link-good.jsonl`);
  await new Deno.Command("mkfifo", { args: [`${rootDir}/fifo.manifest.jsonl`] }).output();
  // A short timeout: without the fix the FIFO blocks its reader until it fires.
  fileApp = createApp({ storage: files, allowedRoots: [root], timeoutMs: 5000 });

  s3 = await startS3Server({ dir: `${dir}/s3`, buckets: ["corpus", "other", "tenants"] });
  s3Storage = createStorage({ s3: s3.settings });
  await s3Storage.write("s3://corpus/model.onnx", model.bytes);
  await s3Storage.write("s3://corpus/good.jsonl", encodeJsonl(records("c")));
  await s3Storage.write("s3://tenants/tenantA/model.onnx", model.bytes);
  await s3Storage.write("s3://tenants/tenantA/good.jsonl", encodeJsonl(records("a")));
  await s3Storage.write("s3://other/secret.jsonl", encodeJsonl(records("other")));
  await s3Storage.write("s3://tenants/tenantB/secret.jsonl", encodeJsonl(records("tenantB")));
  s3App = createApp({
    storage: s3Storage,
    allowedRoots: ["s3://corpus/", "s3://tenants/tenantA/"],
  });
}, 60_000);

afterAll(async () => {
  // Release a reader the unfixed code may have left blocked on the FIFO (O_RDWR never blocks).
  const fifo = `${rootDir}/fifo.manifest.jsonl`;
  await Deno.open(fifo, { read: true, write: true }).then((f) => f.close()).catch(() => {});
  await fileApp?.close();
  await s3App?.close();
  s3Storage?.close();
  await s3?.stop();
  await Deno.remove(dir, { recursive: true });
});

let n = 0;
const thresholdRequest = thresholdRequests(() => root);
const fileReq = (overrides: Record<string, unknown> = {}) =>
  thresholdRequest(`${root}good.jsonl`, overrides);

/**
 * Runs `script` in a child Deno and kills it with -9 once it prints (it prints when it holds the
 * file under test open): what a crashed writer leaves behind. The child's pid.
 */
async function killAfterFirstOutput(script: string): Promise<{ pid: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read();
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  return { pid: child.pid };
}

async function outsideNames(): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(outside))).map((e) => e.name).sort();
}
const ORIGINAL_OUTSIDE = ["model.onnx", "passwd", "secret.jsonl"];

describe("S3 keys with dot or empty segments (s3rver resolves them)", () => {
  function s3Req(overrides: Record<string, unknown>) {
    return {
      model: "s3://corpus/model.onnx",
      input: "s3://corpus/good.jsonl",
      output: `s3://corpus/out/m${n++}.manifest.jsonl`,
      policy: { kind: "threshold", threshold: 0 },
      ...overrides,
    };
  }

  it("the control: a plain request under the bucket root is scored", async () => {
    const r = await post(s3App, s3Req({}));
    expect(r.status).toBe(201);
  });

  it("reading another bucket through `..` is a 400 naming the dot segment", async () => {
    for (
      const input of [
        "s3://corpus/../other/secret.jsonl",
        "s3://corpus/x/../../other/secret.jsonl",
        "s3://corpus/%2e%2e/other/secret.jsonl",
        "s3://corpus/%2E%2E/other/secret.jsonl",
        "s3://corpus/./../other/secret.jsonl",
      ]
    ) {
      const r = await post(s3App, s3Req({ input }));
      expect(r.status, input).toBe(400);
      expect(r.body.error.code).toBe("bad_request");
      expect(r.body.error.message).toMatch(/may not contain `\.` or `\.\.` segments/);
      expect(JSON.stringify(r.body)).not.toMatch(/other\d/);
    }
  });

  it("writing into another bucket through `..` is a 400 and creates nothing there", async () => {
    const r = await post(s3App, s3Req({ output: "s3://corpus/../other/x.manifest.jsonl" }));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("bad_request");
    expect(await s3Storage.stat("s3://other/x.manifest.jsonl")).toBeNull();
    const names = (await Array.fromAsync(s3Storage.list("s3://other/"))).map((o) => o.uri);
    expect(names).toEqual(["s3://other/secret.jsonl"]);
  });

  it("a prefix root does not reach a sibling prefix, by name or through `..`", async () => {
    const tenant = (o: Record<string, unknown>) =>
      s3Req({
        model: "s3://tenants/tenantA/model.onnx",
        input: "s3://tenants/tenantA/good.jsonl",
        output: `s3://tenants/tenantA/out/m${n++}.manifest.jsonl`,
        ...o,
      });
    expect((await post(s3App, tenant({}))).status).toBe(201);
    const direct = await post(s3App, tenant({ input: "s3://tenants/tenantB/secret.jsonl" }));
    expect(direct.status).toBe(403);
    const read = await post(
      s3App,
      tenant({ input: "s3://tenants/tenantA/../tenantB/secret.jsonl" }),
    );
    expect(read.status).toBe(400);
    expect(read.body.error.code).toBe("bad_request");
    const write = await post(
      s3App,
      tenant({ output: "s3://tenants/tenantA/../tenantB/x.manifest.jsonl" }),
    );
    expect(write.status).toBe(400);
    expect(await s3Storage.stat("s3://tenants/tenantB/x.manifest.jsonl")).toBeNull();
  });

  it("empty segments, which a resolver may collapse, are a 400", async () => {
    for (const input of ["s3://corpus//good.jsonl", "s3://corpus/a//../../other/secret.jsonl"]) {
      const r = await post(s3App, s3Req({ input }));
      expect(r.status, input).toBe(400);
      expect(r.body.error.message).toMatch(/may not contain (empty|`\.`)/);
    }
  });

  it("parseUri refuses the forms a resolver might see: decoded, NFKC-folded, backslashes", () => {
    for (
      const uri of [
        "s3://b1b/a/%252e%252e/c",
        "s3://b1b/a/\u2024\u2024/c",
        "s3://b1b/a/..\uff0fc",
        "s3://b1b/a\\..\\c",
        "s3://b1b/a/%00",
        "s3://b1b/" + "k".repeat(1025),
      ]
    ) {
      expect(() => parseUri(uri), uri).toThrow(InvalidUriError);
    }
    // Dots inside names, a trailing slash, and a stray % are ordinary keys.
    expect(parseUri("s3://b1b/a/..b/c.d./e%zz/")).toEqual({
      scheme: "s3",
      bucket: "b1b",
      key: "a/..b/c.d./e%zz/",
    });
  });
});

describe("symlinks inside a file root", () => {
  it("the control: a link that stays inside the root is followed", async () => {
    const r = await post(fileApp, fileReq({ input: `${root}inner/link-good.jsonl` }));
    expect(r.status).toBe(201);
    expect(r.body.counts.records).toBe(20);
  });

  it("an input linked to a file outside is a 403, whatever the file holds", async () => {
    const r = await post(fileApp, fileReq({ input: `${root}link-secret.jsonl` }));
    expect(r.status).toBe(403);
    expect(r.body.error).toMatchObject({ code: "forbidden", field: "input" });
    expect(r.body.error.message).toMatch(/a link on its path leads out of them/);
  });

  it("a link to a non-JSON file outside never echoes its content", async () => {
    for (const onInvalid of ["fail", "skip"]) {
      const r = await post(fileApp, fileReq({ input: `${root}link-passwd.jsonl`, onInvalid }));
      expect(r.status).toBe(403);
      expect(JSON.stringify(r.body)).not.toContain("SECRET");
      expect(JSON.stringify(r.body)).not.toContain("root:x");
    }
  });

  it("an input under a linked folder is a 403", async () => {
    const r = await post(fileApp, fileReq({ input: `${root}linkdir/secret.jsonl` }));
    expect(r.status).toBe(403);
  });

  it("a model linked to a file outside is a 403", async () => {
    const r = await post(fileApp, fileReq({ model: `${root}link-model.onnx` }));
    expect(r.status).toBe(403);
    expect(r.body.error.field).toBe("model");
  });

  it("an output under a linked folder, even in folders still to be created, is a 403", async () => {
    for (const output of [`${root}linkdir/m.manifest.jsonl`, `${root}linkdir/new/deeper/m.jsonl`]) {
      const r = await post(fileApp, fileReq({ output }));
      expect(r.status, output).toBe(403);
      expect(r.body.error.field).toBe("output");
    }
    expect(await outsideNames()).toEqual(ORIGINAL_OUTSIDE);
  });

  it("an output that is a dangling link to a path outside is a 403, and nothing is created", async () => {
    const r = await post(fileApp, fileReq({ output: `${root}dangling.manifest.jsonl` }));
    expect(r.status).toBe(403);
    expect(await outsideNames()).toEqual(ORIGINAL_OUTSIDE);
  });

  it("an output linked to /dev/zero is a 4xx, not a 500", async () => {
    const r = await post(fileApp, fileReq({ output: `${root}zero.manifest.jsonl` }));
    expect(r.status).toBe(403);
  });

  it("an output that is a FIFO is a 400 at once, not a hang", async () => {
    const start = performance.now();
    const r = await post(fileApp, fileReq({ output: `${root}fifo.manifest.jsonl` }));
    expect(r.status).toBe(400);
    expect(r.body.error.message).toBe(
      `output ${root}fifo.manifest.jsonl is a FIFO, not a regular file: give the URI of a file ` +
        "to create",
    );
    expect(performance.now() - start).toBeLessThan(2000);
  });

  it("a root that is itself a link is resolved too", async () => {
    await Deno.symlink(rootDir, `${dir}/root-link`);
    const app = createApp({ storage: files, allowedRoots: [`file://${dir}/root-link/`] });
    try {
      const linked = `file://${dir}/root-link/`;
      const ok = await post(app, {
        ...fileReq(),
        model: `${linked}model.onnx`,
        input: `${linked}good.jsonl`,
        output: `${linked}out/via-link-${n++}.manifest.jsonl`,
      });
      expect(ok.status).toBe(201);
      const escaped = await post(app, {
        ...fileReq(),
        model: `${linked}model.onnx`,
        input: `${linked}link-secret.jsonl`,
        output: `${linked}out/via-link-${n++}.manifest.jsonl`,
      });
      expect(escaped.status).toBe(403);
    } finally {
      await app.close();
    }
  });
});

describe("input errors are 4xx naming the problem", () => {
  it("a NUL byte in a file URI is a 400", async () => {
    const r = await post(fileApp, fileReq({ input: `${root}a%00b.jsonl` }));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("bad_request");
    expect(r.body.error.message).toMatch(/may not contain NUL bytes/);
  });

  it("an over-long name is a 400", async () => {
    const r = await post(fileApp, fileReq({ output: `${root}${"n".repeat(300)}.jsonl` }));
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/a name in a path is at most 255 bytes/);
  });

  it("a model with DataRater metadata whose graph onnxruntime refuses is a 422", async () => {
    const { onnx } = onnxProto;
    const decoded = onnx.ModelProto.decode(model.bytes);
    decoded.graph!.node![0].opType = "NoSuchOperator";
    await Deno.writeFile(`${rootDir}/badgraph.onnx`, onnx.ModelProto.encode(decoded).finish());
    const req = fileReq({ model: `${root}badgraph.onnx` });
    const r = await post(fileApp, req);
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe("not_a_datarater_model");
    expect(r.body.error.message).toMatch(/graph cannot be loaded/);
    expect(await files.stat(req.output)).toBeNull();
  });
});

describe("FileStorage writes", () => {
  it("create-only never follows a link at the final name", async () => {
    const target = `${outside}/victim.txt`;
    await Deno.writeTextFile(target, "original");
    await Deno.symlink(target, `${rootDir}/victim-link.txt`);
    await expect(files.write(`${rootDir}/victim-link.txt`, "overwritten", { ifNoneMatch: "*" }))
      .rejects.toThrow(PreconditionFailedError);
    expect(await Deno.readTextFile(target)).toBe("original");
    await Deno.remove(target);
  });

  it("the temporary file beside the output names its owner and is gone after the write", async () => {
    const folder = `${rootDir}/tmpnames`;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        const names = await Array.fromAsync(Deno.readDir(folder));
        const tmp = names.map((e) => e.name).filter((x) => x.endsWith(".tmp"));
        expect(tmp).toHaveLength(1);
        expect(tmp[0].startsWith(".a.jsonl.")).toBe(true);
        expect(tempFileOwner(tmp[0])).toEqual({ pid: Deno.pid, host: hostTag() });
        c.enqueue(new TextEncoder().encode("x"));
        c.close();
      },
    }, { highWaterMark: 0 }); // pulled only once the write reads it: the file is open by then
    await files.write(`${folder}/a.jsonl`, body, { ifNoneMatch: "*" });
    const names = (await Array.fromAsync(Deno.readDir(folder))).map((e) => e.name);
    expect(names).toEqual(["a.jsonl"]);
  });

  it(
    "a writer killed mid-write leaves a temporary file that the next write there removes",
    async () => {
      const folder = `${dir}/crash`;
      const script = `
      import { FileStorage } from ${
        JSON.stringify(new URL("../../lib/storage.ts", import.meta.url).href)
      };
      let pulls = 0;
      const body = new ReadableStream({
        pull(c) {
          if (pulls++) return new Promise(() => {});
          c.enqueue(new Uint8Array(10));
          console.log("writing");
        },
      }, { highWaterMark: 0 });
      await new FileStorage().write(${JSON.stringify(`${folder}/big.jsonl`)}, body);
    `;
      // "writing": the temporary file exists and is open.
      const child = await killAfterFirstOutput(script);
      const left = (await Array.fromAsync(Deno.readDir(folder))).map((e) => e.name);
      expect(left).toHaveLength(1);
      expect(tempFileOwner(left[0])?.pid).toBe(child.pid);
      // Past the grace period a dead writer's file is garbage.
      const old = new Date(Date.now() - 5 * 60_000);
      await Deno.utime(`${folder}/${left[0]}`, old, old);
      await files.write(`${folder}/other.jsonl`, "y");
      expect((await Array.fromAsync(Deno.readDir(folder))).map((e) => e.name)).toEqual([
        "other.jsonl",
      ]);
    },
    30_000,
  );
});

describe("spool files of a killed scorer", () => {
  it("the next start removes a spool file whose owner was killed", async () => {
    const spoolDir = `${dir}/spool`;
    await Deno.mkdir(spoolDir);
    // A real spool, written by a process then killed with -9.
    const script = `
      import { ManifestSpool } from ${
      JSON.stringify(new URL("../../lib/manifest.ts", import.meta.url).href)
    };
      const spool = await ManifestSpool.create(${JSON.stringify(spoolDir)});
      await spool.add({ id: "a", line: 1, score: 0.5, keep: true });
      console.log("spooling");
      await new Promise(() => {});
    `;
    const child = await killAfterFirstOutput(script);
    await Deno.writeTextFile(`${spoolDir}/unrelated.txt`, "kept");
    const [left] = (await Array.fromAsync(Deno.readDir(spoolDir)))
      .map((e) => e.name).filter((x) => x.startsWith(SPOOL_PREFIX));
    expect(tempFileOwner(left)?.pid).toBe(child.pid);
    // Within the grace period it could be a reused pid's fresh file: kept.
    expect(await startupCleanup({ spoolDir })).toEqual([]);
    const old = new Date(Date.now() - 5 * 60_000);
    await Deno.utime(`${spoolDir}/${left}`, old, old);
    expect(await startupCleanup({ spoolDir })).toEqual([left]);
    expect((await Array.fromAsync(Deno.readDir(spoolDir))).map((e) => e.name)).toEqual([
      "unrelated.txt",
    ]);
  }, 30_000);
});
