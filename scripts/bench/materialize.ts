/**
 * Materialisation throughput (lib/materialize.ts) against a plain copy of the same shards in the
 * same run: the copy streams each shard from storage and writes the same bytes create-only (what
 * any materialisation must at least do), so `ratio` = materialise MB/s ÷ copy MB/s says what the
 * join costs (the target is ≥ 0.5). Local files; shards and manifests are generated (random words,
 * about half the records kept), so no model is needed.
 *
 *   deno run -A scripts/bench/materialize.ts [--mb 64] [--shards 4] [--store file,s3] [--rounds 3]
 *
 * Prints one JSON line per store and case: `plain` (JSON Lines, shard checked by ETag),
 * `plain-sha256` (the header has no ETag, so every byte is hashed), `gzip` (decompressed and
 * compressed again). MB/s count the stored (for gzip, compressed) bytes read. A byte copy of a
 * gzip shard does no zlib work at all, so the gzip line also holds a second reference: a
 * decompress + recompress copy (node:zlib, the same level as materialisation's), what any filter
 * of a gzip shard must at least do (`recompressMBps`, `ratioRecompress`), and materialisation with
 * two shards at once (`materializeMBps2`, `ratio2`; everything else runs one stream at a time).
 * Before the `plain` line, `materialize-parts` times what any join must do besides copying
 * (read, find line ends, hash, parse the manifest), each alone on the same shards.
 * Stores: `file` (local files: the copy runs at page-cache speed, several
 * GB/s, a bar no per-line join in JavaScript reaches) and `s3` (the local S3 server of
 * lib/s3-server.ts over loopback: the real wire protocol, as production reads and writes S3).
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { createGzip } from "node:zlib";
import { DEFAULT_GZIP_LEVEL, materialize } from "../../lib/materialize.ts";
import {
  MANIFEST_KIND,
  MANIFEST_VERSION,
  type ManifestHeader,
  readManifestBlocks,
} from "../../lib/manifest.ts";
import { gunzipStream, gzip, zlibStream } from "../../lib/records.ts";
import { startS3Server } from "../../lib/s3-server.ts";
import { createStorage, FileStorage, type Storage } from "../../lib/storage.ts";

const { values } = parseArgs({
  options: {
    mb: { type: "string", default: "64" },
    shards: { type: "string", default: "4" },
    store: { type: "string", default: "file,s3" },
    rounds: { type: "string", default: "3" },
  },
});
const totalMb = Number(values.mb);
const shardCount = Number(values.shards);
const rounds = Math.max(1, Number(values.rounds));

const dir = await Deno.makeTempDir({ prefix: "bench-materialize-" });
let storage: Storage = new FileStorage();
let root = `file://${dir}/file`;

let seed = 12345;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
};
const words = Array.from({ length: 2000 }, (_, i) => `w${i.toString(36)}${"abcdefg".slice(i % 7)}`);

function shardText(bytes: number, s: number): { text: string; ids: string[] } {
  const lines: string[] = [];
  const ids: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const n = 50 + Math.floor(rand() * 400);
    const t = Array.from({ length: n }, () => words[Math.floor(rand() * words.length)]).join(" ");
    const id = `s${s}-${i}`;
    const line = JSON.stringify({ id, text: t, source: "bench" });
    lines.push(line);
    ids.push(id);
    size += line.length + 1;
  }
  return { text: lines.join("\n") + "\n", ids };
}

async function writeCase(name: string, kind: "plain" | "plain-sha256" | "gzip") {
  for (let s = 0; s < shardCount; s++) {
    const { text, ids } = shardText((totalMb * 1e6) / shardCount, s);
    const bytes = kind === "gzip" ? await gzip(text) : new TextEncoder().encode(text);
    const shard = `${root}/${name}/shards/part-${s}.jsonl${kind === "gzip" ? ".gz" : ""}`;
    await storage.write(shard, bytes);
    const info = (await storage.stat(shard))!;
    const keep = ids.map(() => rand() < 0.5);
    const kept = keep.filter(Boolean).length;
    const header: ManifestHeader = {
      kind: MANIFEST_KIND,
      version: MANIFEST_VERSION,
      createdAt: new Date().toISOString(),
      model: { uri: "bench", sha256: "0".repeat(64), format: "bench", maxLength: 1 },
      input: {
        uri: shard,
        etag: kind === "plain-sha256" ? null : info.etag,
        sha256: createHash("sha256").update(bytes).digest("hex"),
        size: bytes.length,
      },
      fields: { id: "id", text: "text" },
      onInvalid: "fail",
      policy: { kind: "threshold", threshold: 0.5 },
      threshold: 0.5,
      counts: { records: ids.length, kept, dropped: ids.length - kept, skippedInvalid: 0 },
      invalid: [],
      scores: { min: 0, max: 1, mean: 0.5, deciles: null, sampleSize: 0 },
    };
    const lines = [JSON.stringify(header)];
    ids.forEach((id, i) =>
      lines.push(JSON.stringify({ id, line: i + 1, score: keep[i] ? 0.75 : 0.25, keep: keep[i] }))
    );
    await storage.write(`${root}/${name}/m/part-${s}.manifest.jsonl`, lines.join("\n") + "\n");
  }
}

async function copyAll(name: string): Promise<{ bytes: number; seconds: number }> {
  const t0 = performance.now();
  let bytes = 0;
  for await (const o of storage.list(`${root}/${name}/shards/`)) {
    const dst = o.uri.replace("/shards/", "/copy/");
    await storage.write(dst, await storage.read(o.uri), {
      ifNoneMatch: "*",
      contentLength: o.size,
    });
    bytes += o.size;
  }
  return { bytes, seconds: (performance.now() - t0) / 1000 };
}

/** The decompress + recompress reference: every record inflated and deflated again. */
async function recompressAll(name: string): Promise<{ bytes: number; seconds: number }> {
  const t0 = performance.now();
  let bytes = 0;
  for await (const o of storage.list(`${root}/${name}/shards/`)) {
    const dst = o.uri.replace("/shards/", "/recompressed/");
    const body = zlibStream(
      gunzipStream(await storage.read(o.uri)),
      createGzip({ level: DEFAULT_GZIP_LEVEL, chunkSize: 1 << 20 }),
    );
    if (root.startsWith("s3:")) {
      // S3 needs the length up front: held in memory (bench shards are small; materialisation
      // spools to a local file, which this reference is spared).
      const bytes = new Uint8Array(await new Response(body).arrayBuffer());
      await storage.write(dst, bytes, { ifNoneMatch: "*" });
    } else {
      await storage.write(dst, body, { ifNoneMatch: "*" });
    }
    bytes += o.size;
  }
  return { bytes, seconds: (performance.now() - t0) / 1000 };
}

