/**
 * The allowed-roots check under fire: seeded random URIs mixing `.`/`..`/empty segments,
 * percent-encodings, case, unicode look-alikes and backslashes, over S3 keys and over a file tree
 * with links inside and outside the root. Whatever parseUri and the check accept must stay inside
 * a root: for S3 as any resolving server would read the key, for files where a real read or write
 * actually lands. The seed is printed; `ROOTS_FUZZ_SEED=n` replays a run.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as path from "node:path";
import { ApiError } from "../../functions/errors.ts";
import { AllowedRoots, resolveReal } from "../../functions/roots.ts";
import { FileStorage, formatUri, InvalidUriError, parseUri } from "../../lib/storage.ts";

const SEED = Number(Deno.env.get("ROOTS_FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 31));
console.log(`roots fuzz seed: ${SEED} (replay with ROOTS_FUZZ_SEED=${SEED})`);

/** mulberry32: small, seeded, good enough to pick pieces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE = [
  "..",
  ".",
  "",
  "%2e%2e",
  "%2E%2E",
  "%2e%2E",
  "%2e",
  ".%2e",
  "%2e.",
  "%252e%252e",
  "%2f",
  "%2F..",
  "..%2f",
  "%5c..",
  "%00",
  "a%00",
  "\u2024\u2024", // one-dot leaders: NFKC folds them to ".."
  "\u2024",
  "\uff0e\uff0e", // fullwidth full stops
  "..\uff0f", // fullwidth solidus
  "\uff0f..",
  "..\\",
  "\\..",
  "%",
  "x",
];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

function randomCase(r: () => number, s: string): string {
  return r() < 0.2 ? s.toUpperCase() : s;
}

function randomPath(r: () => number, names: readonly string[], maxLen = 7): string {
  const n = 1 + Math.floor(r() * maxLen);
  const segs: string[] = [];
  for (let i = 0; i < n; i++) {
    segs.push(randomCase(r, r() < 0.5 ? pick(r, HOSTILE) : pick(r, names)));
  }
  return segs.map((s, i) => (i === 0 ? s : (r() < 0.1 ? "//" : "/") + s)).join("");
}

/** Rejected by the parser (InvalidUriError) or the check (ApiError): both are a refusal. */
async function accepted(roots: AllowedRoots, field: string, uri: string): Promise<string | null> {
  let canonical: string;
  try {
    canonical = formatUri(parseUri(uri));
  } catch (e) {
    if (e instanceof InvalidUriError) return null;
    throw e;
  }
  try {
    await roots.check(field, canonical);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 403 || e.status === 400)) return null;
    throw e;
  }
  return canonical;
}

// ---------------------------------------------------------------------------------------------
// S3: what any resolving server could make of an accepted key

function decodeAll(s: string): string {
  for (let i = 0; i < 5; i++) {
    const next = s.replace(/%[0-9a-f]{2}/gi, (m) => String.fromCharCode(parseInt(m.slice(1), 16)));
    if (next === s) break;
    s = next;
  }
  return s;
}

/** RFC 3986 remove_dot_segments plus collapsing empty segments, on a path-style `/bucket/key`. */
function resolvePath(p: string): string[] {
  const out: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  return out;
}

/** Every bucket/key a resolver might turn `s3://bucket/key` into. */
function s3Readings(bucket: string, key: string): string[] {
  const forms = new Set<string>();
  for (const k of [key, decodeAll(key), decodeAll(key).normalize("NFKC")]) {
    forms.add(k);
    forms.add(k.replaceAll("\\", "/"));
  }
  return [...forms].map((k) => resolvePath(`/${bucket}/${k}`).join("/"));
}

describe("S3 URIs", () => {
  const roots = new AllowedRoots(["s3://bkt/tenantA/", "s3://bkt2/"]);
  const names = ["tenantA", "tenantB", "tenanta", "x", "secret", "bkt", "bkt2", "other"];

  it("no accepted URI resolves outside a root, whatever a server does with dots", async () => {
    const r = rng(SEED);
    let kept = 0;
    for (let i = 0; i < 10_000; i++) {
      const bucket = pick(r, ["bkt", "bkt2", "other", "BKT", "bkt.", "b%2ekt"]);
      const uri = `s3://${bucket}/${randomPath(r, names)}`;
      const canonical = await accepted(roots, "input", uri);
      if (canonical === null) continue;
      kept++;
      const loc = parseUri(canonical) as { bucket: string; key: string };
      for (const reading of s3Readings(loc.bucket, loc.key)) {
        // `bkt2` alone is the bucket root itself (a prefix of everything in it).
        const inside = `${reading}/`.startsWith("bkt/tenantA/") ||
          `${reading}/`.startsWith("bkt2/");
        expect(inside, `seed ${SEED}: ${uri} → ${reading}`).toBe(true);
      }
    }
    // The generator must also produce plenty of ordinary keys, or the property is vacuous.
    expect(kept).toBeGreaterThan(100);
  });
});

