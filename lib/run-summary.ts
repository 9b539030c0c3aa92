/**
 * A scoring run's summary: one small JSON object (`_summary.json`) beside the manifests, with the
 * totals users ask for first (records, bytes, kept, dropped), the totals per policy, and a score
 * histogram over every entry. `deno task score` writes it after the fan-out; `deno task manifest
 * summary PREFIX` prints it. It is derived from the manifests under the prefix, so it is rewritten
 * (not create-only) when a later run adds shards.
 *
 * @example
 * ```ts
 * const { uri, summary } = await writeRunSummary(storage, "s3://b/manifests/run1/");
 * console.log(summary.kept, "of", summary.records, "kept; written to", uri);
 * ```
 */
import { z } from "zod";
import {
  type ManifestHeader,
  PolicySchema,
  readManifestEntries,
  readManifestHeader,
} from "./manifest.ts";
import { MANIFEST_SUFFIX } from "./materialize.ts";
import type { Storage } from "./storage.ts";

/** The summary's object name under the manifests prefix. */
export const RUN_SUMMARY_NAME = "_summary.json";

const Count = z.number().int().min(0);

/** The summary object (schemas/run-summary.schema.json is generated from this). */
export const RunSummarySchema = z.object({
  kind: z.literal("datarater.run-summary"),
  version: z.literal(1),
  createdAt: z.string(),
  /** The manifests prefix summarised. */
  manifests: z.string(),
  shards: Count,
  records: Count,
  /** Bytes of the input shards as stored (compressed bytes for gzip shards). */
  bytes: Count,
  kept: Count,
  dropped: Count,
  skippedInvalid: Count,
  byPolicy: z.array(z.object({
    policy: PolicySchema,
    shards: Count,
    records: Count,
    kept: Count,
    dropped: Count,
  })),
  scores: z.object({
    min: z.number().nullable(),
    max: z.number().nullable(),
    mean: z.number().nullable(),
    /** `bins` equal-width bins over [min, max]: `edges` has bins + 1 values. */
    histogram: z.object({
      edges: z.array(z.number()),
      kept: z.array(Count),
      dropped: z.array(Count),
    }).nullable(),
  }),
});
export type RunSummary = z.infer<typeof RunSummarySchema>;

function withSlash(prefix: string): string {
  return prefix.endsWith("/") ? prefix : prefix + "/";
}

/**
 * Summarises every manifest v1 under a prefix: headers first (totals, score range), then one
 * streaming pass over the entries for the histogram.
 */
export async function buildRunSummary(
  storage: Storage,
  prefix: string,
  options: { bins?: number } = {},
): Promise<RunSummary> {
  const bins = options.bins ?? 20;
  const manifests: string[] = [];
  for await (const o of storage.list(withSlash(prefix))) {
    if (o.uri.endsWith(MANIFEST_SUFFIX)) manifests.push(o.uri);
  }
  const headers: ManifestHeader[] = [];
  for (const m of manifests) headers.push(await readManifestHeader(storage, m));
  const sum = (f: (h: ManifestHeader) => number) => headers.reduce((n, h) => n + f(h), 0);
  const byPolicy = new Map<string, RunSummary["byPolicy"][number]>();
  for (const h of headers) {
    const key = JSON.stringify(h.policy);
    const p = byPolicy.get(key) ?? { policy: h.policy, shards: 0, records: 0, kept: 0, dropped: 0 };
    p.shards++;
    p.records += h.counts.records;
    p.kept += h.counts.kept;
    p.dropped += h.counts.dropped;
    byPolicy.set(key, p);
  }
  const scored = headers.filter((h) => h.scores.min !== null);
  const min = scored.length ? Math.min(...scored.map((h) => h.scores.min!)) : null;
  const max = scored.length ? Math.max(...scored.map((h) => h.scores.max!)) : null;
  const records = sum((h) => h.counts.records);
  const mean = scored.length && records
    ? scored.reduce((n, h) => n + h.scores.mean! * h.counts.records, 0) / records
    : null;
  let histogram: RunSummary["scores"]["histogram"] = null;
  if (min !== null && max !== null) {
    const width = (max - min) / bins || 1;
    const kept = new Array(bins).fill(0);
    const dropped = new Array(bins).fill(0);
    for (const m of manifests) {
      for await (const e of readManifestEntries(storage, m)) {
        const b = Math.min(bins - 1, Math.max(0, Math.floor((e.score - min) / width)));
        (e.keep ? kept : dropped)[b]++;
      }
    }
    histogram = {
      edges: Array.from({ length: bins + 1 }, (_, i) => min + i * width),
      kept,
      dropped,
    };
  }
  return {
    kind: "datarater.run-summary",
    version: 1,
    createdAt: new Date().toISOString(),
    manifests: withSlash(prefix),
    shards: headers.length,
    records,
    bytes: sum((h) => h.input.size),
    kept: sum((h) => h.counts.kept),
    dropped: sum((h) => h.counts.dropped),
    skippedInvalid: sum((h) => h.counts.skippedInvalid),
    byPolicy: [...byPolicy.values()],
    scores: { min, max, mean, histogram },
  };
}

/** Builds the summary of a prefix and writes it to `PREFIX/_summary.json`. */
export async function writeRunSummary(
  storage: Storage,
  prefix: string,
  options: { bins?: number } = {},
): Promise<{ uri: string; summary: RunSummary }> {
  const summary = await buildRunSummary(storage, prefix, options);
  const uri = withSlash(prefix) + RUN_SUMMARY_NAME;
  await storage.write(uri, JSON.stringify(summary, null, 2) + "\n", {
    contentType: "application/json",
  });
  return { uri, summary };
}

/** The summary written under a prefix (validated), or null when there is none. */
export async function readRunSummary(storage: Storage, prefix: string): Promise<RunSummary | null> {
  const raw = await storage.readJsonIfExists(withSlash(prefix) + RUN_SUMMARY_NAME);
  return raw === null ? null : RunSummarySchema.parse(raw);
}
