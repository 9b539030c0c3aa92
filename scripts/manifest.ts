/**
 * `deno task manifest URI [--bins 20] [--verify] [--json]`: a manifest's summary and a histogram
 * of its scores (kept and dropped per bin), read with the manifest reader library (streaming, so
 * any size works). `--verify` also checks the shard against the manifest (ETag, else sha256).
 *
 * `deno task manifest summary PREFIX [--json]`: the run summary `PREFIX/_summary.json` that
 * `deno task score` wrote (computed from the manifests, and not written, when there is none).
 *
 * `deno task manifest convert SOURCE [--parquet [--parquet-uri URI]] [--dolma NAME
 * [--dolma-uri URI]]`: writes the Parquet manifest (default: beside it, `NAME.manifest.parquet`)
 * and/or dolma attributes (default: dolma's path derived from the shard's) of one manifest, or of
 * every manifest under a prefix (lib/manifest-formats.ts); create-only, existing outputs are kept.
 *
 * The histogram is drawn with block characters here: a bar per bin is a few lines, and no
 * terminal plotting package draws stacked kept/dropped bars.
 */
import { parseArgs } from "node:util";
import { type ManifestHeader, readManifest, verifyManifest } from "../lib/manifest.ts";
import { type Storage, storageFromEnv } from "../lib/storage.ts";
import { writeManifestFormats } from "../lib/manifest-formats.ts";
import { MANIFEST_SUFFIX } from "../lib/materialize.ts";
import { buildRunSummary, readRunSummary, type RunSummary } from "../lib/run-summary.ts";

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

/** A run summary as text lines (totals, per policy, histogram). */
export function renderRunSummary(s: RunSummary): string[] {
  const pct = (k: number, n: number) => (n ? ((100 * k) / n).toFixed(1) : "0.0");
  const lines = [
    `run       ${s.manifests} (${s.shards} shards, ${s.bytes} bytes)`,
    `records   ${s.records}: kept ${s.kept} (${pct(s.kept, s.records)}%), dropped ${s.dropped}, ` +
    `skipped invalid ${s.skippedInvalid}`,
    `scores    min ${s.scores.min} mean ${s.scores.mean} max ${s.scores.max}`,
    ...s.byPolicy.map((p) =>
      `policy    ${JSON.stringify(p.policy)}: ${p.shards} shards, ${p.records} records, ` +
      `kept ${p.kept}, dropped ${p.dropped}`
    ),
  ];
  const h = s.scores.histogram;
  if (h && s.scores.min !== null && s.scores.max !== null) {
    lines.push("", ...renderHistogram({ ...h, min: s.scores.min, max: s.scores.max }));
  }
  return lines;
}

async function convertMain(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      parquet: { type: "boolean", default: false },
      "parquet-uri": { type: "string" },
      dolma: { type: "string" },
      "dolma-uri": { type: "string" },
    },
  });
  const wantsParquet = values.parquet || values["parquet-uri"] !== undefined;
  if (positionals.length !== 1 || (!wantsParquet && !values.dolma)) {
    console.error(
      "usage: deno task manifest convert MANIFEST_OR_PREFIX [--parquet [--parquet-uri URI]] " +
        "[--dolma NAME [--dolma-uri URI]]",
    );
    Deno.exit(2);
  }
  const source = positionals[0];
  const storage = storageFromEnv(Deno.env.toObject());
  const manifests: string[] = [];
  if (source.endsWith(MANIFEST_SUFFIX)) manifests.push(source);
  else {
    for await (const o of storage.list(source.endsWith("/") ? source : source + "/")) {
      if (o.uri.endsWith(MANIFEST_SUFFIX)) manifests.push(o.uri);
    }
  }
  if (manifests.length > 1 && (values["parquet-uri"] || values["dolma-uri"])) {
    console.error("--parquet-uri and --dolma-uri name one object: give one manifest, not a prefix");
    Deno.exit(2);
  }
  for (const m of manifests) {
    const written = await writeManifestFormats(storage, m, {
      parquet: wantsParquet
        ? values["parquet-uri"] ?? m.slice(0, -MANIFEST_SUFFIX.length) + ".manifest.parquet"
        : undefined,
      dolmaAttributes: values.dolma ? { name: values.dolma, uri: values["dolma-uri"] } : undefined,
    });
    console.log(JSON.stringify({ manifest: m, ...written }));
  }
}

async function summaryMain(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 1) {
    console.error("usage: deno task manifest summary PREFIX [--json]");
    Deno.exit(2);
  }
  const storage = storageFromEnv(Deno.env.toObject());
  const summary = await readRunSummary(storage, positionals[0]) ??
    await buildRunSummary(storage, positionals[0]);
  console.log(
    values.json ? JSON.stringify(summary, null, 2) : renderRunSummary(summary).join("\n"),
  );
}

if (import.meta.main && Deno.args[0] === "convert") {
  await convertMain(Deno.args.slice(1));
} else if (import.meta.main && Deno.args[0] === "summary") {
  await summaryMain(Deno.args.slice(1));
} else if (import.meta.main) {
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
