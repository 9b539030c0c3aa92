/**
 * Writes the evaluation's report: `report.md` (every section the issue asks for, shortfalls stated
 * plainly), `report.json` (the figures, machine-readable) and SVG plots of test NLL against
 * training FLOPs.
 *
 * The protocol (issue 12): the headline is the user's target set (the first rater, `datarater`,
 * whose outer objective is clean held-out prose) against every baseline and the prose-only oracle;
 * beside it the paper's same-distribution protocol (`datarater-pool`, outer objective the pool's
 * heldout split) against its own ceiling, the oracle that drops exactly the corrupted records. Every
 * gain carries a 95% t-interval over seeds with random dropping's gain at the same fraction beside
 * it, and a claim holds only when its interval clears the bar (paired by seed).
 *
 * The plots are drawn here as plain SVG polylines: a line chart needs axes, ticks and a legend and
 * nothing else, and a plotting library (vega and friends) would add megabytes of dependencies and a
 * headless renderer for that.
 *
 * @example
 * ```ts
 * const { files } = await writeReport(storage, "out/report/", { mixture, preset: "quick", ... });
 * ```
 */
import { joinUri } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { pairedClears, type SeedSummary } from "./compute-gain.ts";
import {
  type ClassifierStats,
  type EvaluationResult,
  type MethodGain,
  pct,
  type RatedExample,
  type RaterAnalysis,
  type RunSummary,
  type UnseenAnalysis,
} from "./evaluation.ts";
import { DEFAULT_FASTTEXT } from "./fasttext.ts";

/** The headline rater's method name (outer objective: the user's target set). */
export const HEADLINE = "datarater";
/** The same-distribution rater's method name (outer objective: the pool's heldout split). */
export const POOL_RATER = "datarater-pool";
/** The headline's ceiling: keeps clean prose by its label. */
const ORACLE = "oracle";
/** The same-distribution protocol's ceiling: drops exactly the corrupted records, keeps email. */
const POOL_CEILING = "oracle-no-corrupt";

/** One claim of the issue, measured. */
export interface Check {
  claim: string;
  target: string;
  measured: string;
  pass: boolean;
}

/** A gain over seeds as the report states it. */
export type GainFigure = SeedSummary & { perSeed: (number | null)[] };

/** The machine-readable report. */
export interface ReportJson {
  preset: string;
  primaryTest: string;
  /** Headline: mean over seeds of the net compute gain at the best discard fraction (primary test). */
  netComputeGain: number | null;
  netComputeGainSeeds: (number | null)[];
  /** 95% t-interval over seeds of the headline gain. */
  netComputeGainCi95: [number, number] | null;
  oracleComputeGain: number | null;
  bestDiscardFraction: number | null;
  /** Run name → test set → final NLL (nats per byte). */
  finalTestNll: Record<string, Record<string, number>>;
  /** `method@fraction` → source → share kept (train split). */
  keepRates: Record<string, Record<string, number>>;
  /** `method@fraction` → source → junk position (`head`, `body`, `n/a`) → share kept. */
  keepByPosition: Record<string, Record<string, Record<string, number>>>;
  /** `method@fraction%` (` (large LM)`) → test set → gain over seeds. */
  gains: Record<string, Record<string, GainFigure>>;
  /** Random dropping's gain at each fraction (`String(fraction)`) per test set: the noise floor. */
  noiseFloor: Record<string, Record<string, GainFigure>>;
  /** The paper's same-distribution protocol, beside the headline. */
  sameDistribution: {
    bestDiscardFraction: number | null;
    /** Test set → the rater's gain at its best fraction, its ceiling's, random's at that fraction. */
    byTest: Record<
      string,
      { rater: GainFigure | null; ceiling: GainFigure | null; random: GainFigure | null }
    >;
  } | null;
  transfer:
    | { bestSmall: number | null; bestLarge: number | null; withinOneStep: boolean | null }
    | null;
  /** Per rater: scores per source, extremes, thresholds. */
  raters: RaterAnalysis[];
  /** The headline rater on junk kinds never seen in meta-training; null without an `unseen/` split. */
  unseen: UnseenAnalysis | null;
  checks: Check[];
  /** The fastText baseline's classifier (training set sizes, scoring throughput), when it ran. */
  classifier: ClassifierStats | null;
  timings: Record<string, number>;
}

/** Baselines run at every discard fraction. */
const FRACTION_BASELINES = ["perplexity", "random", "fasttext"];
/** Baselines the headline's final NLL is compared with, each at its best setting. */
const COMPARED_BASELINES = ["heuristic", ...FRACTION_BASELINES];
/** "Near zero" for random dropping's gain: the noise-floor bar, fixed before any result. */
const NOISE_FLOOR = 0.05;

const fmt = (x: number | null | undefined, digits = 3) =>
  x === null || x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits);
