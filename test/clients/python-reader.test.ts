/**
 * The Python manifest reader (clients/python/) against manifests the scoring function wrote: real
 * shards (JSON Lines with custom fields, skipped lines and numeric ids; gzip; Parquet; one on
 * s3rver) are scored in-process, read back with lib/manifest.ts, and the Python unittest file must
 * agree with what the TypeScript reader found, record by record, and fail where it fails (a
 * tampered shard, another shard, a truncated one, a manifest with a missing line or a wrong id, an
 * unknown version).
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type ScoringApp } from "../../functions/app.ts";
import {
  keptRecords,
  ManifestError,
  ManifestMismatchError,
  readManifest,
  readManifestEntries,
  readManifestHeader,
  verifyManifest,
} from "../../lib/manifest.ts";
import { encodeJsonlGz } from "../../lib/records.ts";
import type { UriStorage } from "../../lib/storage.ts";
import { recordsParquet } from "../lib/parquet-fixtures.ts";
import { buildTestModel, postScore, referenceTexts } from "../functions/fixtures.ts";
import { startTempS3, stopTempS3, type TempS3 } from "../support/temp-s3.ts";
import { concatBytes } from "../../lib/bytes.ts";

const CLIENT_DIR = new URL("../../clients/python/", import.meta.url).pathname;

let temp: TempS3;
let tmp: string;
let app: ScoringApp;
let modelUri: string;
let storage: UriStorage;

beforeAll(async () => {
  temp = await startTempS3("python-reader-", ["corpus"]);
  ({ tmp, storage } = temp);
  const model = await buildTestModel({ kind: "mlp", seqLen: 32 });
  modelUri = `file://${tmp}/rater.onnx`;
  await storage.write(modelUri, model.bytes);
  app = createApp({ storage, allowedRoots: [`file://${tmp}/`, "s3://corpus/"], batchSize: 16 });
});

afterAll(async () => {
  await app?.close();
  await stopTempS3(temp);
});

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const utf8 = (s: string) => new TextEncoder().encode(s);

/** Scores `input` into `output`; the request must succeed. */
async function score(input: string, output: string, extra: Record<string, unknown>) {
  const r = await postScore(app, { model: modelUri, input, output, ...extra });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

/** What the TypeScript reader finds for a scored shard: the Python reader must find the same. */
async function tsCase(shard: string, manifest: string) {
  const header = await readManifestHeader(storage, manifest);
  const entries = await Array.fromAsync(readManifestEntries(storage, manifest));
  const kept = await Array.fromAsync(keptRecords(storage, manifest, { shard }));
  const verified = await verifyManifest(storage, manifest, { shard });
  expect(verified.ok).toBe(true);
  return {
    shard,
    manifest,
    inputSha256: header.input.sha256,
    records: header.counts.records,
    kept: header.counts.kept,
    entries: entries.map((e) => [e.id, e.line, e.score, e.keep]),
    entrySpans: entries.map((e) => [e.spans, e.truncated ?? false]),
    keptIds: kept.map((r) => r.id),
    keptRecords: kept.map((r) => r.record),
    keptScores: kept.map((r) => r.score),
    verifyMethod: verified.method,
  };
}

/**
 * Shard A: custom field names, extra fields, Unicode, numeric ids (JavaScript's String(number) is
 * the id), a CRLF line, blank lines, and lines the scorer skips: bad JSON, a missing text, a
 * duplicate id, invalid UTF-8, NaN; the last line has no newline.
 */
function shardA(texts: string[], tamperedLine = -1): Uint8Array {
  const lines: Uint8Array[] = [];
  const add = (s: string | Uint8Array) => lines.push(typeof s === "string" ? utf8(s) : s);
  texts.forEach((text, i) => {
    const body = i === tamperedLine ? text.toUpperCase() : text;
    add(JSON.stringify({ doc_id: `a-${i}`, body, source: "ref", n: i, tags: ["x", i % 3] }));
    if (i === 5) add("");
    if (i === 9) add("   ");
  });
  add('{"doc_id":12345678901234567890,"body":"the big numeric id of clean text"}');
  add('{"doc_id":1e21,"body":"an exponent id"}');
  add('{"doc_id":1e-7,"body":"a small id and text"}');
  add('{"doc_id":7,"body":"naïve café 日本語 😀 and the rater scores data"}\r');
  add("{not json");
  add('{"doc_id":"missing-text"}');
  add(JSON.stringify({ doc_id: "a-3", body: "a duplicate id" }));
  add(
    concatBytes([utf8('{"doc_id":"bad-utf8","body":"x'), new Uint8Array([0xff, 0xfe]), utf8('"}')]),
  );
  add('{"doc_id":"nan","body":"text","v":NaN}');
  add(JSON.stringify({ doc_id: 1.5, body: "the last line, with no newline" }));
  return concatBytes(lines.flatMap((l, i) => i === 0 ? [l] : [utf8("\n"), l]));
}

/** Runs the Python tests with `cases`; their verbose results by test name. */
async function runPython(cases: unknown, env: Record<string, string>) {
  const casesPath = `${tmp}/cases.json`;
  await Deno.writeTextFile(casesPath, JSON.stringify(cases));
  const out = await new Deno.Command("python3", {
    args: ["-m", "unittest", "discover", "-s", "tests", "-v"],
    cwd: CLIENT_DIR,
    env: {
      PYTHONPATH: CLIENT_DIR,
      PYTHONDONTWRITEBYTECODE: "1",
      DATARATER_READER_CASES: casesPath,
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  const results: Record<string, string> = {};
  for (const m of text.matchAll(/^(test_\w+) \(.*\) \.\.\. (.*)$/gm)) results[m[1]] = m[2];
  return { code: out.code, text, results };
}

async function pythonHas(module: string): Promise<boolean> {
  const out = await new Deno.Command("python3", {
    args: ["-c", `import ${module}`],
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}

describe("the Python manifest reader", () => {
  it("agrees with lib/manifest.ts on scored JSONL, gzip, Parquet and S3 shards, and fails where it fails", async () => {
    // --- Shards scored by the real function.
    const textsA = referenceTexts(40, 11);
    const bytesA = shardA(textsA);
    const shardAUri = `file://${tmp}/shards/a.jsonl`;
    const manifestA = `file://${tmp}/manifests/a.manifest.jsonl`;
    await storage.write(shardAUri, bytesA);
    const a = await score(shardAUri, manifestA, {
      policy: { kind: "keepFraction", fraction: 0.5 },
      fields: { id: "doc_id", text: "body" },
      onInvalid: "skip",
    });
    expect(a.counts.skippedInvalid).toBe(5); // bad JSON, missing text, duplicate, bad UTF-8, NaN
    expect(a.counts.records).toBe(45);

    const shardBUri = `file://${tmp}/shards/b.jsonl.gz`;
    const manifestB = `file://${tmp}/manifests/b.manifest.jsonl`;
    const bytesB = await encodeJsonlGz(
      referenceTexts(300, 21).map((text, i) => ({ id: `b-${i}`, text })),
    );
    await storage.write(shardBUri, bytesB);
    await score(shardBUri, manifestB, { policy: { kind: "topK", k: 1, b: 2, seed: 3 } });

    const shardCUri = `file://${tmp}/shards/c.parquet`;
    const manifestC = `file://${tmp}/manifests/c.manifest.jsonl`;
    const rowsC = referenceTexts(90, 31).map((text, i) => ({ id: `p${i}`, text, lang: "en" }));
    await storage.write(shardCUri, recordsParquet(rowsC, { codec: "SNAPPY", rowGroupSize: 40 }));
    await score(shardCUri, manifestC, { policy: { kind: "threshold", threshold: 0 } });

    const shardDUri = "s3://corpus/shards/d.jsonl";
    const manifestD = "s3://corpus/manifests/d.manifest.jsonl";
    await storage.write(
      shardDUri,
      referenceTexts(50, 41).map((text, i) => JSON.stringify({ id: `d-${i}`, text })).join("\n"),
    );
    await score(shardDUri, manifestD, { policy: { kind: "keepFraction", fraction: 0.3 } });

    // Parquet on S3: the Python reader spools it to a temporary file for pyarrow.
    const shardEUri = "s3://corpus/shards/e.parquet";
    const manifestE = "s3://corpus/manifests/e.manifest.jsonl";
    await storage.write(shardEUri, recordsParquet(rowsC.slice(0, 50), { rowGroupSize: 20 }));
    await score(shardEUri, manifestE, { policy: { kind: "keepFraction", fraction: 0.6 } });

    const jsonl = await tsCase(shardAUri, manifestA);
    // The TS reader sees the numeric ids as the scorer wrote them.
    expect(jsonl.entries.map((e) => e[0])).toEqual(
      expect.arrayContaining(["12345678901234567000", "1e+21", "1e-7", "7", "1.5"]),
    );
    expect(jsonl.keptIds.length).toBeGreaterThan(5);
    expect(jsonl.keptIds.length).toBeLessThan(40);
    const gz = await tsCase(shardBUri, manifestB);
    const parquet = await tsCase(shardCUri, manifestC);
    const s3Case = { ...await tsCase(shardDUri, manifestD), endpoint: temp.s3.endpoint };
    const s3Parquet = await tsCase(shardEUri, manifestE);
    expect(s3Case.verifyMethod).toBe("etag");
    expect(jsonl.verifyMethod).toBe("etag");

    // --- Broken inputs, each also refused by the TypeScript reader.
    const keptIndex = Number(jsonl.keptIds.find((id) => /^a-\d+$/.test(id))!.slice(2));
    const tamperedBytes = shardA(textsA, keptIndex);
    expect(tamperedBytes.length).toBe(bytesA.length);
    expect(sha256(tamperedBytes)).not.toBe(sha256(bytesA));
    const tamperedUri = `file://${tmp}/shards/a-tampered.jsonl`;
    await storage.write(tamperedUri, tamperedBytes);
    await expect(Array.fromAsync(keptRecords(storage, manifestA, { shard: tamperedUri }))).rejects
      .toThrowError(new RegExp(`sha256 ${sha256(tamperedBytes)} differs`));

    await expect(Array.fromAsync(keptRecords(storage, manifestA, { shard: shardBUri }))).rejects
      .toThrowError(ManifestMismatchError);

    // Cut shard A after its 20th line: entries past it have no record.
    const lineEnds = [...bytesA.entries()].filter(([, b]) => b === 0x0a).map(([i]) => i);
    const truncatedBytes = bytesA.slice(0, lineEnds[19] + 1);
    const truncatedUri = `file://${tmp}/shards/a-truncated.jsonl`;
    await storage.write(truncatedUri, truncatedBytes);
    const tsBeforeEnd: string[] = [];
    let endsBeforeLine = 0;
    try {
      for await (
        const r of keptRecords(storage, manifestA, { shard: truncatedUri, verify: false })
      ) {
        tsBeforeEnd.push(r.id);
      }
    } catch (e) {
      expect(e).toBeInstanceOf(ManifestMismatchError);
      endsBeforeLine = Number(/the shard ends before line (\d+)/.exec((e as Error).message)![1]);
    }
    expect(endsBeforeLine).toBe(21);

    const truncatedGzUri = `file://${tmp}/shards/b-truncated.jsonl.gz`;
    await storage.write(truncatedGzUri, bytesB.slice(0, bytesB.length >> 1));
    await expect(
      Array.fromAsync(keptRecords(storage, manifestB, { shard: truncatedGzUri, verify: false })),
    )
      .rejects.toThrow();

    const manifestALines = (await storage.readText(manifestA)).trimEnd().split("\n");
    const missingUri = `file://${tmp}/manifests/a-missing-line.manifest.jsonl`;
    await storage.write(missingUri, manifestALines.filter((_, i) => i !== 10).join("\n") + "\n");
    await expect(Array.fromAsync(readManifestEntries(storage, missingUri))).rejects.toThrowError(
      /44 entries but the header counts 45/,
    );

    const wrongIdEntry = JSON.parse(manifestALines[12]);
    const wrongIdUri = `file://${tmp}/manifests/a-wrong-id.manifest.jsonl`;
    await storage.write(
      wrongIdUri,
      manifestALines.map((l, i) => i === 12 ? JSON.stringify({ ...wrongIdEntry, id: "zzz" }) : l)
        .join("\n") + "\n",
    );
    await expect(Array.fromAsync(keptRecords(storage, wrongIdUri, { shard: shardAUri }))).rejects
      .toThrowError(new RegExp(`at line ${wrongIdEntry.line}`));

    const v2Uri = `file://${tmp}/manifests/a-v2.manifest.jsonl`;
    await storage.write(
      v2Uri,
      [JSON.stringify({ ...JSON.parse(manifestALines[0]), version: 2 }), ...manifestALines.slice(1)]
        .join("\n") + "\n",
    );
    await expect(readManifest(storage, v2Uri)).rejects.toThrowError(ManifestError);

    const headerA = await readManifestHeader(storage, manifestA);
    const cases = {
      jsonl,
      gzip: gz,
      parquet,
      s3: s3Case,
      s3Parquet,
      tampered: {
        shard: tamperedUri,
        manifest: manifestA,
        expectedSha256: headerA.input.sha256,
        actualSha256: sha256(tamperedBytes),
        keptIds: jsonl.keptIds,
      },
      otherShard: { shard: shardBUri, manifest: manifestA, actualSize: bytesB.length },
      truncated: {
        shard: truncatedUri,
        manifest: manifestA,
        actualSize: truncatedBytes.length,
        expectedSize: bytesA.length,
        endsBeforeLine,
        keptIdsBeforeEnd: tsBeforeEnd,
      },
      truncatedGzip: { shard: truncatedGzUri, manifest: manifestB },
      missingLine: { shard: shardAUri, manifest: missingUri, entries: 44, records: 45 },
      wrongId: {
        shard: shardAUri,
        manifest: wrongIdUri,
        line: wrongIdEntry.line,
        manifestId: "zzz",
        shardId: wrongIdEntry.id,
      },
      unknownVersion: { shard: shardAUri, manifest: v2Uri },
    };

    // --- The Python side, given the same files.
    const [hasPyarrow, hasBoto3] = [await pythonHas("pyarrow"), await pythonHas("boto3")];
    const py = await runPython(cases, {
      S3_ENDPOINT: temp.s3.endpoint,
      AWS_ACCESS_KEY_ID: temp.s3.settings.accessKeyId!,
      AWS_SECRET_ACCESS_KEY: temp.s3.settings.secretAccessKey!,
      AWS_REGION: "us-east-1",
    });
    expect(py.code, py.text).toBe(0);
    const expected: Record<string, string> = {
      test_numeric_ids_read_as_javascript_string_of_number: "ok",
      test_parquet_integer_ids_are_exact_and_invalid_ids_are_none: "ok",
      test_jsonl_with_custom_fields_skipped_lines_and_numeric_ids: "ok",
      test_gzip_jsonl: "ok",
      test_parquet_with_pyarrow: hasPyarrow
        ? "ok"
        : "skipped 'pyarrow is not installed: Parquet shards need it'",
      test_parquet_without_pyarrow_says_so: hasPyarrow
        ? "skipped 'pyarrow is installed: test_parquet_with_pyarrow reads Parquet'"
        : "ok",
      test_s3_through_boto3_and_s3_endpoint: hasBoto3
        ? "ok"
        : "skipped 'boto3 is not installed: s3:// URIs need it'",
      test_s3_without_boto3_says_so: hasBoto3
        ? "skipped 'boto3 is installed: test_s3_through_boto3_and_s3_endpoint reads s3://'"
        : "ok",
      test_s3_parquet_is_spooled_for_pyarrow: hasBoto3 && hasPyarrow
        ? "ok"
        : "skipped 'boto3 and pyarrow are needed for Parquet shards on S3'",
      test_tampered_shard_fails_the_hash_naming_both_uris_and_hashes: "ok",
      test_manifest_of_another_shard_fails_before_any_record: "ok",
      test_truncated_shard: "ok",
      test_truncated_gzip_shard: "ok",
      test_manifest_with_a_missing_line: "ok",
      test_manifest_with_a_wrong_id: "ok",
      test_unknown_manifest_version: "ok",
      test_a_shard_read_as_a_manifest_says_what_it_is: "ok",
      test_entry_spans_and_truncation_are_read_and_checked: "ok",
    };
    expect(py.results, py.text).toEqual(expected);
    // The manifest changes mean nothing if the files the Python side read are not these.
    expect(sha256(await storage.readBytes(shardAUri))).toBe(headerA.input.sha256);
  });
});
