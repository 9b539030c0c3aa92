/**
 * `deno task gpu-kit --output DIR`: writes the GPU kit, a self-contained folder (under 60 MiB) that
 * measures the trainer's meta-step on any GPU node with bash alone — no Node, Deno or network
 * there. Its `run.sh` (from `scripts/gpu-kit/run.sh`) prints the figures as JSON lines.
 *
 * The kit holds: `deno.xz` (this Deno, linux x86-64, xz-compressed); `datarater-gpu-kit.js`
 * (`scripts/gpu-kit/entry.ts` bundled with tfjs and its WebGPU and WASM backends) and the
 * tfjs-wasm binaries where the bundle's `useBackend("wasm")` resolves them
 * (`node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm`, nothing else under node_modules);
 * `debs/` (the Vulkan and GL loaders, amd64, which slim GPU images lack; cached under
 * `.cache/gpu-kit/debs/` so rebuilds are offline); `meta_step_torch.py` (the PyTorch reference);
 * `kit.json` (what was built, from which commit).
 *
 * @example
 * ```sh
 * deno task gpu-kit --output /tmp/kit            # then, on a GPU node: bash /tmp/kit/run.sh
 * deno task gpu-kit --output /tmp/kit --no-vulkan --xz-level 1
 * ```
 */
import { parseArgs } from "node:util";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The kit must travel to a device machine that takes 64 MiB with the rest of the tree. */
export const KIT_LIMIT_BYTES = 60 * 2 ** 20;

/** The Vulkan loader and the GL dispatch libraries NVIDIA's Vulkan driver links against. */
export const VULKAN_PACKAGES = [
  "libvulkan1",
  "libegl1",
  "libglvnd0",
  "libopengl0",
  "libgl1",
  "libglx0",
  "libgles2",
];

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The kit could not be built; the message says what to do. */
export class GpuKitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GpuKitError";
  }
}

export interface GpuKitOptions {
  /** An empty or new folder. */
  output: string;
  /** Leave out the Vulkan loaders (where apt cannot download them). */
  vulkan?: boolean;
  /** xz preset for Deno: 9 (default) is smallest; 1 builds in seconds (tests). */
  xzLevel?: number;
  /** The Deno binary to carry (default: the one running this). */
  deno?: string;
  /** Where downloaded debs are kept between builds. */
  cacheDir?: string;
  log?: (line: string) => void;
}

async function run(cmd: string, args: string[], opts: { cwd?: string } = {}) {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stdout: "piped", stderr: "piped" })
      .output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new GpuKitError(`${cmd} is not installed`);
    }
    throw e;
  }
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  if (!out.success) {
    throw new GpuKitError(
      `${cmd} ${args.join(" ")} failed (exit ${out.code}): ${text(out.stderr)}`,
    );
  }
  return { stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Refuses anything but a linux x86-64 ELF: the device machines are x86-64 Linux. */
async function checkLinuxX64(path: string): Promise<void> {
  const file = await Deno.open(path);
  const header = new Uint8Array(20);
  try {
    await file.read(header);
  } finally {
    file.close();
  }
  const elf = header[0] === 0x7f && header[1] === 0x45 && header[2] === 0x4c && header[3] === 0x46;
  const machine = header[18] | (header[19] << 8);
  if (!elf || header[4] !== 2 || machine !== 0x3e) {
    throw new GpuKitError(
      `${path} is not a linux x86-64 executable; pass --deno with the linux x86-64 Deno ` +
        "(npm's @deno/linux-x64-glibc package has it)",
    );
  }
}

/** The cached amd64 debs of {@link VULKAN_PACKAGES}, downloading the missing ones. */
async function vulkanDebs(cacheDir: string, log: (line: string) => void): Promise<string[]> {
  const debDir = join(cacheDir, "debs");
  await Deno.mkdir(debDir, { recursive: true });
  const cached = () =>
    Array.from(Deno.readDirSync(debDir)).map((e) => e.name).filter((n) => n.endsWith(".deb"));
  const missing = () => VULKAN_PACKAGES.filter((p) => !cached().some((n) => n.startsWith(`${p}_`)));
  if (missing().length > 0) {
    log(`downloading ${missing().join(" ")} (amd64) with apt-get`);
    // A lists folder of our own, for amd64 alone: the host's own apt state and architecture
    // stay untouched, and an arm64 host still fetches what the x86-64 device needs.
    const lists = join(cacheDir, "apt-lists");
    await Deno.mkdir(join(lists, "partial"), { recursive: true });
    const o = [
      "-oAPT::Architecture=amd64",
      "-oAPT::Architectures=amd64",
      `-oDir::State::Lists=${lists}`,
    ];
    try {
      await run("apt-get", [...o, "-q", "update"]);
      await run("apt-get", [...o, "-q", "download", ...missing().map((p) => `${p}:amd64`)], {
        cwd: debDir,
      });
    } catch (e) {
      throw new GpuKitError(
        `could not download the Vulkan loaders with apt-get (${(e as Error).message}); ` +
          "build on a Debian/Ubuntu machine that reaches its apt mirror, or pass --no-vulkan " +
          "(run.sh then needs libvulkan1 on the GPU node)",
      );
    }
    if (missing().length > 0) {
      throw new GpuKitError(`apt-get download left out ${missing().join(" ")}; pass --no-vulkan`);
    }
  }
  return cached().filter((n) => VULKAN_PACKAGES.some((p) => n.startsWith(`${p}_`))).sort()
    .map((n) => join(debDir, n));
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    total += e.isDirectory ? await folderBytes(p) : (await Deno.stat(p)).size;
  }
  return total;
}

