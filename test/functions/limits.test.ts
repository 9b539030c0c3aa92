/**
 * Bounds on what one request can cost or poison, through the real app over local files: long ids
 * never reach a manifest header or an error body unbounded, compressed inputs are limited by what
 * they expand to, over-long lines honour `onInvalid: "skip"`, a truncated gzip input is the
 * caller's 4xx, and storage errors are told apart by class, not by name.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScoringApp } from "../../functions/app.ts";
import { readManifest, readManifestHeader } from "../../lib/manifest.ts";
import { gzip } from "../../lib/records.ts";
import { FileStorage } from "../../lib/storage.ts";
import { faultStorage } from "./fault-storage.ts";
import { appPool, buildTestModel, jsonl, thresholdRequests } from "./fixtures.ts";

const storage = new FileStorage();
let dir: string;
let root: string;
const { app, closeAll } = appPool(() => ({ storage, allowedRoots: [root] }));
const request = thresholdRequests(() => root);

beforeAll(async () => {
  dir = await Deno.makeTempDir({ prefix: "score-limits-" });
  root = `file://${dir}/`;
  await Deno.writeFile(`${dir}/model.onnx`, (await buildTestModel()).bytes);
});

afterAll(async () => {
  await closeAll();
  await Deno.remove(dir, { recursive: true });
});

async function shard(name: string, content: string | Uint8Array): Promise<string> {
  if (typeof content === "string") await Deno.writeTextFile(`${dir}/${name}`, content);
  else await Deno.writeFile(`${dir}/${name}`, content);
  return `${root}${name}`;
}

/** Posts a score request; the status, the body's size in bytes, and the body. */
async function post(a: ScoringApp, body: unknown) {
  const res = await a.request("/v1/score", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, bytes: text.length, body: JSON.parse(text) };
}

describe("long ids", () => {
  const longId = "L".repeat(4 << 20); // the 40 MB, scaled down: the bounds are the same

  it("three lines sharing a huge id, skipped: 201, a small header, and the output stays readable", async () => {
    const input = await shard(
      "long-ids.jsonl",
      jsonl([
        { id: "a", text: "first" },
        ...[1, 2, 3].map((i) => ({ id: longId, text: `copy ${i}` })),
        { id: "b", text: "last" },
      ]),
    );
    const a = app();
    const req = request(input, { onInvalid: "skip" });
    const r = await post(a, req);
    expect(r.status).toBe(201);
    expect(r.bytes).toBeLessThan(4096);
    expect(r.body.counts).toEqual({
      records: 2,
      kept: r.body.counts.kept,
      dropped: r.body.counts.dropped,
      skippedInvalid: 3,
    });
    const header = await readManifestHeader(storage, req.output);
    expect(header.invalid).toEqual([2, 3, 4].map((line) => ({
      line,
      error: `field "id" is at least ${4 << 20} bytes, over the 1024-byte limit for ids`,
    })));
    const firstLine = (await Deno.readTextFile(new URL(req.output))).split("\n")[0];
    expect(firstLine.length).toBeLessThan(4096);
    // The same request again answers from the manifest, which every reader can open.
    const again = await post(a, req);
    expect(again.status).toBe(200);
    expect(again.body.cached).toBe(true);
    const { entries } = await readManifest(storage, req.output);
    expect((await Array.fromAsync(entries)).map((e) => e.id)).toEqual(["a", "b"]);
  });

  it("with onInvalid fail a huge id is a small 400 id-too-long naming the line and the limit", async () => {
    const input = await shard("long-id-fail.jsonl", jsonl([{ id: longId, text: "t" }]));
    const r = await post(app(), request(input));
    expect(r.status).toBe(400);
    expect(r.bytes).toBeLessThan(2048);
    expect(r.body.error).toMatchObject({ code: "invalid_record", line: 1, kind: "id-too-long" });
    expect(r.body.error.message).toContain(
      `line 1: field "id" is at least ${4 << 20} bytes, over the 1024-byte limit for ids`,
    );
  });

  it("the id limit is an app option", async () => {
    const input = await shard("id9.jsonl", jsonl([{ id: "123456789", text: "t" }]));
    const r = await post(app({ limits: { maxIdBytes: 8 } }), request(input));
    expect(r.status).toBe(400);
    expect(r.body.error.kind).toBe("id-too-long");
    expect((await post(app({ limits: { maxIdBytes: 9 } }), request(input))).status).toBe(201);
  });

  it("duplicate ids under the limit are quoted cut short in the header, the error body and its details", async () => {
    const id = "d".repeat(1000);
    const input = await shard("dup-ids.jsonl", jsonl([{ id, text: "1" }, { id, text: "2" }]));
    const skip = request(input, { onInvalid: "skip" });
    expect((await post(app(), skip)).status).toBe(201);
    const quoted = `"${"d".repeat(99)}…(1002 chars)`;
    expect((await readManifestHeader(storage, skip.output)).invalid).toEqual([
      { line: 2, error: `duplicate id ${quoted} (first at line 1)` },
    ]);
    const r = await post(app(), request(input));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("duplicate_id");
    expect(r.body.error.id).toBe(`${"d".repeat(100)}…(1000 chars)`);
    expect(r.body.error.message).toContain(`duplicate id ${quoted} (first at line 1)`);
    expect(r.bytes).toBeLessThan(2048);
  });

  it("at most 100 invalid lines are listed, each reason bounded; the count is exact", async () => {
    // The reason quotes the id field's name, which the request sets: make it long.
    const idField = "k".repeat(5000);
    const lines = Array.from({ length: 150 }, (_, i) => JSON.stringify({ text: `no id ${i}` }));
    const input = await shard("many-bad.jsonl", lines.join("\n") + "\n");
    const req = request(input, { onInvalid: "skip", fields: { id: idField, text: "text" } });
    const r = await post(app(), req);
    expect(r.status).toBe(201);
    expect(r.body.counts).toMatchObject({ records: 0, skippedInvalid: 150 });
    const header = await readManifestHeader(storage, req.output);
    expect(header.invalid.length).toBe(100);
    expect(header.invalid[0].line).toBe(1);
    expect(header.invalid[0].error).toBe(`field "${"k".repeat(293)}…(5035 chars)`);
  });
});

