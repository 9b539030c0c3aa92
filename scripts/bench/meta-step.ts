/**
 * Milliseconds per meta-step of the real trainer loop (batch sampling, meta-gradients, the
 * per-member meta-Adam and the averaged update), one JSON line per figure:
 *
 * - `meta-step-reference`: issue 3's reference step — batch 32, 64 bytes, inner LM d=64 with 1
 *   layer and 4 heads, MLP rater (embedding 32, 64 hidden), 2 plain-SGD inner updates, 1 inner
 *   model, WASM. The same step written plainly in PyTorch (`reference/meta_step_torch.py`) is
 *   measured in the same run on the same number of threads (one: tfjs-wasm is single-threaded),
 *   giving `pytorchMsPerStep` and `speedupVsPytorch` (PyTorch ms / ours). Where
 *   `/usr/bin/python3` (or `$BENCH_TORCH_PYTHON`) cannot import torch (`apt-get install
 *   python3-torch`), `pytorchMsPerStep` is null and `pytorchNote` says so; the issue's nominal
 *   figure for PyTorch on these CPUs is about 1.2 s.
 * - `meta-step-default`: the default config (transformer rater, 8 inner models, Adam), one thread.
 * - `meta-step-default-2-workers`: the same with the population over 2 Web Workers.
 * - `meta-step-demo`: the default demo preset's meta-training (`evaluation/presets.ts`: patched
 *   transformer rater, population 4, batches 32, its 2 workers), the step the demo's time is made of.
 *
 * `peakRssMiB` is the process's peak resident set (VmHWM) after the figure's run.
 *
 * ```sh
 * deno run -A scripts/bench/meta-step.ts [--quick]
 * ```
 */
import { fileURLToPath } from "node:url";
import { benchMetaStep as bench, REFERENCE_STEP } from "./lib/meta-step-bench.ts";
import { PRESETS } from "../../evaluation/presets.ts";

const quick = Deno.args.includes("--quick");

/** The Python whose torch measures the reference (Debian's `python3-torch` installs it here). */
const TORCH_PYTHON = Deno.env.get("BENCH_TORCH_PYTHON") ?? "/usr/bin/python3";
/** tfjs-wasm runs on one thread, so the PyTorch reference gets one too. */
const REFERENCE_THREADS = 1;

async function runPython(args: string[]): Promise<Deno.CommandOutput | null> {
  try {
    return await new Deno.Command(TORCH_PYTHON, {
      args,
      stdout: "piped",
      stderr: "piped",
      // Keep BLAS/OpenMP pools at the thread count asked for, whatever torch's defaults are.
      env: {
        OMP_NUM_THREADS: String(REFERENCE_THREADS),
        MKL_NUM_THREADS: String(REFERENCE_THREADS),
      },
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * The PyTorch reference step's ms per step, measured now; null (with the reason) where torch is
 * not importable, so machines without it (CI) still get our own figures.
 */
async function pytorchReference(
  measured: number,
): Promise<{ msPerStep: number; torch: string } | { msPerStep: null; note: string }> {
  const probe = await runPython(["-c", "import torch"]);
  if (!probe?.success) {
    return {
      msPerStep: null,
      note: `torch is not importable by ${TORCH_PYTHON} (apt-get install python3-torch); ` +
        "issue 3's nominal figure for the PyTorch reference step on these CPUs is about 1.2 s",
    };
  }
  const script = fileURLToPath(new URL("./reference/meta_step_torch.py", import.meta.url));
  const out = await runPython([
    script,
    "--threads",
    String(REFERENCE_THREADS),
    "--steps",
    String(measured),
  ]);
  const stderr = new TextDecoder().decode(out!.stderr).trim();
  if (!out!.success) {
    throw new Error(`PyTorch reference ${script} failed (exit ${out!.code}): ${stderr}`);
  }
  const line = new TextDecoder().decode(out!.stdout).trim().split("\n").at(-1) ?? "";
  const result = JSON.parse(line) as { msPerStep: number; threads: number; torch: string };
  if (result.threads !== REFERENCE_THREADS) {
    throw new Error(
      `PyTorch reference ran on ${result.threads} threads, not ${REFERENCE_THREADS}: ` +
        "the comparison would not be like for like",
    );
  }
  return { msPerStep: result.msPerStep, torch: result.torch };
}

const referenceSteps = quick ? 3 : 8;
const reference = await bench(
  "meta-step-reference",
  { ...REFERENCE_STEP, backend: "wasm" },
  2,
  referenceSteps,
);
const pytorch = await pytorchReference(referenceSteps);
console.log(JSON.stringify({
  ...reference,
  threads: REFERENCE_THREADS,
  pytorchMsPerStep: pytorch.msPerStep,
  ...(pytorch.msPerStep === null ? { pytorchNote: pytorch.note } : {
    pytorchTorch: pytorch.torch,
    speedupVsPytorch: Math.round((pytorch.msPerStep / reference.msPerStep) * 100) / 100,
  }),
}));

console.log(
  JSON.stringify(await bench("meta-step-default", { backend: "wasm" }, 1, quick ? 1 : 3)),
);
console.log(
  JSON.stringify(
    await bench("meta-step-default-2-workers", { backend: "wasm", workers: 2 }, 1, quick ? 1 : 3),
  ),
);
console.log(
  JSON.stringify(await bench("meta-step-demo", PRESETS.default.metaTraining, 1, quick ? 1 : 3)),
);
