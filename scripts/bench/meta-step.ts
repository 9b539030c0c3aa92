/**
 * Milliseconds per meta-step of the real trainer loop (batch sampling, meta-gradients, the
 * per-member meta-Adam and the averaged update), one JSON line per figure:
 *
 * - `meta-step-reference`: issue 3's reference step — batch 32, 64 bytes, inner LM d=64 with 1
 *   layer and 4 heads, MLP rater (embedding 32, 64 hidden), 2 plain-SGD inner updates, 1 inner
 *   model, WASM. (PyTorch on these CPUs: about 1.2 s.)
 * - `meta-step-default`: the default config (transformer rater, 8 inner models, Adam), one thread.
 * - `meta-step-default-2-workers`: the same with the population over 2 Web Workers.
 *
 * `peakRssMiB` is the process's peak resident set (VmHWM) after the figure's run.
 *
 * ```sh
 * deno run -A scripts/bench/meta-step.ts [--quick]
 * ```
 */
import { parseTrainConfig, type TrainConfigInput } from "../../lib/config.ts";
import { datasetFromTexts } from "../../training/data.ts";
import { train } from "../../training/trainer.ts";
import { Rng } from "../../training/rng.ts";

const quick = Deno.args.includes("--quick");

function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch { /* not Linux */ }
  return Math.round(Deno.memoryUsage().rss / 2 ** 20);
}

/** Prose-like records of ~100 bytes (the timing does not depend on their content). */
function texts(n: number, seed: number): string[] {
  const rng = new Rng(seed);
  const words = "the of and to in is was he for it with as his on be at by had not are but".split(
    " ",
  );
  return Array.from({ length: n }, () => {
    let s = "";
    while (s.length < 100) s += words[rng.int(words.length)] + " ";
    return s;
  });
}

async function bench(
  name: string,
  input: Omit<TrainConfigInput, "data" | "output">,
  warmup: number,
  measured: number,
) {
  const output = await Deno.makeTempDir({ prefix: "bench-meta-step-" });
  const config = parseTrainConfig({
    ...input,
    data: { train: "memory", heldout: "memory" },
    output,
    checkpointEvery: 1_000_000,
  });
  const seqLen = config.seqLen;
  const result = await train(config, {
    steps: warmup + measured,
    export: false,
    progress: "none",
    datasets: {
      train: datasetFromTexts("train", texts(2000, 1), seqLen),
      heldout: datasetFromTexts("heldout", texts(500, 2), seqLen),
    },
  });
  const times = result.metrics.slice(warmup).map((m) => m.msPerStep).sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  await Deno.remove(output, { recursive: true });
  console.log(JSON.stringify({
    bench: name,
    msPerStep: Math.round(median),
    steps: measured,
    peakRssMiB: peakRssMiB(),
  }));
}

await bench(
  "meta-step-reference",
  {
    seqLen: 64,
    rater: { kind: "mlp", dModel: 32, hidden: 64 },
    inner: { dModel: 64, layers: 1, heads: 4, optimizer: "sgd", lr: 0.1 },
    meta: { population: 1, unroll: 2, innerBatch: 32, outerBatch: 32 },
    backend: "wasm",
  },
  2,
  quick ? 3 : 8,
);

await bench("meta-step-default", { backend: "wasm" }, 1, quick ? 1 : 3);
await bench("meta-step-default-2-workers", { backend: "wasm", workers: 2 }, 1, quick ? 1 : 3);
