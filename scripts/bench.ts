/**
 * `deno task bench [NAME…]`: runs every benchmark in `scripts/bench/` (or the named ones), one
 * process each so one benchmark's memory and JIT state cannot skew the next. Each prints JSON lines
 * of figures; this runner passes them through and exits non-zero if any benchmark failed.
 *
 * @example
 * ```sh
 * deno task bench                 # all
 * deno task bench meta-step       # scripts/bench/meta-step.ts only
 * ```
 */
const dir = new URL("./bench/", import.meta.url);
const wanted = Deno.args.filter((a) => !a.startsWith("-"));
const names = (await Array.fromAsync(Deno.readDir(dir)))
  .filter((e) => e.isFile && e.name.endsWith(".ts"))
  .map((e) => e.name.replace(/\.ts$/, ""))
  .filter((n) => wanted.length === 0 || wanted.includes(n))
  .sort();

if (names.length === 0) {
  console.error(`no benchmark matches ${wanted.join(", ")}`);
  Deno.exit(2);
}

let failed = 0;
for (const name of names) {
  console.error(`# bench ${name}`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`${name}.ts`, dir).pathname],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) {
    failed++;
    console.error(`# bench ${name} failed (exit ${code})`);
  }
}
Deno.exit(failed ? 1 : 0);
