/**
 * Reading the evaluation's data: record shards under a prefix (with their analysis fields), and the
 * records a DataRater kept, read through the filter manifests with the manifest reader library.
 *
 * @example
 * ```ts
 * const train = await loadRecords(storage, "s3://b/corpus/train/");
 * const kept = await loadKeptRecords("s3://b/manifests/keep-0.75/");
 * ```
 */
import { keptRecords, readManifest } from "../lib/manifest.ts";
import { encodeJsonlGz, readRecords } from "../lib/records.ts";
import { joinUri } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { listShards } from "../training/data.ts";

/** A record with the fields the analysis uses. */
export interface EvalRecord {
  id: string;
  text: string;
  /** The corpus's `source` label (analysis only; `unknown` when absent). */
  source: string;
  /** Corruption level where the corpus records one. */
  noise?: number;
  /** UTF-8 byte span of a damaged record's junk, where the corpus records one. */
  damage?: { start: number; end: number };
  /** Where a damaged record's junk sits, where the corpus records it. */
  position?: "head" | "body";
  /** Shard URI and 1-based line, to join with manifests. */
  shard: string;
  line: number;
}

/** All records of every shard under a prefix (or one shard), in shard then line order. */
export async function loadRecords(storage: Storage, prefix: string): Promise<EvalRecord[]> {
  const out: EvalRecord[] = [];
  for (const shard of await listShards(storage, prefix)) {
    for await (const r of readRecords(storage, shard, { onInvalid: "skip" })) {
      out.push({
        id: r.id,
        text: r.text,
        source: typeof r.record.source === "string" ? r.record.source : "unknown",
        noise: typeof r.record.noise === "number" ? r.record.noise : undefined,
        damage: damageOf(r.record.damage),
        position: r.record.position === "head" || r.record.position === "body"
          ? r.record.position
          : undefined,
        shard,
        line: r.line,
      });
    }
  }
  return out;
}

/** A record's `damage` field when it is a well-formed byte span; otherwise absent (reported as n/a). */
function damageOf(v: unknown): { start: number; end: number } | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const { start, end } = v as { start?: unknown; end?: unknown };
  return Number.isInteger(start) && Number.isInteger(end) && (start as number) >= 0 &&
      (end as number) >= (start as number)
    ? { start: start as number, end: end as number }
    : undefined;
}

/** Whether any object lies under `prefix` (an optional split such as `unseen/` may be absent). */
export async function hasObjects(storage: Storage, prefix: string): Promise<boolean> {
  for await (const _ of storage.list(prefix.endsWith("/") ? prefix : prefix + "/")) return true;
  return false;
}

/** Manifest URIs under a prefix, sorted (every object whose name ends in `.jsonl` or `.manifest.jsonl`). */
export async function listManifests(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix.endsWith("/") ? prefix : prefix + "/")) {
    if (/\.jsonl$/.test(o.uri)) out.push(o.uri);
  }
  if (out.length === 0) {
    throw new Error(`no manifests under ${prefix}: score the shards first (deno task score)`);
  }
  return out.sort();
}

/** Texts of the records the manifests under `prefix` keep (joined with their shards and verified). */
export async function loadKeptTexts(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const m of await listManifests(storage, prefix)) {
    for await (const r of keptRecords(storage, m)) out.push(r.text);
  }
  return out;
}

/** Every manifest entry under a prefix, keyed by `shard#line` and by id, for joining with {@link EvalRecord}s. */
export async function loadScores(
  storage: Storage,
  prefix: string,
): Promise<{
  scores: Map<string, { score: number; keep: boolean }>;
  byId: Map<string, { score: number; keep: boolean }>;
  threshold: number | null;
  records: number;
}> {
  const scores = new Map<string, { score: number; keep: boolean }>();
  const byId = new Map<string, { score: number; keep: boolean }>();
  let threshold: number | null = null;
  let records = 0;
  for (const m of await listManifests(storage, prefix)) {
    const { header, entries } = await readManifest(storage, m);
    threshold = header.threshold;
    records += header.counts.records;
    for await (const e of entries) {
      const v = { score: e.score, keep: e.keep };
      scores.set(`${header.input.uri}#${e.line}`, v);
      byId.set(e.id, v);
    }
  }
  return { scores, byId, threshold, records };
}

/**
 * A short excerpt for the report: around the junk where the record says where it is (from a little
 * before its start), otherwise the head; `chars` characters at most.
 */
export function excerpt(r: Pick<EvalRecord, "text" | "damage">, chars = 160): string {
  if (!r.damage) return r.text.slice(0, chars);
  const bytes = new TextEncoder().encode(r.text);
  const from = Math.max(0, Math.min(bytes.length, r.damage.start) - 40);
  // Decoding from a byte offset may start mid-character: the replacement character marks it.
  const text = new TextDecoder().decode(bytes.subarray(from, from + chars * 4));
  return (from > 0 ? "…" : "") + text.slice(0, chars);
}

/** Join key of a record with manifest entries. */
export function recordKey(r: Pick<EvalRecord, "shard" | "line">): string {
  return `${r.shard}#${r.line}`;
}

/**
 * Writes records as gzip JSON Lines shards under `prefix` (a filtered copy of a dataset), then a
 * `_done.json` marker with `info`; a prefix that has the marker is complete and is reused.
 */
export async function writeRecordShards(
  storage: Storage,
  prefix: string,
  records: { id: string; text: string; source?: string }[],
  info: Record<string, unknown>,
  shardSize = 2000,
): Promise<void> {
  for (let i = 0, n = 0; i < records.length || n === 0; i += shardSize, n++) {
    const chunk = records.slice(i, i + shardSize).map(({ id, text, source }) => ({
      id,
      text,
      source,
    }));
    await storage.write(
      joinUri(prefix, `shard-${String(n).padStart(5, "0")}.jsonl.gz`),
      await encodeJsonlGz(chunk),
    );
  }
  await storage.write(
    joinUri(prefix, "_done.json"),
    JSON.stringify({ records: records.length, ...info }) + "\n",
  );
}