describe("work per request", () => {
  it("a small gzip input expanding past the limit is a 413 naming the limit; nothing is written", async () => {
    const bomb = await gzip(new Uint8Array(8 << 20).fill(0x0a)); // 8 MiB of newlines, ~8 KB stored
    const input = await shard("bomb.jsonl.gz", bomb);
    const req = request(input);
    const started = performance.now();
    const r = await post(app({ limits: { maxDecompressedBytes: 1 << 20 } }), req);
    expect(r.status).toBe(413);
    expect(r.body.error).toMatchObject({
      code: "payload_too_large",
      kind: "too-many-bytes",
      limit: 1 << 20,
    });
    expect(r.body.error.message).toBe(
      `input ${input}: the shard expands to more than 1048576 bytes after decompression, the ` +
        "limit for this request (maxDecompressedBytes, maxExpansion): split the shard",
    );
    expect(await storage.stat(req.output)).toBeNull();
    // Not a speed test: a bound far above the expected milliseconds, far below the minutes of old.
    expect(performance.now() - started).toBeLessThan(30_000);
  });

  it("the expansion ratio bounds decompressed bytes relative to the stored size", async () => {
    const bomb = await gzip(new Uint8Array(8 << 20).fill(0x0a));
    const input = await shard("bomb-ratio.jsonl.gz", bomb);
    // Floor: 4 × 1 MiB, as the input is under 1 MiB stored.
    const r = await post(app({ limits: { maxExpansion: 4 } }), request(input));
    expect(r.status).toBe(413);
    expect(r.body.error.limit).toBe(4 << 20);
  });

  it("more lines than maxLines is a 413 naming the limit", async () => {
    const input = await shard(
      "many-lines.jsonl",
      "\n".repeat(5000) + jsonl([{ id: "a", text: "t" }]),
    );
    const r = await post(app({ limits: { maxLines: 1000 } }), request(input));
    expect(r.status).toBe(413);
    expect(r.body.error).toMatchObject({ kind: "too-many-lines", limit: 1000 });
    expect(r.body.error.message).toMatch(/the shard has more than 1000 lines.*\(maxLines\)/);
  });

  it("an over-long line is skipped and counted with onInvalid skip, and fails without it", async () => {
    const input = await shard(
      "long-line.jsonl",
      jsonl([{ id: "a", text: "short" }, { id: "b", text: "x".repeat(5000) }, {
        id: "c",
        text: "short",
      }]),
    );
    const a = app({ limits: { maxLineBytes: 1000 } });
    const req = request(input, { onInvalid: "skip" });
    const r = await post(a, req);
    expect(r.status).toBe(201);
    expect(r.body.counts.records).toBe(2);
    expect(r.body.counts.skippedInvalid).toBe(1);
    expect((await readManifestHeader(storage, req.output)).invalid).toEqual([
      { line: 2, error: "line longer than 1000 bytes" },
    ]);
    const fail = await post(a, request(input));
    expect(fail.status).toBe(400);
    expect(fail.body.error).toMatchObject({
      code: "invalid_record",
      line: 2,
      kind: "line-too-long",
    });
  });
});

describe("the caller's bad input is a 4xx, the store's failure a 5xx", () => {
  it("a truncated .gz input is a 400 saying it is not a complete gzip stream", async () => {
    const gz = await gzip(
      jsonl(Array.from({ length: 300 }, (_, i) => ({ id: `r${i}`, text: `t${i}` }))),
    );
    const input = await shard("truncated.jsonl.gz", gz.subarray(0, gz.length - 30));
    const req = request(input);
    const r = await post(app(), req);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "invalid_record", kind: "corrupt-gzip" });
    expect(r.body.error.message).toMatch(/is not a complete gzip stream/);
    expect(await storage.stat(req.output)).toBeNull();
  });

  it("a store failing mid-read of a .gz input stays a 502", async () => {
    const gz = await gzip(
      jsonl(Array.from({ length: 3000 }, (_, i) => ({ id: `r${i}`, text: `t${i}` }))),
    );
    const input = await shard("cut-by-store.jsonl.gz", gz);
    const failing = faultStorage(
      { failReadAfterBytes: { match: (u) => u === input, bytes: 100 } },
      storage,
    );
    const r = await post(app({ storage: failing }), request(input));
    expect(r.status).toBe(502);
    expect(r.body.error.code).toBe("storage_error");
  });

  it("only the storage's NotFoundError is a 404: another error named so is the store's 502", async () => {
    const input = await shard("named.jsonl", jsonl([{ id: "a", text: "t" }]));
    const odd = faultStorage({
      beforeRead: (uri) => {
        if (uri === input) throw new DOMException("the handle went away", "NotFoundError");
        return Promise.resolve();
      },
    }, storage);
    const r = await post(app({ storage: odd }), request(input));
    expect(r.status).toBe(502);
    expect(r.body.error.code).toBe("storage_error");
    expect(r.body.error.message).toBe(`cannot read input ${input}: the handle went away`);
  });
});
