/**
 * The GPU kit's program (bundled by `scripts/gpu-kit.ts` into one JavaScript file, run by the kit's
 * `run.sh`). Each command prints one JSON line, `{"error": ...}` (exit status 1) where it fails:
 *
 * - `bench --backend wasm|webgpu --size tiny|reference|large [--warmup N] [--steps N]`: ms per
 *   meta-step of the real trainer loop, timed by `scripts/bench/lib/meta-step-bench.ts` (the same
 *   timer as `deno task bench meta-step`), for its `TINY_STEP`, `REFERENCE_STEP` or `LARGE_STEP`;
 *   on WebGPU the line names the adapter, so a software adapter's figure is not mistaken for a
 *   GPU's.
 * - `check`: the meta-gradient of a tiny config on WebGPU and on WASM, and whether they agree
 *   within the tolerance `test/training/backend.test.ts` holds WebGPU to (1e-3 of each parameter's
 *   largest gradient, plus 1e-9); `pass: null` with `adapter: null` where no WebGPU adapter exists.
 *
 * ```sh
 * deno run -A scripts/gpu-kit/entry.ts bench --backend wasm --size reference --steps 3
 * ```
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import type { BackendName } from "../../training/backend.ts";
import { tinyMetaGradient } from "../../training/tiny-meta-gradient.ts";
import {
  benchMetaStep,
  benchTexts,
  LARGE_STEP,
  REFERENCE_STEP,
  type StepConfig,
  TINY_STEP,
} from "../bench/lib/meta-step-bench.ts";

const SIZES: Record<string, StepConfig> = {
  tiny: TINY_STEP,
  reference: REFERENCE_STEP,
  large: LARGE_STEP,
};

/** What `check` holds WebGPU to: the bound of `test/training/backend.test.ts`. */
const RELATIVE_TOLERANCE = 1e-3;
const ABSOLUTE_TOLERANCE = 1e-9;

interface GpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
}
interface Gpu {
  requestAdapter(opts?: { powerPreference?: string }): Promise<{ info: GpuAdapterInfo } | null>;
}

/** The adapter tfjs-backend-webgpu will get (it asks for high performance too), or null. */
async function webgpuAdapter(): Promise<GpuAdapterInfo | null> {
  const gpu = (globalThis.navigator as { gpu?: Gpu } | undefined)?.gpu;
  if (!gpu) return null;
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() =>
    null
  );
  if (!adapter) return null;
  const { vendor, architecture, device, description } = adapter.info;
  return { vendor, architecture, device, description };
}

/**
 * tfjs-wasm's Emscripten loader reads `__dirname` when Deno looks like Node to it; an ES module
 * bundle has none, so give it the bundle's folder (where the kit keeps the .wasm files).
 */
function provideDirname(): void {
  const g = globalThis as { __dirname?: string };
  g.__dirname ??= dirname(fileURLToPath(import.meta.url));
}

async function bench(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      backend: { type: "string" },
      size: { type: "string", default: "reference" },
      warmup: { type: "string", default: "2" },
      steps: { type: "string", default: "5" },
    },
  });
  const backend = values.backend as BackendName;
  if (backend !== "wasm" && backend !== "webgpu") {
    throw new Error(`--backend must be wasm or webgpu, not ${values.backend}`);
  }
  const step = SIZES[values.size];
  if (!step) throw new Error(`--size must be one of ${Object.keys(SIZES).join(", ")}`);
  const warmup = Number(values.warmup), steps = Number(values.steps);
  if (!(Number.isInteger(warmup) && warmup >= 0 && Number.isInteger(steps) && steps >= 1)) {
    throw new Error("--warmup must be an integer >= 0 and --steps >= 1");
  }
  const adapter = backend === "webgpu" ? await webgpuAdapter() : undefined;
  if (adapter === null) throw new Error("no WebGPU adapter: navigator.gpu found none");
  const figure = await benchMetaStep(
    `meta-step-${values.size}`,
    { ...step, backend },
    warmup,
    steps,
  );
  return {
    ...figure,
    backend,
    size: values.size,
    warmup,
    ...(adapter ? { adapter: adapter.description } : {}),
  };
}

async function check(): Promise<Record<string, unknown>> {
  const adapter = await webgpuAdapter();
  if (!adapter) return { pass: null, adapter: null, note: "no WebGPU adapter: nothing to check" };
  const texts = benchTexts(12, 3);
  const batches = { inner: [texts.slice(0, 4), texts.slice(4, 8)], outer: texts.slice(8) };
  const wasm = await tinyMetaGradient("wasm", batches);
  const webgpu = await tinyMetaGradient("webgpu", batches);
  // The backend test's bound per element: 1e-3 of the parameter's largest gradient, plus 1e-9 for
  // gradients that are zero but for rounding (the output bias's: the batch softmax ignores shifts).
  let worst = 0;
  for (const [name, { values: a }] of Object.entries(wasm.grads)) {
    const b = webgpu.grads[name].values;
    const bound = RELATIVE_TOLERANCE * Math.max(...a.map(Math.abs)) + ABSOLUTE_TOLERANCE;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / bound);
  }
  const metaLossError = Math.abs(wasm.metaLoss - webgpu.metaLoss);
  return {
    pass: worst <= 1 && metaLossError <= 1e-4,
    adapter: adapter.description,
    maxGradErrorOverBound: worst,
    relativeTolerance: RELATIVE_TOLERANCE,
    absoluteTolerance: ABSOLUTE_TOLERANCE,
    metaLossWasm: wasm.metaLoss,
    metaLossWebgpu: webgpu.metaLoss,
  };
}

if (import.meta.main) {
  provideDirname();
  const [command, ...rest] = Deno.args;
  const run = command === "bench" ? bench : command === "check" ? check : null;
  if (!run) {
    console.error(
      "usage: entry bench --backend wasm|webgpu --size tiny|reference|large | entry check",
    );
    Deno.exit(2);
  }
  try {
    console.log(JSON.stringify(await run(rest)));
  } catch (e) {
    // One line that run.sh reports as the stage's error, rather than a stack trace to dig in.
    console.log(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
    console.error(e);
    Deno.exit(1);
  }
}