const pctFmt = (x: number | null | undefined) =>
  x === null || x === undefined || !Number.isFinite(x) ? "n/a" : `${(x * 100).toFixed(1)}%`;
const ciFmt = (ci: [number, number] | null | undefined) =>
  ci ? `[${pctFmt(ci[0])}, ${pctFmt(ci[1])}]` : "[n/a]";

function label(method: string, fraction: number | null): string {
  return fraction === null ? method : `${method}@${pct(fraction)}%`;
}

function gainOf(
  ev: EvaluationResult,
  method: string,
  fraction: number | null,
  size = "small",
): MethodGain | undefined {
  return ev.gains.find((g) => g.method === method && g.fraction === fraction && g.size === size);
}

/** A method's gain on one test set as the report states it; null when the method did not run. */
function figure(g: MethodGain | undefined, test: string): GainFigure | null {
  const v = g?.byTest[test];
  return v ? { ...v.summary, perSeed: v.perSeed.map((p) => p.netComputeGain) } : null;
}

/** Text safe inside a Markdown table cell (a bare `|` would start a new cell). */
const cell = (text: string) => text.replace(/\|/g, "\\|");

/** `mean [lo, hi]` of a paired difference, saying when a seed had no value (the claim then fails). */
function diffText(d: SeedSummary, digits?: number): string {
  const f = (x: number | null | undefined) => digits === undefined ? pctFmt(x) : fmt(x, digits);
  return `${f(d.mean)} [${f(d.ci95?.[0])}, ${f(d.ci95?.[1])}]` +
    (d.undefined > 0 ? ` (n/a for ${d.undefined} seed(s))` : "");
}

/** `mean [lo, hi] (seeds a, b, c)`. */
function gainText(f: GainFigure | null): string {
  if (!f) return "n/a";
  return `${pctFmt(f.mean)} ${ciFmt(f.ci95)} (seeds ${f.perSeed.map(pctFmt).join(", ")})`;
}

/** The fraction of `method` with the lowest mean final NLL on the primary test set (or null). */
export function bestFraction(
  ev: EvaluationResult,
  size: "small" | "large" = "small",
  method = HEADLINE,
): number | null {
  let best: number | null = null;
  let bestLoss = Infinity;
  for (const f of ev.fractions) {
    const loss = gainOf(ev, method, f, size)?.byTest[ev.primaryTest].finalLoss.mean;
    if (loss !== undefined && loss !== null && loss < bestLoss) {
      bestLoss = loss;
      best = f;
    }
  }
  return best;
}

/** A baseline's best setting (lowest mean final NLL on the primary test), or undefined. */
function bestSetting(ev: EvaluationResult, method: string): MethodGain | undefined {
  let best: MethodGain | undefined;
  for (const g of ev.gains.filter((g) => g.method === method && g.size === "small")) {
    const l = g.byTest[ev.primaryTest]?.finalLoss.mean;
    if (l === null || l === undefined) continue;
    if (!best || l < best.byTest[ev.primaryTest].finalLoss.mean!) best = g;
  }
  return best;
}

/** Per-seed values of `g` aligned with `seeds` (null where a seed is missing). */
function bySeed<T>(g: MethodGain, values: readonly T[], seeds: readonly number[]): (T | null)[] {
  return seeds.map((s) => {
    const i = g.seeds.indexOf(s);
    return i < 0 ? null : values[i];
  });
}

function finalNllTable(ev: EvaluationResult): Record<string, Record<string, number>> {
  return Object.fromEntries(ev.runs.map((r) => [r.name, r.finalLosses]));
}

/** Mean curve over seeds of the runs of one method/fraction/size (they share eval points). */
function meanCurve(runs: RunSummary[], test: string): { flops: number; loss: number }[] {
  const n = Math.min(...runs.map((r) => r.curve.length));
  return Array.from({ length: n }, (_, i) => ({
    flops: runs[0].curve[i].flops,
    loss: runs.reduce((a, r) => a + r.curve[i].losses[test], 0) / runs.length,
  }));
}

const PALETTE = [
  "#222222",
  "#1f77b4",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#ff7f0e",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#bcbd22",
  "#7f7f7f",
];

