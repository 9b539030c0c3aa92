import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { runDemo } from "../../scripts/demo.ts";
import { PRESETS } from "../../evaluation/presets.ts";
import type { ReportJson } from "../../evaluation/report.ts";

// The quick pipeline's steps at the tiny size: corpus → meta-training → ONNX export → scoring
// function over HTTP → manifests → downstream runs → report. Numbers are meaningless at this size;
// what is pinned is that every stage runs and every section has finite figures.
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
    // baseline, heuristic, 2 oracles, 2 random, 2 perplexity, 2 DataRater, × 2 seeds, + 3 large runs.
    expect(runs.length).toBe(10 * 2 + 3);
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
    expect(ts.netComputeGainSeeds.length).toBe(2);
    expect(Object.keys(ts.keepRates).sort()).toEqual(["datarater@25", "datarater@50"]);
    expect(ts.keepRates["datarater@25"].prose).toBeGreaterThanOrEqual(0);
    for (const v of Object.values(ts.scoreBySource)) expect(Number.isFinite(v.mean)).toBe(true);
    expect(markdown).toContain("target-set-nll-testClean.svg");
  });

  it("states netComputeGain as a number, or null only when a run never reached the baseline", () => {
    expect(report.netComputeGainSeeds.length).toBe(2);
    if (report.netComputeGain === null) {
      expect(report.netComputeGainSeeds.every((g) => g === null)).toBe(true);
    } else expect(Number.isFinite(report.netComputeGain)).toBe(true);
  });

  it("gives per-source keep rates in [0, 1] for the DataRater and every baseline", () => {
    const keys = Object.keys(report.keepRates).sort();
    expect(keys).toEqual([
      "datarater@25",
      "datarater@50",
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
    expect(report.checks.length).toBe(7);
    for (const c of report.checks) expect(typeof c.pass).toBe("boolean");
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
    expect(lines.some((l) => /23 downstream runs, 23 already finished/.test(l))).toBe(true);
    // The rerun's report still states what the stages cost when they ran (summed over runs).
    const timings = (rerun.report as ReportJson).timings;
    expect(timings["meta-train (mixture)"]).toBeGreaterThanOrEqual(
      report.timings["meta-train (mixture)"],
    );
    expect(timings["meta-train (mixture)"]).toBeGreaterThan(0.5);
    expect(timings.total).toBeGreaterThanOrEqual(report.timings.total);
  }, 300_000);
});