// ---------------------------------------------------------------------------------------------
// Files: where reads and writes really land

describe("file URIs with links inside and outside the root", () => {
  let base: string;
  let realRoot: string;
  const SECRET = "fuzz-secret-content";
  const files = new FileStorage();

  beforeAll(async () => {
    base = await Deno.realPath(await Deno.makeTempDir({ prefix: "roots-fuzz-" }));
    await Deno.mkdir(`${base}/root/sub/deep`, { recursive: true });
    await Deno.mkdir(`${base}/outside`);
    await Deno.writeTextFile(`${base}/outside/secret`, SECRET);
    await Deno.writeTextFile(`${base}/root/sub/f.jsonl`, "inside");
    await Deno.symlink("sub", `${base}/root/in`); // stays inside
    await Deno.symlink("../outside", `${base}/root/out`);
    await Deno.symlink("../outside/secret", `${base}/root/outf`);
    await Deno.symlink("../..", `${base}/root/sub/up`);
    await Deno.symlink("loop", `${base}/root/loop`);
    await Deno.symlink("../outside/newdir/x", `${base}/root/dang`);
    await Deno.symlink(`${base}/root/sub/f.jsonl`, `${base}/root/sub/deep/abs-in`);
    realRoot = `${base}/root`;
  });

  afterAll(async () => {
    await Deno.remove(base, { recursive: true });
  });

  async function tree(dir: string): Promise<string[]> {
    const out: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      out.push(e.name);
      if (e.isDirectory) {
        for (const x of await tree(`${dir}/${e.name}`)) out.push(`${e.name}/${x}`);
      }
    }
    return out.sort();
  }

  it("no accepted URI reads or writes outside the root", async () => {
    const roots = new AllowedRoots([`file://${base}/root/`]);
    const names = ["sub", "deep", "in", "out", "outf", "up", "loop", "dang", "abs-in", "f.jsonl"]
      .concat(["new", "secret", "outside", "root", "x"]);
    const r = rng(SEED ^ 0x5eed);
    let writes = 0;
    let reads = 0;
    const start = performance.now();
    for (let i = 0; i < 3000; i++) {
      const above = r() < 0.2; // start above the root, hoping `..` tricks lead back in or out
      const tail = randomPath(r, names);
      const p = above ? `${base}/${tail}` : `${base}/root/${tail}`;
      const uri = r() < 0.7 ? `file://${p}` : p;
      const field = r() < 0.5 ? "output" : "input";
      const canonical = await accepted(roots, field, uri);
      if (canonical === null || canonical.endsWith("/")) continue;
      const local = (parseUri(canonical) as { path: string }).path;
      if (field === "output") {
        try {
          await files.write(canonical, `written by case ${i}`, { ifNoneMatch: "*" });
        } catch {
          continue; // exists, or a folder in the way: nothing written, nothing to check
        }
        writes++;
        const landed = await resolveReal(local);
        expect(
          landed === realRoot || landed.startsWith(realRoot + "/"),
          `seed ${SEED}: ${uri} wrote ${landed}`,
        ).toBe(true);
      } else {
        let text: string;
        try {
          text = await files.readText(canonical);
        } catch {
          continue;
        }
        reads++;
        expect(text, `seed ${SEED}: ${uri} read the secret`).not.toBe(SECRET);
      }
    }
    // Nothing appeared outside the root, and the root's links still point where they did.
    expect(await tree(`${base}/outside`)).toEqual(["secret"]);
    expect((await Array.fromAsync(Deno.readDir(base))).map((e) => e.name).sort()).toEqual([
      "outside",
      "root",
    ]);
    expect(writes + reads).toBeGreaterThan(100);
    expect(path.isAbsolute(realRoot)).toBe(true);
    console.log(
      `roots fuzz: ${writes} writes, ${reads} reads accepted, ${
        Math.round(performance.now() - start)
      } ms`,
    );
  }, 60_000);
});