/** An SVG line chart of test NLL against training FLOPs, one line per method (mean over seeds). */
export function nllPlotSvg(
  ev: EvaluationResult,
  test: string,
  size: "small" | "large",
  title: string,
): string {
  const groups = new Map<string, RunSummary[]>();
  for (const r of ev.runs.filter((r) => r.size === size)) {
    // Baselines at every fraction would crowd the plot: show each one's best fraction only.
    const key = label(r.method, r.fraction);
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const keepKey = (k: string) => {
    const [m] = k.split("@");
    if (!FRACTION_BASELINES.includes(m)) return true;
    const bf = bestFraction(ev, size, m);
    return bf !== null && k === label(m, bf);
  };
  const series = [...groups.entries()].filter(([k]) => keepKey(k)).map(([k, runs]) => ({
    name: k,
    points: meanCurve(runs, test).slice(1), // step 0 (untrained, ~5.5 nats) would flatten the plot
  }));
  const W = 760, H = 460, L = 70, R = 190, T = 40, B = 50;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"></svg>`;
  }
  const xMax = Math.max(...all.map((p) => p.flops));
  const yMin = Math.min(...all.map((p) => p.loss));
  const yMax = Math.max(...all.map((p) => p.loss));
  const ySpan = Math.max(1e-6, yMax - yMin);
  const x = (v: number) => L + (v / xMax) * (W - L - R);
  const y = (v: number) => T + (1 - (v - yMin) / ySpan) * (H - T - B);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">training FLOPs</text>`,
    `<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${
      (T + H - B) / 2
    })">test NLL (nats/byte)</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const fv = (xMax * i) / 5;
    const lv = yMin + (ySpan * i) / 5;
    parts.push(
      `<line x1="${x(fv)}" y1="${H - B}" x2="${x(fv)}" y2="${H - B + 5}" stroke="black"/>`,
      `<text x="${x(fv)}" y="${H - B + 18}" text-anchor="middle">${fv.toExponential(1)}</text>`,
      `<line x1="${L - 5}" y1="${y(lv)}" x2="${W - R}" y2="${y(lv)}" stroke="#dddddd"/>`,
      `<text x="${L - 8}" y="${y(lv) + 4}" text-anchor="end">${lv.toFixed(2)}</text>`,
    );
  }
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const dash = s.name.startsWith(HEADLINE)
      ? ""
      : s.name === "baseline"
      ? ""
      : ' stroke-dasharray="5 3"';
    const width = s.name === "baseline" || s.name.startsWith("oracle") ? 2.5 : 1.6;
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="${width}"${dash} points="${
        s.points.map((p) => `${x(p.flops).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" ")
      }"/>`,
      `<line x1="${W - R + 12}" y1="${T + 10 + i * 18}" x2="${W - R + 36}" y2="${
        T + 10 + i * 18
      }" stroke="${color}" stroke-width="2.5"${dash}/>`,
      `<text x="${W - R + 42}" y="${T + 14 + i * 18}">${esc(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** Measures the issue's claims against the results (headline, same-distribution, noise floor). */
export function checks(ev: EvaluationResult): Check[] {
  const t = ev.primaryTest;
  const best = bestFraction(ev);
  const dr = best === null ? undefined : gainOf(ev, HEADLINE, best);
  const drFig = figure(dr, t);
  const seeds = ev.seeds;
  const out: Check[] = [];
  out.push({
    claim: `headline: net compute gain on ${t} at the best discard fraction, mean over seeds`,
    target: "≥ 25%: the 95% t-interval over seeds lies above 25%, every seed defined",
    measured: dr ? gainText(drFig) : "no DataRater run",
    pass: !!drFig && drFig.undefined === 0 && drFig.ci95 !== null && drFig.ci95[0] >= 0.25,
  });
  const oracle = gainOf(ev, ORACLE, null);
  if (oracle) {
    const drG = dr ? bySeed(dr, dr.byTest[t].perSeed.map((g) => g.netComputeGain), seeds) : [];
    const orG = bySeed(oracle, oracle.byTest[t].perSeed.map((g) => g.netComputeGain), seeds);
    const { diff, pass } = pairedClears(
      dr ? drG.map((x) => x ?? null) : seeds.map(() => null),
      orG.map((x) => (x === null || x === undefined ? null : (2 / 3) * x)),
    );
    out.push({
      claim:
        "headline: gain as a share of the prose-only oracle's (keeps clean prose by its label)",
      target: "≥ 2/3: the 95% interval of (gain − 2/3 × oracle gain) per seed lies above 0",
      measured: `oracle ${gainText(figure(oracle, t))}; DataRater − 2/3 oracle ${diffText(diff)}`,
      pass: !!dr && pass,
    });
  }
  for (const m of COMPARED_BASELINES) {
    const b = bestSetting(ev, m);
    if (!b) continue;
    const bl = bySeed(b, b.byTest[t].finalLossPerSeed, seeds);
    const dl = dr ? bySeed(dr, dr.byTest[t].finalLossPerSeed, seeds) : seeds.map(() => null);
    const { diff, pass } = pairedClears(bl, dl, true);
    out.push({
      claim: `headline beats ${m} (its best setting) on final ${t} NLL`,
      target: "lower NLL: the 95% interval of (baseline − DataRater NLL) per seed lies above 0",
      measured: `DataRater ${fmt(dr?.byTest[t].finalLoss.mean, 4)} vs ${label(m, b.fraction)} ${
        fmt(b.byTest[t].finalLoss.mean, 4)
      }; difference ${diffText(diff, 4)}`,
      pass: !!dr && pass,
    });
  }
  if (best !== null) {
    const rates = ev.keepRates[`${HEADLINE}@${pct(best)}`] ?? {};
    const prose = rates["prose"];
    const corrupt = Object.entries(rates).filter(([s]) => s.startsWith("corrupt/")).map(([, v]) =>
      v
    );
    const corruptKeep = corrupt.length ? corrupt.reduce((a, b) => a + b, 0) / corrupt.length : null;
    const dropRatio = prose !== undefined && corruptKeep !== null
      ? (1 - corruptKeep) / Math.max(1e-9, 1 - prose)
      : null;
    out.push({
      claim: "headline: the rater drops corrupted records at a far higher rate than clean prose",
      target: "corrupted drop rate ≥ 2× prose drop rate",
      measured: `keep: prose ${pctFmt(prose)}, corrupted (mean over kinds) ${
        pctFmt(corruptKeep)
      }; drop ratio ${fmt(dropRatio, 2)}`,
      pass: dropRatio !== null && dropRatio >= 2,
    });
  }
  const bestLarge = bestFraction(ev, "large");
  if (ev.config.transfer) {
    const steps = best === null || bestLarge === null
      ? null
      : Math.abs(ev.fractions.indexOf(bestLarge) - ev.fractions.indexOf(best));
    out.push({
      claim:
        "transfer: the best fraction of the small LM is best (or one step off) for the 4× larger LM",
      target: "within one step",
      measured: `small ${best === null ? "n/a" : pct(best) + "%"}, large ${
        bestLarge === null ? "n/a" : pct(bestLarge) + "%"
      }`,
      pass: steps !== null && steps <= 1,
    });
  }
  const poolBest = bestFraction(ev, "small", POOL_RATER);
  const pool = poolBest === null ? undefined : gainOf(ev, POOL_RATER, poolBest);
  const ceiling = gainOf(ev, POOL_CEILING, null);
  if (pool || ceiling) {
    const pg = pool
      ? bySeed(pool, pool.byTest[t].perSeed.map((g) => g.netComputeGain), seeds)
      : seeds.map(() => null);
    const cg = ceiling
      ? bySeed(ceiling, ceiling.byTest[t].perSeed.map((g) => g.netComputeGain), seeds)
      : seeds.map(() => null);
    const { diff, pass } = pairedClears(
      pg,
      cg.map((x) => (x === null ? null : 0.5 * x)),
    );
    out.push({
      claim:
        `same-distribution: the pool-objective rater's gain on ${t} reaches half its ceiling's (drops exactly the corrupted records, keeps email)`,
      target: "≥ 1/2: the 95% interval of (gain − 1/2 × ceiling gain) per seed lies above 0",
      measured: `rater at ${poolBest === null ? "n/a" : pct(poolBest) + "%"} ${
        gainText(figure(pool, t))
      }; ceiling ${gainText(figure(ceiling, t))}; rater − ceiling/2 ${diffText(diff)}`,
      pass: !!pool && !!ceiling && pass,
    });
  }
  if (best !== null) {
    const randomGain = gainOf(ev, "random", best);
    const baseline = gainOf(ev, "baseline", null);
    const random = figure(randomGain, t);
    if (random && randomGain && baseline) {
      // A filter worth nothing ends near the baseline's NLL, so about half its seeds never reach
      // it and have no gain: the NLL difference, defined for every seed, carries the interval.
      const diff = pairedClears(
        bySeed(randomGain, randomGain.byTest[t].finalLossPerSeed, seeds),
        bySeed(baseline, baseline.byTest[t].finalLossPerSeed, seeds),
      ).diff;
      out.push({
        claim: `noise floor: random dropping's gain on ${t} at the headline's fraction (${
          pct(best)
        }%) is near zero`,
        target: `|mean gain| ≤ ${
          pctFmt(NOISE_FLOOR)
        } over the seeds that reach the baseline, and the 95% interval of (random − baseline final NLL) contains 0`,
        measured: `gain ${gainText(random)}; NLL difference ${diffText(diff, 4)}`,
        pass: (random.mean === null || Math.abs(random.mean) <= NOISE_FLOOR) &&
          diff.undefined === 0 && diff.ci95 !== null && diff.ci95[0] <= 0 && diff.ci95[1] >= 0,
      });
    }
  }
  return out;
}

function gainsRecord(ev: EvaluationResult): ReportJson["gains"] {
  const out: ReportJson["gains"] = {};
  for (const g of ev.gains) {
    if (g.method === "baseline") continue;
    out[`${label(g.method, g.fraction)}${g.size === "large" ? " (large LM)" : ""}`] = Object
      .fromEntries(ev.testSets.map((t) => [t, figure(g, t)!]));
  }
  return out;
}

function nllTable(ev: EvaluationResult): string {
  const rows = [
    `| run | ${ev.testSets.join(" | ")} | train records |`,
    `|---|${ev.testSets.map(() => "---").join("|")}|---|`,
  ];
  for (const r of ev.runs) {
    rows.push(
      `| ${r.name} | ${
        ev.testSets.map((t) => fmt(r.finalLosses[t], 4)).join(" | ")
      } | ${r.trainRecords} |`,
    );
  }
  return rows.join("\n");
}

/**
 * One row per method: final NLL and net gain (mean, 95% interval, per seed) on each test set, with
 * random dropping's gain at the same fraction beside every gain.
 */
function gainTable(
  ev: EvaluationResult,
  size: "small" | "large",
  methods?: string[],
): string {
  const head = ev.testSets.flatMap((t) => [
    `${t} final NLL`,
    `${t} net gain [95% CI] (seeds)`,
    `${t} random, same fraction`,
  ]);
  const rows = [
    `| method | filter FLOPs | ${head.join(" | ")} |`,
    `|---|---|${head.map(() => "---").join("|")}|`,
  ];
  for (const g of ev.gains.filter((g) => g.size === size)) {
    if (methods && !methods.includes(g.method)) continue;
    const cells = ev.testSets.flatMap((t) => {
      const v = g.byTest[t];
      const random = g.fraction === null || g.method === "random"
        ? "—"
        : gainText(figure(gainOf(ev, "random", g.fraction, size), t));
      return [
        `${fmt(v.finalLoss.mean, 4)} ± ${fmt(v.finalLoss.std, 4)}`,
        g.method === "baseline" ? "—" : gainText(figure(g, t)),
        random,
      ];
    });
    rows.push(
      `| ${label(g.method, g.fraction)} | ${g.filterFlops.toExponential(2)} | ${
        cells.join(" | ")
      } |`,
    );
  }
  return rows.join("\n");
}

function keepRateTable(ev: EvaluationResult): string {
  const sources = [...new Set(Object.values(ev.keepRates).flatMap((r) => Object.keys(r)))].sort();
  const rows = [
    `| filter | ${sources.join(" | ")} |`,
    `|---|${sources.map(() => "---").join("|")}|`,
  ];
  for (const [key, rates] of Object.entries(ev.keepRates).sort()) {
    rows.push(`| ${key} | ${sources.map((s) => pctFmt(rates[s])).join(" | ")} |`);
  }
  return rows.join("\n");
}

/**
 * Keep rates of one rater at every fraction, one row per source and junk position (`n/a` where the
 * corpus does not record one).
 */
function positionTable(ev: EvaluationResult, method: string): string {
  const byF = ev.fractions.map((f) => ev.keepByPosition[`${method}@${pct(f)}`] ?? {});
  const rowsKeys = new Set<string>();
  for (const m of byF) {
    for (const [s, byPos] of Object.entries(m)) {
      for (const p of Object.keys(byPos)) rowsKeys.add(`${s}\u0000${p}`);
    }
  }
  const rows = [
    `| source | junk position | ${
      ev.fractions.map((f) => `keep @ ${pct(f)}% discard`).join(" | ")
    } |`,
    `|---|---|${ev.fractions.map(() => "---").join("|")}|`,
  ];
  for (const k of [...rowsKeys].sort()) {
    const [s, p] = k.split("\u0000");
    rows.push(`| ${s} | ${p} | ${byF.map((m) => pctFmt(m[s]?.[p])).join(" | ")} |`);
  }
  return rows.join("\n");
}

/** One line per source: its mean rater score and record count. */
function scoreLines(a: RaterAnalysis): string[] {
  return Object.entries(a.scoreBySource).map(([s, v]) =>
    `- ${s}: ${v.mean.toPrecision(4)} (${v.count} records)`
  );
}

function examples(list: RatedExample[]): string {
  return list.map((e) =>
    `- \`${e.score.toPrecision(4)}\` (${e.source}, junk position ${e.position}): ${
      JSON.stringify(e.text.slice(0, 160))
    }`
  ).join("\n");
}

