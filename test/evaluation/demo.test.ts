import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { runDemo } from "../../scripts/demo.ts";
import { PRESETS } from "../../evaluation/presets.ts";
import { pct } from "../../evaluation/evaluation.ts";
import type { ReportJson } from "../../evaluation/report.ts";
import { pairedClears, tQuantile975 } from "../../evaluation/compute-gain.ts";
import { CORRUPTIONS } from "../../corpus/prepare.ts";

const { fractions, seeds } = PRESETS.tiny;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** The fraction with the lowest `loss`, first on ties (how the report picks its best fraction). */
const argmin = (loss: (f: number) => number) =>
  fractions.reduce((best, f) => (loss(f) < loss(best) ? f : best), fractions[0]);

// The quick pipeline's steps at the tiny size: corpus → meta-training → ONNX export → scoring
// function over HTTP → manifests → downstream runs → report. Numbers are meaningless at this size;
// what is pinned is that every stage runs, every section has finite figures, and the figures agree
// with each other and with what each filter must keep (exact counts where the filter is exact).
describe("deno task demo (tiny preset)", () => {
  let dir: string;
  let report: ReportJson;
  let markdown: string;

  beforeAll(async () => {
    dir = await Deno.makeTempDir({ prefix: "demo-test-" });
    const result = await runDemo({ preset: PRESETS.tiny, output: dir, log: () => {} });
    report = JSON.parse(await Deno.readTextFile(join(result.reportDir, "report.json")));
    markdown = await Deno.readTextFile(join(result.reportDir, "report.md"));
  }, 600_000);

  afterAll(async () => {
    if (dir) await Deno.remove(dir, { recursive: true });
  });

  it("writes a report with every section", () => {
    for (
      const section of [
        "## Summary",
        "## Setup",
        "## Claims measured",
        "## Compute gains and final NLL (small LM)",
        "## Same-distribution protocol",
        "### The pool's own test split",
        "## Noise floor",
        "## Final test NLL of every run",
        "## What was dropped",
        "### Per kind and position",
        "## Unseen junk kinds",
        "## Transfer to a larger LM",
        "## Plots",
        "## Timings",
      ]
    ) expect(markdown).toContain(section);
    expect(markdown).toContain("Lowest-rated records:");
    expect(markdown).toContain("Highest-rated records:");
    // The corpus's unseen/ split: every unseen kind and the prose controls, scored by the headline
    // rater, with a keep share in [0, 1] at every fraction.
    const unseen = report.unseen!.bySource;
    expect(Object.keys(unseen).sort()).toEqual([
      "prose",
      "unseen/hex-dump",
      "unseen/non-english",
      "unseen/number-table",
      "unseen/private-key",
    ]);
    for (const [s, u] of Object.entries(unseen)) {
      expect(u.count, s).toBeGreaterThan(0);
      expect(Number.isFinite(u.meanScore), s).toBe(true);
      expect(Object.keys(u.keep).sort(), s).toEqual(fractions.map(String).sort());
      for (const k of Object.values(u.keep)) expect(k >= 0 && k <= 1, s).toBe(true);
    }
    expect(unseen.prose.count).toBe(
      Object.entries(unseen).filter(([s]) => s !== "prose").reduce((a, [, u]) => a + u.count, 0),
    );
    expect(markdown).not.toContain("n/a: this corpus has no `unseen/` split");
  });

  it("reports a finite best discard fraction and a final NLL for every run on both test sets", () => {
    expect(PRESETS.tiny.fractions).toContain(report.bestDiscardFraction);
    const runs = Object.entries(report.finalTestNll);
    // baseline, heuristic, 2 oracles, and per fraction random, perplexity, fastText and the two
    // raters: 4 + 2 × 5 = 14 small runs per seed, × 2 seeds; + baseline and the headline rater at
    // both fractions for the larger LM (one seed). The raters share the baseline runs.
    expect(runs.length).toBe(14 * 2 + 3);
    for (const [name, losses] of runs) {
      expect(Object.keys(losses).sort(), name).toEqual(["test", "testClean"]);
      for (const v of Object.values(losses)) expect(Number.isFinite(v), name).toBe(true);
    }
    expect(runs.filter(([n]) => n.includes("-large-")).map(([n]) => n).sort()).toEqual([
      "mixture-baseline-large-s0",
      "mixture-datarater-25-large-s0",
      "mixture-datarater-50-large-s0",
    ]);
  });

  it("gives every gain a 95% t-interval over seeds, with random dropping at the same fraction", () => {
    for (const [name, byTest] of Object.entries(report.gains)) {
      for (const [t, g] of Object.entries(byTest)) {
        const xs = g.perSeed.filter((x): x is number => x !== null);
        if (xs.length < 2) {
          expect(g.ci95, `${name} ${t}`).toBeNull();
          continue;
        }
        const m = mean(xs);
        const sd = Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
        const half = tQuantile975(xs.length - 1) * sd / Math.sqrt(xs.length);
        expect(g.ci95![0], `${name} ${t}`).toBeCloseTo(m - half, 12);
        expect(g.ci95![1], `${name} ${t}`).toBeCloseTo(m + half, 12);
      }
    }
    expect(Object.keys(report.noiseFloor).sort()).toEqual(fractions.map(String).sort());
    for (const f of fractions) {
      expect(report.noiseFloor[String(f)].testClean).toEqual(
        report.gains[`random@${pct(f)}%`].testClean,
      );
    }
    const best = report.bestDiscardFraction!;
    expect(report.netComputeGainCi95).toEqual(
      report.gains[`datarater@${pct(best)}%`].testClean.ci95,
    );
    // The gain table puts random's gain at the same fraction beside each rater's.
    const row = markdown.split("\n").find((l) => l.startsWith(`| datarater@${pct(best)}% |`))!;
    const r = report.gains[`random@${pct(best)}%`].testClean;
    expect(row).toContain(
      `(seeds ${r.perSeed.map((x) => x === null ? "n/a" : `${(x * 100).toFixed(1)}%`).join(", ")})`,
    );
  });

  it("reports the same-distribution protocol beside: its rater, its ceiling and random on both test sets", () => {
    const sd = report.sameDistribution!;
    expect(PRESETS.tiny.fractions).toContain(sd.bestDiscardFraction);
    const poolLoss = (f: number) =>
      mean(
        seeds.map((s) =>
          report.finalTestNll[`mixture-datarater-pool-${pct(f)}-small-s${s}`].testClean
        ),
      );
    expect(sd.bestDiscardFraction).toBe(argmin(poolLoss));
    expect(Object.keys(sd.byTest).sort()).toEqual(["test", "testClean"]);
    for (const t of ["test", "testClean"] as const) {
      expect(sd.byTest[t].rater).toEqual(
        report.gains[`datarater-pool@${pct(sd.bestDiscardFraction!)}%`][t],
      );
      expect(sd.byTest[t].ceiling).toEqual(report.gains["oracle-no-corrupt"][t]);
      expect(sd.byTest[t].random).toEqual(
        report.gains[`random@${pct(sd.bestDiscardFraction!)}%`][t],
      );
    }
    expect(markdown).toContain("On the pool's own test split (`test`, a third junk)");
  });

  it("states netComputeGain as a number, or null only when a run never reached the baseline", () => {
    expect(report.netComputeGainSeeds.length).toBe(2);
    if (report.netComputeGain === null) {
      expect(report.netComputeGainSeeds.every((g) => g === null)).toBe(true);
    } else expect(Number.isFinite(report.netComputeGain)).toBe(true);
  });

  it("picks the headline's best fraction by mean final NLL and reports that fraction's per-seed gains", () => {
    const drLoss = (f: number, size = "small", ss = seeds) =>
      mean(
        ss.map((s) => report.finalTestNll[`mixture-datarater-${pct(f)}-${size}-s${s}`].testClean),
      );
    const best = argmin((f) => drLoss(f));
    expect(report.primaryTest).toBe("testClean");
    expect(report.bestDiscardFraction).toBe(best);
    const gains = report.gains[`datarater@${pct(best)}%`].testClean;
    expect(report.netComputeGainSeeds).toEqual(gains.perSeed);
    expect(report.netComputeGain).toBe(gains.mean);
    const defined = report.netComputeGainSeeds.filter((g): g is number => g !== null);
    if (defined.length > 0) expect(report.netComputeGain).toBeCloseTo(mean(defined), 12);
    expect(report.oracleComputeGain).toBe(report.gains.oracle.testClean.mean);
    // 1 - (C_f + C_rater) / C_b with C_f > 0: a gain is always below 100%.
    for (const [name, byTest] of Object.entries(report.gains)) {
      for (const [t, g] of Object.entries(byTest)) {
        expect(g.perSeed.length, `${name} ${t}`).toBe(name.includes("large") ? 1 : 2);
        for (const x of g.perSeed) if (x !== null) expect(x, `${name} ${t}`).toBeLessThan(1);
      }
    }
    expect(report.transfer!.bestSmall).toBe(best);
    expect(report.transfer!.bestLarge).toBe(argmin((f) => drLoss(f, "large", [0])));
  });

  it("keeps exactly what the exact filters must keep, and whole records of every source", () => {
    const headline = report.raters.find((r) => r.method === "datarater")!;
    const counts = Object.fromEntries(
      Object.entries(headline.scoreBySource).map(([s, v]) => [s, v.count]),
    );
    const sources = Object.keys(counts);
    expect(sources.sort()).toEqual(
      ["email/ham", "email/spam", "prose", ...CORRUPTIONS.map((c) => `corrupt/${c.kind}`)].sort(),
    );
    const n = Object.values(counts).reduce((a, b) => a + b, 0);
    const kept = (rates: Record<string, number>) =>
      Math.round(sources.reduce((a, s) => a + rates[s] * counts[s], 0) * 1e6) / 1e6;
    for (const f of fractions) {
      // Random dropping and perplexity's middle band drop exactly round(n·f) records.
      expect(kept(report.keepRates[`random@${pct(f)}`]), `random@${f}`).toBe(n - Math.round(n * f));
      expect(kept(report.keepRates[`perplexity@${pct(f)}`]), `perplexity@${f}`).toBe(
        n - Math.round(n * f),
      );
      // The fastText classifier keeps the top n - round(n·f) by P(hq).
      expect(kept(report.keepRates[`fasttext@${pct(f)}`]), `fasttext@${f}`).toBe(
        n - Math.round(n * f),
      );
    }
    expect(kept(report.keepRates.oracle)).toBe(counts.prose);
    expect(kept(report.keepRates["oracle-no-corrupt"])).toBe(
      counts.prose + counts["email/ham"] + counts["email/spam"],
    );
    for (const [method, rates] of Object.entries(report.keepRates)) {
      expect(Object.keys(rates).sort(), method).toEqual(sources);
      for (const s of sources) {
        const k = rates[s] * counts[s];
        expect(Math.abs(k - Math.round(k)), `${method} ${s}`).toBeLessThan(1e-9);
      }
    }
    // One global threshold per fraction: discarding more keeps no more of any source.
    for (const m of ["datarater", "datarater-pool"]) {
      for (const s of sources) {
        expect(report.keepRates[`${m}@50`][s], `${m} ${s}`).toBeLessThanOrEqual(
          report.keepRates[`${m}@25`][s],
        );
      }
    }
    // Both raters rated the same pool.
    const pool = report.raters.find((r) => r.method === "datarater-pool")!;
    expect(Object.keys(pool.scoreBySource)).toEqual(Object.keys(headline.scoreBySource));
    for (const r of report.raters) {
      for (const v of Object.values(r.scoreBySource)) {
        expect(Number.isFinite(v.mean)).toBe(true);
        expect(Number.isInteger(v.count) && v.count > 0).toBe(true);
      }
      expect(r.lowestRated.length).toBe(5);
      expect(r.highestRated.length).toBe(5);
      expect(r.lowestRated[0].score).toBeLessThanOrEqual(r.highestRated[0].score);
      for (const f of fractions) expect(Number.isFinite(r.thresholds[String(f)])).toBe(true);
    }
  });

  it("splits every filter's keep rates by junk position, n/a for records without junk", () => {
    expect(Object.keys(report.keepByPosition).sort()).toEqual(Object.keys(report.keepRates).sort());
    for (const [key, bySource] of Object.entries(report.keepByPosition)) {
      expect(Object.keys(bySource).sort(), key).toEqual(Object.keys(report.keepRates[key]).sort());
      for (const [s, byPos] of Object.entries(bySource)) {
        if (!s.startsWith("corrupt/")) {
          // Prose and email carry no junk: one n/a cell per source, equal to its keep rate.
          expect(byPos, `${key} ${s}`).toEqual({ "n/a": report.keepRates[key][s] });
          continue;
        }
        // Damaged documents say where their junk sits: head or body, each a share in [0, 1].
        expect(Object.keys(byPos).length, `${key} ${s}`).toBeGreaterThan(0);
        for (const [pos, k] of Object.entries(byPos)) {
          expect(["body", "head"], `${key} ${s}`).toContain(pos);
          expect(k >= 0 && k <= 1, `${key} ${s} ${pos}`).toBe(true);
        }
      }
    }
    expect(markdown).toContain(
      "| source | junk position | keep @ 25% discard | keep @ 50% discard |",
    );
    expect(markdown).toContain("Keep rates per source and junk position (`datarater-pool`");
  });

  it("reports the fastText classifier: balanced training set and its scoring throughput", () => {
    const c = report.classifier!;
    expect(c.positives).toBeGreaterThan(0);
    // As many pool records as target-set documents (the pool is the larger set here).
    expect(c.negatives).toBe(c.positives);
    const n = Object.values(report.raters[0].scoreBySource).reduce((a, v) => a + v.count, 0);
    expect(n).toBeGreaterThan(c.positives);
    expect(c.scoredBytes).toBeGreaterThan(n); // every train record scored, each > 1 byte
    expect(Number.isFinite(c.mbPerSecondPerCore) && c.mbPerSecondPerCore > 0).toBe(true);
    expect(c.trainSeconds).toBeGreaterThan(0);
    expect(markdown).toContain(`**${c.mbPerSecondPerCore.toFixed(1)} MB/s per core**`);
    expect(markdown).toContain(`| fasttext@25% |`);
  });

  it("gives per-source keep rates in [0, 1] for both raters and every baseline", () => {
    const keys = Object.keys(report.keepRates).sort();
    expect(keys).toEqual([
      "datarater-pool@25",
      "datarater-pool@50",
      "datarater@25",
      "datarater@50",
      "fasttext@25",
      "fasttext@50",
      "heuristic",
      "oracle",
      "oracle-no-corrupt",
      "perplexity@25",
      "perplexity@50",
      "random@25",
      "random@50",
    ]);
    for (const rates of Object.values(report.keepRates)) {
      expect(Object.keys(rates)).toContain("prose");
      for (const v of Object.values(rates)) expect(v >= 0 && v <= 1).toBe(true);
    }
    expect(report.keepRates.oracle.prose).toBe(1);
    expect(report.keepRates["oracle-no-corrupt"]["email/ham"]).toBe(1);
    expect(report.keepRates["oracle-no-corrupt"]["corrupt/all-caps"] ?? 0).toBe(0);
  });

  it("measures every claim of the protocol, each verdict from its interval, and writes the plots", async () => {
    expect(report.checks.length).toBe(10);
    for (const c of report.checks) expect(typeof c.pass).toBe("boolean");
    const best = report.bestDiscardFraction!;
    const nlls = (run: string) =>
      seeds.map((s) => report.finalTestNll[`mixture-${run}-small-s${s}`].testClean);
    const bestOf = (m: string, fs: (number | null)[]) =>
      fs.map((f) => (f === null ? m : `${m}-${pct(f)}`)).reduce((a, b) =>
        mean(nlls(b)) < mean(nlls(a)) ? b : a
      );
    const dr = nlls(`datarater-${pct(best)}`);
    const g = report.gains[`datarater@${pct(best)}%`].testClean;
    const oracle = report.gains.oracle.testClean;
    const rates = report.keepRates[`datarater@${pct(best)}`];
    const corrupt = mean(
      Object.entries(rates).filter(([s]) => s.startsWith("corrupt/")).map(([, v]) => v),
    );
    const dropRatio = (1 - corrupt) / Math.max(1e-9, 1 - rates.prose);
    const sd = report.sameDistribution!.byTest.testClean;
    const random = report.gains[`random@${pct(best)}%`].testClean;
    expect(report.checks.map((c) => [c.claim, c.pass])).toEqual([
      [
        "headline: net compute gain on testClean at the best discard fraction, mean over seeds",
        g.undefined === 0 && g.ci95 !== null && g.ci95[0] >= 0.25,
      ],
      [
        "headline: gain as a share of the prose-only oracle's (keeps clean prose by its label)",
        pairedClears(g.perSeed, oracle.perSeed.map((x) => (x === null ? null : (2 / 3) * x)))
          .pass,
      ],
      ...(["heuristic", "perplexity", "random", "fasttext"] as const).map((m) => [
        `headline beats ${m} (its best setting) on final testClean NLL`,
        pairedClears(nlls(bestOf(m, m === "heuristic" ? [null] : fractions)), dr, true).pass,
      ]),
      [
        "headline: the rater drops corrupted records at a far higher rate than clean prose",
        dropRatio >= 2,
      ],
      [
        "transfer: the best fraction of the small LM is best (or one step off) for the 4× larger LM",
        report.transfer!.withinOneStep,
      ],
      [
        "same-distribution: the pool-objective rater's gain on testClean reaches half its ceiling's (drops exactly the corrupted records, keeps email)",
        pairedClears(
          sd.rater!.perSeed,
          sd.ceiling!.perSeed.map((x) => (x === null ? null : 0.5 * x)),
        ).pass,
      ],
      [
        `noise floor: random dropping's gain on testClean at the headline's fraction (${
          pct(best)
        }%) is near zero`,
        (random.mean === null || Math.abs(random.mean) <= 0.05) &&
        (() => {
          const d = pairedClears(nlls(`random-${pct(best)}`), nlls("baseline")).diff;
          return d.ci95 !== null && d.ci95[0] <= 0 && d.ci95[1] >= 0;
        })(),
      ],
    ]);
    for (
      const f of [
        "nll-testClean-small.svg",
        "nll-test-small.svg",
        "nll-testClean-large.svg",
      ]
    ) {
      const svg = await Deno.readTextFile(join(dir, "report", f));
      expect(svg.startsWith("<svg")).toBe(true);
      expect(svg).toContain("<polyline");
      expect(svg).not.toContain("NaN");
    }
  });

  it("reuses every finished stage on a rerun", async () => {
    const lines: string[] = [];
    const rerun = await runDemo({ preset: PRESETS.tiny, output: dir, log: (l) => lines.push(l) });
    expect(lines.some((l) => l.includes("[prepare] reused"))).toBe(true);
    expect(lines.some((l) => l.includes("[meta-train mixture] reusing"))).toBe(true);
    expect(lines.some((l) => l.includes("[meta-train target-set] reusing"))).toBe(true);
    expect(lines.some((l) => /31 downstream runs, 31 already finished/.test(l))).toBe(true);
    // The rerun's report still states what the stages cost when they ran (summed over runs).
    const timings = (rerun.report as ReportJson).timings;
    expect(timings["meta-train (mixture)"]).toBeGreaterThanOrEqual(
      report.timings["meta-train (mixture)"],
    );
    expect(timings["meta-train (mixture)"]).toBeGreaterThan(0.5);
    expect(timings.total).toBeGreaterThanOrEqual(report.timings.total);
    // The classifier's figures come back from its stored stats, not from scoring again.
    expect((rerun.report as ReportJson).classifier).toEqual(report.classifier);
    expect(lines.some((l) => l.includes("training the fastText classifier"))).toBe(false);
    const stages = [
      "prepare",
      ...["mixture", "target set"].flatMap((v) =>
        ["meta-train", "score"].map((s) => `${s} (${v})`)
      ),
      "score (unseen)",
      "downstream",
    ];
    expect(Object.keys(timings).sort()).toEqual([...stages, "total"].sort());
    for (const s of stages) expect(timings[s], s).toBeGreaterThan(0);
    expect(timings.total).toBeCloseTo(stages.reduce((a, s) => a + timings[s], 0), 6);
  }, 300_000);
});
