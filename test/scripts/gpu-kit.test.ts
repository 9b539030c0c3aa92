/**
 * `deno task gpu-kit`: the kit builds self-contained and under its size limit, and its run.sh, run
 * as a GPU node would (an empty folder, no Node or Deno on PATH, a bare environment), prints JSON
 * lines with real figures. The kit is built once, with `xz -1` (xz -9 of Deno's 95 MB takes
 * minutes on two cores) and `--no-vulkan` (the loaders come from apt, which CI may not reach);
 * run.sh runs `--quick` with the stages that take seconds on a CPU: Deno's software WebGPU
 * adapter needs minutes to compile a whole meta-step's shaders.
 */
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { buildGpuKit, KIT_LIMIT_BYTES } from "../../scripts/gpu-kit.ts";

let root: string;
let kit: string;
let kitBytes: number;

beforeAll(async () => {
  root = await Deno.makeTempDir({ prefix: "gpu-kit-test-" });
  kit = join(root, "kit");
  kitBytes = await buildGpuKit({ output: kit, vulkan: false, xzLevel: 1, log: () => {} });
}, 240_000);

afterAll(async () => {
  if (root) await Deno.remove(root, { recursive: true });
});

async function files(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const rel = prefix + e.name;
    if (e.isDirectory) out.push(...await files(join(dir, e.name), rel + "/"));
    else out.push(rel);
  }
  return out.sort();
}

it("builds a kit under 60 MiB: Deno, one bundle, the tfjs-wasm binaries, the PyTorch reference, run.sh", async () => {
  expect(kitBytes).toBeLessThan(KIT_LIMIT_BYTES);
  const wasm = "node_modules/@tensorflow/tfjs-backend-wasm/dist/";
  expect(await files(kit)).toEqual([
    "datarater-gpu-kit.js",
    "deno.xz",
    "kit.json",
    "meta_step_torch.py",
    `${wasm}tfjs-backend-wasm-simd.wasm`,
    `${wasm}tfjs-backend-wasm-threaded-simd.wasm`,
    `${wasm}tfjs-backend-wasm.wasm`,
    "run.sh",
  ]);
  const manifest = JSON.parse(await Deno.readTextFile(join(kit, "kit.json")));
  expect(manifest.deno).toBe(Deno.version.deno);
  expect(manifest.vulkanDebs).toEqual([]);
  // The bundle imports no npm package at run time: tfjs and its backends are inside it.
  const bundle = await Deno.readTextFile(join(kit, "datarater-gpu-kit.js"));
  expect(bundle).not.toMatch(/from\s*["']npm:/);
  expect(bundle).not.toMatch(/from\s*["']@tensorflow\//);
});

it("rejects a folder that is not empty", async () => {
  await expect(buildGpuKit({ output: kit, vulkan: false, log: () => {} })).rejects.toThrow(
    /is not empty: choose an empty or new folder/,
  );
});

/** Runs the kit's run.sh as a GPU node would: from an empty folder, in a bare environment. */
/** Every stage a --quick run reports, in order: those left out by --only still say so. */
const QUICK_STAGES = [
  "host",
  "deno",
  "vulkan",
  "adapter",
  "correctness",
  "webgpu-tiny",
  "torch-cuda-tiny",
  "wasm-tiny",
  "torch-cpu-tiny",
  "done",
];

async function runKit(args: string[], env: Record<string, string> = {}) {
  const cwd = await Deno.makeTempDir({ dir: root }), home = await Deno.makeTempDir({ dir: root });
  const run = await new Deno.Command("bash", {
    args: [join(kit, "run.sh"), ...args],
    cwd,
    clearEnv: true,
    // GPU_KIT_WORK keeps the unpacked Deno (95 MB) inside the test's folder, which is removed.
    env: { PATH: "/usr/bin:/bin", HOME: home, GPU_KIT_WORK: join(root, "work"), ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(run.stdout);
  expect(run.code, new TextDecoder().decode(run.stderr)).toBe(0);
  const lines = stdout.trim().split("\n").map((l) => JSON.parse(l));
  return { stdout, lines, cwd, byStage: Object.fromEntries(lines.map((l) => [l.stage, l])) };
}

it(
  "run.sh from an empty folder with a bare environment prints a WASM figure and a WebGPU-vs-WASM check",
  async () => {
    const out = join(root, "out");
    const { stdout, lines, byStage, cwd } = await runKit(
      ["--quick", "--only", "adapter,correctness,wasm-tiny,torch-cpu-tiny"],
      { OUT: out },
    );
    expect(lines.map((l) => l.stage)).toEqual(QUICK_STAGES);
    expect(byStage.host.quick).toBe(true);
    expect(byStage.deno.version).toContain(`deno ${Deno.version.deno}`);
    expect(byStage.vulkan.loader).toBe("absent (kit built with --no-vulkan)");
    expect(byStage["webgpu-tiny"].skipped).toBe("not in --only");

    const wasm = byStage["wasm-tiny"];
    expect(wasm.error).toBeUndefined();
    expect(wasm).toMatchObject({ backend: "wasm", size: "tiny", steps: 2, warmup: 1 });
    expect(wasm.msPerStep).toBeGreaterThan(0);

    if (byStage.adapter.found) {
      expect(byStage.correctness).toMatchObject({
        pass: true,
        adapter: byStage.adapter.description,
      });
      expect(byStage.correctness.maxGradErrorOverBound).toBeLessThanOrEqual(1);
    } else {
      expect(byStage.correctness).toMatchObject({ pass: null, adapter: null });
    }

    // Where python3 has torch the reference's tiny step is timed; elsewhere the line says why not.
    const torch = byStage["torch-cpu-tiny"];
    if (torch.error === undefined) {
      expect(torch).toMatchObject({ device: "cpu", size: "tiny", threads: 1, steps: 2 });
      expect(torch.msPerStep).toBeGreaterThan(0);
    } else {
      expect(torch.error).toMatch(/torch|python3/);
    }

    // What the device copies back.
    expect(await Deno.readTextFile(join(out, "gpu-kit-results.jsonl"))).toBe(stdout);
    expect(await Deno.readTextFile(join(out, "gpu-kit-run.log"))).toContain("### wasm-tiny");
    expect(await files(cwd)).toEqual([]);
  },
  240_000,
);

it(
  "run.sh without a WebGPU adapter says so, and the check and the WebGPU figure report it",
  async () => {
    // Vulkan alone, with a driver manifest that does not exist: Deno's WebGPU finds no adapter.
    const { lines, byStage } = await runKit(
      ["--quick", "--only", "adapter,correctness,webgpu-tiny"],
      { DENO_WEBGPU_BACKEND: "vulkan", VK_DRIVER_FILES: "/nonexistent/icd.json" },
    );
    expect(lines.map((l) => l.stage)).toEqual(QUICK_STAGES);
    expect(byStage.vulkan.driverFiles).toBe("/nonexistent/icd.json");
    expect(byStage.adapter).toMatchObject({ found: false, navigatorGpu: true });
    expect(byStage.correctness).toMatchObject({ pass: null, adapter: null });
    expect(byStage["webgpu-tiny"].error).toMatch(/no WebGPU adapter/);
    expect(byStage["wasm-tiny"].skipped).toBe("not in --only");
  },
  120_000,
);