function unseenSection(ev: EvaluationResult): string {
  const u = ev.unseen;
  if (!u) {
    return "n/a: this corpus has no `unseen/` split (junk kinds never seen in meta-training, " +
      "with prose controls), so generalisation to unseen junk was not measured.";
  }
  const fs = ev.fractions.filter((f) => Object.values(u.bySource).some((v) => String(f) in v.keep));
  const rows = [
    "Records of junk kinds the pool never had, and untouched prose controls (`prose`), scored by " +
    "the headline rater and kept when their score reaches the threshold the train split's " +
    "manifests applied at each fraction. Generalising means each unseen kind is kept well below " +
    "the prose controls.",
    "",
    `| source | records | mean score | ${fs.map((f) => `keep @ ${pct(f)}% discard`).join(" | ")} |`,
    `|---|---|---|${fs.map(() => "---").join("|")}|`,
  ];
  for (const [s, v] of Object.entries(u.bySource)) {
    rows.push(
      `| ${s} | ${v.count} | ${v.meanScore.toPrecision(4)} | ${
        fs.map((f) => pctFmt(v.keep[String(f)])).join(" | ")
      } |`,
    );
  }
  const prose = u.bySource["prose"];
  if (!prose) {
    rows.push("", "No prose controls in `unseen/`: keep rates have nothing to be compared with.");
  }
  return rows.join("\n");
}

