import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { runDemo } from "../../scripts/demo.ts";
import { PRESETS } from "../../evaluation/presets.ts";
import { pct } from "../../evaluation/evaluation.ts";
import type { ReportJson } from "../../evaluation/report.ts";
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
        "### The mixture's own test split",
        "## Final test NLL of every run",
        "## What was dropped",
        "## Transfer to a larger LM",
        "## Clean-only corpus (prose alone)",
        "## Target set: clean prose as the rater's outer objective",
        "## Plots",
      ]
    ) expect(markdown).toContain(section);
    expect(markdown).toContain("Lowest-rated records:");
    expect(markdown).toContain("Highest-rated records:");
  });

  it("reports a finite best discard fraction and a final NLL for every run on both test sets", () => {
    expect(PRESETS.tiny.fractions).toContain(report.bestDiscardFraction);
    const runs = Object.entries(report.finalTestNll);
    // baseline, heuristic, 2 oracles, 2 random, 2 perplexity, 2 fastText, 2 DataRater, × 2 seeds,
    // + 3 large runs.
    expect(runs.length).toBe(12 * 2 + 3);
    for (const [name, losses] of runs) {
      expect(Object.keys(losses).sort(), name).toEqual(["test", "testClean"]);
      for (const v of Object.values(losses)) expect(Number.isFinite(v), name).toBe(true);
    }
    expect(Object.keys(report.cleanOnly!.finalTestNll).length).toBe(3);
  });

  it("reports the target-set rater beside: its runs on both test sets and what it kept", () => {
    const ts = report.targetSet!;
    // baseline + 2 DataRater fractions, × 2 seeds.
    expect(Object.keys(ts.finalTestNll).length).toBe(3 * 2);
    for (const [name, losses] of Object.entries(ts.finalTestNll)) {
      expect(Object.keys(losses).sort(), name).toEqual(["test", "testClean"]);
      for (const v of Object.values(losses)) expect(Number.isFinite(v), name).toBe(true);
    }
    expect(PRESETS.tiny.fractions).toContain(ts.bestDiscardFraction);
    expect(ts.bestDiscardFraction).toBe(
      argmin((f) =>
        mean(
          seeds.map((s) => ts.finalTestNll[`target-set-datarater-${pct(f)}-small-s${s}`].testClean),
        )
      ),
    );
    expect(ts.netComputeGainSeeds.length).toBe(2);
    expect(Object.keys(ts.keepRates).sort()).toEqual(["datarater@25", "datarater@50"]);
    // The same mixture is rated: the same sources as every filter of the mixture.
    expect(Object.keys(ts.scoreBySource)).toEqual(Object.keys(report.keepRates.heuristic));
    for (const v of Object.values(ts.scoreBySource)) {
      expect(Number.isFinite(v.mean)).toBe(true);
      expect(Number.isInteger(v.count) && v.count > 0).toBe(true);
    }
    for (const rates of Object.values(ts.keepRates)) {
      expect(Object.keys(rates)).toEqual(Object.keys(ts.scoreBySource));
      for (const [source, rate] of Object.entries(rates)) {
        expect(rate >= 0 && rate <= 1, source).toBe(true);
        const kept = rate * ts.scoreBySource[source].count; // a whole number of records
        expect(Math.abs(kept - Math.round(kept)), source).toBeLessThan(1e-9);
      }
    }
    // One global threshold per fraction: discarding more keeps no more of any source.
    for (const [source, rate] of Object.entries(ts.keepRates["datarater@50"])) {
      expect(rate, source).toBeLessThanOrEqual(ts.keepRates["datarater@25"][source]);
    }
    expect(markdown).toContain("target-set-nll-testClean.svg");
  });

  it("states netComputeGain as a number, or null only when a run never reached the baseline", () => {
    expect(report.netComputeGainSeeds.length).toBe(2);
    if (report.netComputeGain === null) {
      expect(report.netComputeGainSeeds.every((g) => g === null)).toBe(true);
    } else expect(Number.isFinite(report.netComputeGain)).toBe(true);
  });

  it("picks the best fraction by mean final NLL and reports that fraction's per-seed gains", () => {
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
    const clean = report.cleanOnly!;
    expect(Object.keys(clean.finalTestNll).sort()).toEqual([
      "clean-only-baseline-small-s0",
      "clean-only-datarater-25-small-s0",
      "clean-only-datarater-50-small-s0",
    ]);
    expect(clean.bestDiscardFraction).toBe(
      argmin((f) => clean.finalTestNll[`clean-only-datarater-${pct(f)}-small-s0`].testClean),
    );
  });

  it("keeps exactly what the exact filters must keep, and whole records of every source", () => {
    const counts = Object.fromEntries(
      Object.entries(report.targetSet!.scoreBySource).map(([s, v]) => [s, v.count]),
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
    for (const s of sources) {
      expect(report.keepRates["datarater@50"][s], s).toBeLessThanOrEqual(
        report.keepRates["datarater@25"][s],
      );
    }
  });

  it("reports the fastText classifier: balanced training set and its scoring throughput", () => {
    const c = report.classifier!;
    expect(c.positives).toBeGreaterThan(0);
    // As many pool records as target-set documents (the pool is the larger set here).
    expect(c.negatives).toBe(c.positives);
    const n = Object.values(report.targetSet!.scoreBySource).reduce((a, v) => a + v.count, 0);
    expect(n).toBeGreaterThan(c.positives);
    expect(c.scoredBytes).toBeGreaterThan(n); // every train record scored, each > 1 byte
    expect(Number.isFinite(c.mbPerSecondPerCore) && c.mbPerSecondPerCore > 0).toBe(true);
    expect(c.trainSeconds).toBeGreaterThan(0);
    expect(markdown).toContain(`**${c.mbPerSecondPerCore.toFixed(1)} MB/s per core**`);
    expect(markdown).toContain(`| fasttext@25% |`);
  });

  it("gives per-source keep rates in [0, 1] for the DataRater and every baseline", () => {
    const keys = Object.keys(report.keepRates).sort();
    expect(keys).toEqual([
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

  it("measures every claim of the issue and writes the plots", async () => {
    expect(report.checks.length).toBe(8);
    for (const c of report.checks) expect(typeof c.pass).toBe("boolean");
    // Each verdict is the one its figures give.
    const best = report.bestDiscardFraction!;
    const nll = (run: string) =>
      mean(seeds.map((s) => report.finalTestNll[`mixture-${run}-small-s${s}`].testClean));
    const drLoss = nll(`datarater-${pct(best)}`);
    const gain = report.netComputeGain;
    const oracle = report.oracleComputeGain;
    const rates = report.keepRates[`datarater@${pct(best)}`];
    const corrupt = mean(
      Object.entries(rates).filter(([s]) => s.startsWith("corrupt/")).map(([, v]) => v),
    );
    const dropRatio = (1 - corrupt) / Math.max(1e-9, 1 - rates.prose);
    expect(report.checks.map((c) => [c.claim, c.pass])).toEqual([
      [
        "net compute gain on testClean at the best discard fraction, mean over seeds",
        gain !== null && report.netComputeGainSeeds.every((g) => g !== null) && gain >= 0.25,
      ],
      [
        "DataRater's gain as a share of the oracle's (keeps clean prose by its label)",
        gain !== null && oracle !== null && oracle > 0 && gain / oracle >= 2 / 3,
      ],
      [
        "DataRater at its best fraction beats heuristic (its best setting) on final testClean NLL",
        drLoss < nll("heuristic"),
      ],
      [
        "DataRater at its best fraction beats perplexity (its best setting) on final testClean NLL",
        drLoss < Math.min(...fractions.map((f) => nll(`perplexity-${pct(f)}`))),
      ],
      [
        "DataRater at its best fraction beats random (its best setting) on final testClean NLL",
        drLoss < Math.min(...fractions.map((f) => nll(`random-${pct(f)}`))),
      ],
      [
        "DataRater at its best fraction beats fasttext (its best setting) on final testClean NLL",
        drLoss < Math.min(...fractions.map((f) => nll(`fasttext-${pct(f)}`))),
      ],
      [
        "the rater drops corrupted records at a far higher rate than clean prose",
        dropRatio >= 2,
      ],
      [
        "transfer: the best fraction of the small LM is best (or one step off) for the larger LM",
        report.transfer!.withinOneStep,
      ],
    ]);
    for (
      const f of [
        "nll-testClean-small.svg",
        "nll-test-small.svg",
        "nll-testClean-large.svg",
        "clean-only-nll-testClean.svg",
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
    expect(lines.some((l) => /27 downstream runs, 27 already finished/.test(l))).toBe(true);
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
      ...["mixture", "clean-only", "target set"].flatMap((v) =>
        ["meta-train", "score", "downstream"].map((s) => `${s} (${v})`)
      ),
    ];
    expect(Object.keys(timings).sort()).toEqual([...stages, "total"].sort());
    for (const s of stages) expect(timings[s], s).toBeGreaterThan(0);
    expect(timings.total).toBeCloseTo(stages.reduce((a, s) => a + timings[s], 0), 6);
  }, 300_000);
});