/**
 * What any join of a JSON Lines shard with its manifest must do besides copying, timed alone on
 * the same shards (best of `rounds`): read the shard's bytes into JavaScript, find every line end,
 * hash every byte (when no ETag vouches for them) and parse every manifest entry. Beside the
 * copy's time, it says how close a join written in JavaScript can come to the copy at all.
 */
async function partsOf(store: string, name: string, copySeconds: number) {
  const best: Record<string, number> = {};
  const time = async (key: string, f: () => unknown) => {
    const t0 = performance.now();
    await f();
    best[key] = Math.min(best[key] ?? Infinity, performance.now() - t0);
  };
  const shards = await Array.fromAsync(storage.list(`${root}/${name}/shards/`));
  const manifests = await Array.fromAsync(storage.list(`${root}/${name}/m/`));
  let entries = 0;
  for (let round = 1; round <= rounds; round++) {
    // Read as materialisation reads: into one recycled 1 MiB buffer where the stream allows it.
    await time("readMs", async () => {
      let buffer = new Uint8Array(1 << 20);
      for (const o of shards) {
        const body = await storage.read(o.uri);
        let byob: ReadableStreamBYOBReader | null = null;
        try {
          byob = body.getReader({ mode: "byob" });
        } catch {
          for await (const _ of body) { /* S3: the stream's own chunks */ }
          continue;
        }
        for (;;) {
          const { value, done } = await byob.read(new Uint8Array(buffer.buffer));
          if (value) buffer = new Uint8Array(value.buffer);
          if (done) break;
        }
      }
    });
    const chunks: Uint8Array[] = [];
    for (const o of shards) for await (const c of await storage.read(o.uri)) chunks.push(c);
    await time("newlineScanMs", () => {
      let lines = 0;
      for (const c of chunks) {
        for (let i = c.indexOf(0x0a); i >= 0; i = c.indexOf(0x0a, i + 1)) lines++;
      }
      return lines;
    });
    await time("sha256Ms", () => {
      const h = createHash("sha256");
      for (const c of chunks) h.update(c);
      return h.digest("hex");
    });
    await time("manifestMs", async () => {
      entries = 0;
      for (const o of manifests) {
        for await (const b of (await readManifestBlocks(storage, o.uri)).blocks) {
          entries += b.length;
        }
      }
    });
  }
  const round1 = (x: number) => Math.round(x * 10) / 10;
  console.log(JSON.stringify({
    bench: "materialize-parts",
    store,
    case: name,
    copyMs: round1(copySeconds * 1000),
    ...Object.fromEntries(Object.entries(best).map(([k, v]) => [k, round1(v)])),
    manifestEntries: entries,
  }));
}