function raterSection(ev: EvaluationResult, a: RaterAnalysis): string {
  return [
    `Keep rates per source and junk position (\`${a.method}\`, train split):`,
    "",
    positionTable(ev, a.method),
    "",
    "Mean rater score per source:",
    "",
    ...scoreLines(a),
    "",
    "Lowest-rated records:",
    "",
    examples(a.lowestRated),
    "",
    "Highest-rated records:",
    "",
    examples(a.highestRated),
  ].join("\n");
}

/** The same-distribution protocol's section: both test sets, the rater, its ceiling and random. */
function sameDistributionSection(ev: EvaluationResult, json: ReportJson): string {
  const sd = json.sameDistribution;
  if (!sd) return "Not run in this preset.";
  const lines = [
    "The paper's protocol: a rater whose outer objective is the pool's own heldout split (a third " +
    "of it email), against its own ceiling, an oracle that drops exactly the corrupted records by " +
    "label and keeps all email. Best fraction by mean final NLL on " +
    `\`${ev.primaryTest}\`: ${
      sd.bestDiscardFraction === null ? "n/a" : pct(sd.bestDiscardFraction) + "%"
    }.`,
    "",
    "| test set | rater | ceiling | random, same fraction |",
    "|---|---|---|---|",
    ...Object.entries(sd.byTest).map(([t, v]) =>
      `| ${t} | ${gainText(v.rater)} | ${gainText(v.ceiling)} | ${gainText(v.random)} |`
    ),
    "",
  ];
  const pool = sd.byTest["test"];
  if (pool) {
    const r = pool.rater?.mean ?? null;
    const c = pool.ceiling?.mean ?? null;
    const nll = (method: string, fraction: number | null) =>
      fmt(gainOf(ev, method, fraction)?.byTest["test"]?.finalLoss.mean, 4);
    lines.push(
      "On the pool's own test split (`test`, a third junk), filtering junk out of training makes " +
        "that split's junk harder to predict, so its NLL can get worse while clean-prose NLL " +
        `improves. Measured: the rater ${
          r === null ? "never reached the baseline's NLL there (gain n/a)" : `gains ${pctFmt(r)}`
        }, its ceiling ${
          c === null ? "never reached it (gain n/a)" : `gains ${pctFmt(c)}`
        }; final \`test\` NLL: baseline ${nll("baseline", null)}, rater ${
          nll(POOL_RATER, sd.bestDiscardFraction)
        }, ceiling ${nll(POOL_CEILING, null)}, headline rater ${
          nll(HEADLINE, json.bestDiscardFraction)
        }. Neither test set is tuned for.`,
      "",
    );
  }
  lines.push(gainTable(ev, "small", ["baseline", POOL_RATER, POOL_CEILING, "random"]));
  return lines.join("\n");
}

