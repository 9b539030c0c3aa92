/**
 * `deno task manifest URI [--bins 20] [--verify] [--json]`: a manifest's summary and a histogram
 * of its scores (kept and dropped per bin), read with the manifest reader library (streaming, so
 * any size works). `--verify` also checks the shard against the manifest (ETag, else sha256).
 *
 * The histogram is drawn with block characters here: a bar per bin is a few lines, and no
 * terminal plotting package draws stacked kept/dropped bars.
 */
import { parseArgs } from "node:util";
import { type ManifestHeader, readManifest, verifyManifest } from "../lib/manifest.ts";
import { type Storage, storageFromEnv } from "../lib/storage.ts";

/** Score histogram: `bins` equal-width bins over [min, max], kept and dropped counted apart. */
export interface ScoreHistogram {
  min: number;
  max: number;
  edges: number[];
  kept: number[];
  dropped: number[];
}

/**
 * Reads a manifest's header and builds its score histogram (one streaming pass over the entries).
 *
 * @example
 * ```ts
 * const { header, histogram } = await summariseManifest(new FileStorage(), "/out/part-0.manifest.jsonl");
 * ```
 */
export async function summariseManifest(
  storage: Storage,
  uri: string,
  bins = 20,
): Promise<{ header: ManifestHeader; histogram: ScoreHistogram | null }> {
  const { header, entries } = await readManifest(storage, uri);
  const { min, max } = header.scores;
  if (min === null || max === null) {
    for await (const _ of entries) { /* validates the (empty) body */ }
    return { header, histogram: null };
  }
  const width = (max - min) / bins || 1;
  const kept = new Array(bins).fill(0);
  const dropped = new Array(bins).fill(0);
  for await (const e of entries) {
    const b = Math.min(bins - 1, Math.max(0, Math.floor((e.score - min) / width)));
    (e.keep ? kept : dropped)[b]++;
  }
  const edges = Array.from({ length: bins + 1 }, (_, i) => min + i * width);
  return { header, histogram: { min, max, edges, kept, dropped } };
}

/** Renders a histogram as text lines: `[lo, hi)  kept█ dropped░  counts`. */
export function renderHistogram(h: ScoreHistogram, width = 50): string[] {
  const most = Math.max(1, ...h.kept.map((k, i) => k + h.dropped[i]));
  const fmt = (x: number) => x.toPrecision(4).padStart(11);
  return h.kept.map((k, i) => {
    const d = h.dropped[i];
    const kw = Math.round((k / most) * width);
    const dw = Math.round(((k + d) / most) * width) - kw;
    return `${fmt(h.edges[i])} ${"█".repeat(kw)}${"░".repeat(dw)}${
      " ".repeat(Math.max(0, width - kw - dw))
    } kept ${k}, dropped ${d}`;
  });
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      bins: { type: "string", default: "20" },
      verify: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
    },
  });
  if (positionals.length !== 1) {
    console.error("usage: deno task manifest MANIFEST_URI [--bins N] [--verify] [--json]");
    Deno.exit(2);
  }
  const uri = positionals[0];
  const storage = storageFromEnv(Deno.env.toObject());
  const { header, histogram } = await summariseManifest(storage, uri, Number(values.bins));
  const verified = values.verify ? await verifyManifest(storage, uri, { header }) : undefined;
  if (values.json) {
    console.log(JSON.stringify({ header, histogram, verified }, null, 2));
  } else {
    const c = header.counts;
    const pct = c.records ? ((100 * c.kept) / c.records).toFixed(1) : "0.0";
    const lines = [
      `manifest  ${uri}`,
      `model     ${header.model.uri} (sha256 ${header.model.sha256.slice(0, 16)}…)`,
      `input     ${header.input.uri} (${header.input.size} bytes, etag ${header.input.etag})`,
      `policy    ${JSON.stringify(header.policy)}  threshold ${header.threshold ?? "n/a"}`,
      `records   ${c.records}: kept ${c.kept} (${pct}%), dropped ${c.dropped}, ` +
      `skipped invalid ${c.skippedInvalid}`,
      `scores    min ${header.scores.min} mean ${header.scores.mean} max ${header.scores.max}`,
      `deciles   ${(header.scores.deciles ?? []).map((d) => d.toPrecision(4)).join(" ")}`,
    ];
    if (header.invalid.length) {
      lines.push(
        `invalid   ${
          header.invalid.slice(0, 5).map((i) => `line ${i.line}: ${i.error}`).join("; ")
        }`,
      );
    }
    if (verified) {
      lines.push(
        `verify    ${verified.ok ? "ok" : "MISMATCH"} (by ${verified.method})${
          verified.reason ? `: ${verified.reason}` : ""
        }`,
      );
    }
    console.log(lines.join("\n"));
    if (histogram) console.log("\n" + renderHistogram(histogram).join("\n"));
  }
  if (verified && !verified.ok) Deno.exit(1);
}