async function runStore(store: string) {
  for (const kind of ["plain", "plain-sha256", "gzip"] as const) {
    await writeCase(kind, kind);
    // Rounds alternate the order (copy then materialise, then the other way round) and the best
    // of each counts: the page cache's and the JIT's warm-up stay out of the comparison (a real
    // run materialises many shards in one process).
    type Timed = { bytes: number; seconds: number };
    const copies: Timed[] = [];
    const mats: (Timed & { kept: number })[] = [];
    // Both outputs are removed before every round, so the copy and materialisation write into
    // the same state of the page cache (a write into pages just freed runs several times faster
    // here than one into fresh pages; the copy's output was cleared and materialisation's was not,
    // until 2026-12-01).
    const clearOutputs = async () => {
      for (const out of ["copy", "out"]) {
        for await (const o of storage.list(`${root}/${kind}/${out}/`)) await storage.delete(o.uri);
      }
    };
    const materializeOnce = async () => {
      const r = await materialize(storage, {
        manifests: `${root}/${kind}/m/`,
        output: `${root}/${kind}/out/`,
        concurrency: 1,
      });
      mats.push({ bytes: r.bytesRead, seconds: r.seconds, kept: r.kept });
    };
    for (let round = 1; round <= rounds; round++) {
      await clearOutputs();
      if (round % 2) {
        copies.push(await copyAll(kind));
        await materializeOnce();
      } else {
        await materializeOnce();
        copies.push(await copyAll(kind));
      }
    }
    const rate = (x: { bytes: number; seconds: number }) => x.bytes / 1e6 / x.seconds;
    const round1 = (x: number) => Math.round(x * 10) / 10;
    const round2 = (x: number) => Math.round(x * 100) / 100;
    const copyMBps = Math.max(...copies.map(rate));
    const materializeMBps = Math.max(...mats.map(rate));
    const gzipFigures: Record<string, number> = {};
    if (kind === "gzip") {
      // As many rounds as the copy and materialisation had, the best counting.
      let recompressMBps = 0;
      for (let round = 1; round <= rounds; round++) {
        for await (const o of storage.list(`${root}/${kind}/recompressed/`)) {
          await storage.delete(o.uri);
        }
        recompressMBps = Math.max(recompressMBps, rate(await recompressAll(kind)));
      }
      const r = await materialize(storage, {
        manifests: `${root}/${kind}/m/`,
        output: `${root}/${kind}/out-parallel/`,
        concurrency: 2,
      });
      const materializeMBps2 = r.bytesRead / 1e6 / r.seconds;
      Object.assign(gzipFigures, {
        recompressMBps: round1(recompressMBps),
        ratioRecompress: round2(materializeMBps / recompressMBps),
        materializeMBps2: round1(materializeMBps2),
        ratio2: round2(materializeMBps2 / copyMBps),
        ratio2Recompress: round2(materializeMBps2 / recompressMBps),
      });
    }
    if (kind === "plain") await partsOf(store, kind, Math.min(...copies.map((c) => c.seconds)));
    console.log(JSON.stringify({
      bench: "materialize",
      store,
      case: kind,
      shards: shardCount,
      rounds,
      inputMB: Math.round(copies[0].bytes / 1e5) / 10,
      keptRecords: mats[0].kept,
      materializeMBps: Math.round(materializeMBps * 10) / 10,
      copyMBps: Math.round(copyMBps * 10) / 10,
      ratio: Math.round((materializeMBps / copyMBps) * 100) / 100,
      ...gzipFigures,
    }));
  }
}

const stores = values.store.split(",");
try {
  if (stores.includes("file")) await runStore("file");
  if (stores.includes("s3")) {
    const s3 = await startS3Server({ dir: `${dir}/s3`, buckets: ["bench"] });
    try {
      storage = createStorage({ s3: s3.settings });
      root = "s3://bench";
      await runStore("s3");
    } finally {
      await s3.stop();
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