/** Inputs of {@link writeReport}. */
export interface ReportInput {
  preset: string;
  /** The pool (train split) evaluated with every rater and baseline. */
  mixture: EvaluationResult;
  /** Stage name → seconds. */
  timings: Record<string, number>;
  /** Extra lines for the setup section (corpus, rater). */
  setup: string[];
}

/** Writes report.md, report.json and the plots under `dir`; returns the URIs written. */
export async function writeReport(
  storage: Storage,
  dir: string,
  input: ReportInput,
): Promise<{ files: string[]; json: ReportJson }> {
  const ev = input.mixture;
  const t = ev.primaryTest;
  const best = bestFraction(ev);
  const dr = best === null ? undefined : gainOf(ev, HEADLINE, best);
  const oracle = gainOf(ev, ORACLE, null);
  const bestLarge = bestFraction(ev, "large");
  const checkList = checks(ev);
  const poolBest = bestFraction(ev, "small", POOL_RATER);
  const hasPool = ev.gains.some((g) => g.method === POOL_RATER);
  const headlineFig = figure(dr, t);
  const json: ReportJson = {
    preset: input.preset,
    primaryTest: t,
    netComputeGain: headlineFig?.mean ?? null,
    netComputeGainSeeds: headlineFig?.perSeed ?? [],
    netComputeGainCi95: headlineFig?.ci95 ?? null,
    oracleComputeGain: oracle?.byTest[t].summary.mean ?? null,
    bestDiscardFraction: best,
    finalTestNll: finalNllTable(ev),
    keepRates: ev.keepRates,
    keepByPosition: ev.keepByPosition,
    gains: gainsRecord(ev),
    noiseFloor: Object.fromEntries(
      ev.fractions.filter((f) => gainOf(ev, "random", f)).map((f) => [
        String(f),
        Object.fromEntries(
          ev.testSets.map((test) => [test, figure(gainOf(ev, "random", f), test)!]),
        ),
      ]),
    ),
    sameDistribution: hasPool
      ? {
        bestDiscardFraction: poolBest,
        byTest: Object.fromEntries(ev.testSets.map((test) => [test, {
          rater: poolBest === null ? null : figure(gainOf(ev, POOL_RATER, poolBest), test),
          ceiling: figure(gainOf(ev, POOL_CEILING, null), test),
          random: poolBest === null ? null : figure(gainOf(ev, "random", poolBest), test),
        }])),
      }
      : null,
    transfer: ev.config.transfer
      ? {
        bestSmall: best,
        bestLarge,
        withinOneStep: best === null || bestLarge === null
          ? null
          : Math.abs(ev.fractions.indexOf(best) - ev.fractions.indexOf(bestLarge)) <= 1,
      }
      : null,
    raters: ev.raters,
    unseen: ev.unseen,
    checks: checkList,
    classifier: ev.classifier ?? null,
    timings: input.timings,
  };

  const plots: { file: string; svg: string }[] = [];
  for (const test of ev.testSets) {
    plots.push({
      file: `nll-${test}-small.svg`,
      svg: nllPlotSvg(
        ev,
        test,
        "small",
        `${ev.variant}: ${test} NLL vs training FLOPs (small LM, mean over seeds)`,
      ),
    });
  }
  if (ev.config.transfer) {
    plots.push({
      file: `nll-${t}-large.svg`,
      svg: nllPlotSvg(ev, t, "large", `${ev.variant}: ${t} NLL vs FLOPs (4× larger LM)`),
    });
  }

  const failed = checkList.filter((c) => !c.pass);
  const ds = ev.config.downstream;
  const raterFlops = Object.entries(ev.config.raterFlopsPerRecord).map(([m, f]) =>
    `${m} ${f.toExponential(2)}`
  ).join(", ");
  const md: string[] = [
    `# DataRater demo report (${input.preset} preset)`,
    "",
    "## Summary",
    "",
    `- Headline (the user's target set: the rater's outer objective is clean held-out prose): net ` +
    `compute gain on \`${t}\` at the best discard fraction ` +
    `(${best === null ? "n/a" : pct(best) + "%"}): **${pctFmt(json.netComputeGain)}** mean over ` +
    `${ev.seeds.length} seeds, 95% t-interval ${ciFmt(json.netComputeGainCi95)} ` +
    `(per seed: ${json.netComputeGainSeeds.map(pctFmt).join(", ")}), rater inference FLOPs ` +
    `counted. Random dropping at the same fraction: ${
      best === null ? "n/a" : gainText(figure(gainOf(ev, "random", best), t))
    }.`,
    `- Prose-only oracle (keeps clean prose by its true label): ${gainText(figure(oracle, t))}.`,
    ...(hasPool
      ? [
        `- Same-distribution protocol (outer objective the pool's heldout split): ${
          gainText(json.sameDistribution!.byTest[t]?.rater ?? null)
        } at ${poolBest === null ? "n/a" : pct(poolBest) + "%"} discard, against its ceiling ` +
        `(drops exactly the corrupted records, keeps email) ${
          gainText(json.sameDistribution!.byTest[t]?.ceiling ?? null)
        }.`,
      ]
      : []),
    `- Claims met: ${checkList.length - failed.length} of ${checkList.length}; a claim holds ` +
    `only when its 95% interval over seeds clears the bar.` +
    (failed.length ? ` **Not met: ${failed.map((c) => c.claim).join("; ")}.**` : ""),
    "",
    "## Setup",
    "",
    ...input.setup.map((l) => `- ${l}`),
    `- Downstream LM (small): ${JSON.stringify(ds.lm)}, seqLen ${ds.seqLen}, batch ${ds.batch}, ` +
    `${ds.steps} steps (token budget ${
      ds.steps * ds.batch * ds.seqLen
    } bytes), Adam lr ${ds.lr}, ` +
    `evaluated every ${ds.evalEvery} steps on ${ds.evalWindows} fixed seqLen-byte windows sampled ` +
    `over each test set's documents (the same windows for every run).`,
    ev.config.transfer
      ? `- Larger LM (transfer check): ${
        JSON.stringify(ev.config.transfer.lm)
      }, same data budget and optimiser.`
      : "- No transfer check in this preset.",
    `- Rater inference FLOPs per record (${raterFlops}), charged for all ${ev.trainRecords} ` +
    `train records at every fraction.`,
    ...(ev.classifier
      ? [
        `- fastText baseline (DCLM-style): the real fastText (WebAssembly build), trained on ` +
        `${ev.classifier.positives} target-set documents as \`__label__hq\` and ` +
        `${ev.classifier.negatives} sampled train-split records as \`__label__lq\` ` +
        `(word bigrams, dim ${DEFAULT_FASTTEXT.dim}, ${DEFAULT_FASTTEXT.epoch} epochs, one ` +
        `thread, seed ${DEFAULT_FASTTEXT.seed}) in ${ev.classifier.trainSeconds.toFixed(1)} s; ` +
        `keeps the records with the highest P(hq). Scoring throughput ` +
        `**${ev.classifier.mbPerSecondPerCore.toFixed(1)} MB/s per core** ` +
        `(${(ev.classifier.scoredBytes / 1e6).toFixed(2)} MB of train text).`,
      ]
      : []),
    `- Seeds: ${ev.seeds.join(", ")} (each filtered run is compared with the baseline of the ` +
    `same seed; intervals are Student's t 95% over seeds, paired by seed for comparisons).`,
    "",
    "## Claims measured",
    "",
    "| claim | target | measured | met |",
    "|---|---|---|---|",
    ...checkList.map((c) =>
      `| ${cell(c.claim)} | ${cell(c.target)} | ${cell(c.measured)} | ${
        c.pass ? "yes" : "**no**"
      } |`
    ),
    "",
    "## Compute gains and final NLL (small LM)",
    "",
    "Net gain = 1 − (FLOPs to reach the baseline's final NLL + filter inference FLOPs) / baseline " +
    "FLOPs; `n/a` = never reached it. Each gain: mean over seeds, 95% t-interval, per seed; " +
    "random dropping's gain at the same fraction beside it.",
    "",
    gainTable(ev, "small"),
    "",
    "## Same-distribution protocol",
    "",
    sameDistributionSection(ev, json),
    "",
    "### The pool's own test split",
    "",
    "Both test sets are in every table above: `testClean` (clean prose, documents disjoint from " +
    "every objective) and `test` (the pool's own test split, as mixed as the pool). See the " +
    "same-distribution section for what happens on `test`.",
    "",
    "## Noise floor",
    "",
    "Random dropping's gain at each fraction: what a filter that knows nothing measures. Near zero " +
    `(|mean| ≤ ${pctFmt(NOISE_FLOOR)}, and its final NLL's difference from the baseline's within ` +
    "noise) means the evaluation can tell a real gain from noise. A seed shown as n/a never " +
    "reached the baseline's NLL: no gain.",
    "",
    ...Object.entries(json.noiseFloor).map(([f, byTest]) =>
      `- random@${pct(Number(f))}%: ${
        Object.entries(byTest).map(([test, g]) => `${test} ${gainText(g)}`).join("; ")
      }`
    ),
    "",
    "## Final test NLL of every run",
    "",
    nllTable(ev),
    "",
    "## What was dropped",
    "",
    "Share of each source kept by each filter (train split):",
    "",
    keepRateTable(ev),
    "",
    "### Per kind and position",
    "",
    ...ev.raters.flatMap((a) => [raterSection(ev, a), ""]),
    "Heuristic filter, why records were dropped:",
    "",
    ...Object.entries(ev.heuristicReasons).sort((a, b) => b[1] - a[1]).map(([r, n]) =>
      `- ${r}: ${n}`
    ),
    "",
    "## Unseen junk kinds",
    "",
    unseenSection(ev),
    "",
    "## Transfer to a larger LM",
    "",
    ev.config.transfer
      ? `Best discard fraction of the headline rater: small LM ${
        best === null ? "n/a" : pct(best) + "%"
      }, larger LM ${bestLarge === null ? "n/a" : pct(bestLarge) + "%"}.\n\n${
        gainTable(ev, "large")
      }`
      : "Not run in this preset.",
    "",
    "## Plots",
    "",
    ...plots.map((p) => `![${p.file}](${p.file})`),
    "",
    "## Timings",
    "",
    "Seconds spent per stage, summed over every run that built this output (a stage reused from " +
    "an earlier run adds ~0; one interrupted and resumed counts both parts).",
    "",
    ...Object.entries(input.timings).map(([k, v]) => `- ${k}: ${v.toFixed(1)} s`),
    "",
  ];
  const files: string[] = [];
  for (const p of plots) {
    const uri = joinUri(dir, p.file);
    await storage.write(uri, p.svg, { contentType: "image/svg+xml" });
    files.push(uri);
  }
  await storage.write(joinUri(dir, "report.json"), JSON.stringify(json, null, 2) + "\n", {
    contentType: "application/json",
  });
  await storage.write(joinUri(dir, "report.md"), md.join("\n"), { contentType: "text/markdown" });
  files.push(joinUri(dir, "report.json"), joinUri(dir, "report.md"));
  return { files, json };
}