/** Builds the kit into `opts.output`; returns its size in bytes. */
export async function buildGpuKit(opts: GpuKitOptions): Promise<number> {
  const log = opts.log ?? ((line: string) => console.error(line));
  const out = resolve(opts.output);
  const xzLevel = opts.xzLevel ?? 9;
  if (!Number.isInteger(xzLevel) || xzLevel < 0 || xzLevel > 9) {
    throw new GpuKitError(`--xz-level must be 0..9, not ${opts.xzLevel}`);
  }
  await Deno.mkdir(out, { recursive: true });
  for await (const _ of Deno.readDir(out)) {
    throw new GpuKitError(`${out} is not empty: choose an empty or new folder`);
  }
  const deno = opts.deno ?? Deno.execPath();
  await checkLinuxX64(deno);

  log(`bundling scripts/gpu-kit/entry.ts`);
  await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    // The trainer imports onnxruntime-node lazily, for exporting only; the kit never exports.
    "--external",
    "onnxruntime-node",
    "--output",
    join(out, "datarater-gpu-kit.js"),
    join(ROOT, "scripts/gpu-kit/entry.ts"),
  ], { cwd: ROOT });

  // training/backend.ts finds the binaries with require.resolve from the bundle's folder.
  const wasmSource = dirname(
    createRequire(import.meta.url).resolve(
      "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    ),
  );
  const wasmDir = join(out, "node_modules/@tensorflow/tfjs-backend-wasm/dist");
  await Deno.mkdir(wasmDir, { recursive: true });
  for (
    const name of ["tfjs-backend-wasm", "tfjs-backend-wasm-simd", "tfjs-backend-wasm-threaded-simd"]
  ) {
    await Deno.copyFile(join(wasmSource, `${name}.wasm`), join(wasmDir, `${name}.wasm`));
  }

  let debs: string[] = [];
  if (opts.vulkan ?? true) {
    debs = await vulkanDebs(opts.cacheDir ?? join(ROOT, ".cache/gpu-kit"), log);
    await Deno.mkdir(join(out, "debs"));
    for (const d of debs) await Deno.copyFile(d, join(out, "debs", d.split("/").at(-1)!));
  }

  await Deno.copyFile(
    join(ROOT, "scripts/bench/reference/meta_step_torch.py"),
    join(out, "meta_step_torch.py"),
  );
  await Deno.copyFile(join(ROOT, "scripts/gpu-kit/run.sh"), join(out, "run.sh"));
  await Deno.chmod(join(out, "run.sh"), 0o755);

  log(`compressing ${deno} (xz -${xzLevel})`);
  const xz = new Deno.Command("xz", {
    args: [`-${xzLevel}`, "-T2", "-c", deno],
    stdout: "piped",
    stderr: "piped",
  });
  let compressed: Deno.CommandOutput;
  try {
    compressed = await xz.output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new GpuKitError("xz is not installed (apt-get install xz-utils)");
    }
    throw e;
  }
  if (!compressed.success) {
    throw new GpuKitError(`xz failed: ${new TextDecoder().decode(compressed.stderr)}`);
  }
  await Deno.writeFile(join(out, "deno.xz"), compressed.stdout);

  const commit = await run("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT })
    .then((r) => r.stdout, () => "unknown");
  await Deno.writeTextFile(
    join(out, "kit.json"),
    JSON.stringify({
      deno: Deno.version.deno,
      commit,
      builtAt: new Date().toISOString(),
      vulkanDebs: debs.map((d) => d.split("/").at(-1)),
    }) + "\n",
  );

  const bytes = await folderBytes(out);
  if (bytes > KIT_LIMIT_BYTES) {
    throw new GpuKitError(
      `the kit is ${(bytes / 2 ** 20).toFixed(1)} MiB, over its ${KIT_LIMIT_BYTES / 2 ** 20} MiB ` +
        "limit: a device machine takes 64 MiB with the rest of the tree",
    );
  }
  return bytes;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      output: { type: "string" },
      "no-vulkan": { type: "boolean", default: false },
      "xz-level": { type: "string", default: "9" },
      deno: { type: "string" },
    },
  });
  if (!values.output) {
    console.error(
      "usage: deno task gpu-kit --output DIR [--no-vulkan] [--xz-level 0-9] [--deno PATH]",
    );
    Deno.exit(2);
  }
  try {
    const bytes = await buildGpuKit({
      output: values.output,
      vulkan: !values["no-vulkan"],
      xzLevel: Number(values["xz-level"]),
      deno: values.deno,
    });
    console.log(
      `GPU kit in ${values.output}: ${(bytes / 2 ** 20).toFixed(1)} MiB; on a GPU node run ` +
        `bash ${join(values.output, "run.sh")}`,
    );
  } catch (e) {
    if (!(e instanceof GpuKitError)) throw e;
    console.error(`gpu-kit: ${e.message}`);
    Deno.exit(1);
  }
}
