import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import {
  brownDocuments,
  brownParagraphs,
  buildCorpus,
  type Corpus,
  corpusDocuments,
  type CorpusRecord,
  CorpusSizeError,
  CORRUPTIONS,
  DAMAGE,
  DEFAULT_CORPUS_OPTIONS,
  detokenizeBrown,
  DOCUMENT_BYTES,
  type Email,
  type ForeignText,
  loadBrown,
  loadSpamAssassin,
  loadUdhr,
  prepareCorpus,
  type ProseDocument,
  type ProseParagraph,
  UNSEEN_JUNK,
} from "../../corpus/prepare.ts";
import { Rng } from "../../training/rng.ts";
import { readRecords } from "../../lib/records.ts";
import { FileStorage } from "../../lib/storage.ts";

const storage = new FileStorage();

let brown: ProseParagraph[];
let emails: Email[];
let udhr: ForeignText[];
let corpus: Corpus;
let documents: Map<string, ProseDocument>;
const options = { ...DEFAULT_CORPUS_OPTIONS, size: 1200, seed: 7 };

beforeAll(() => {
  brown = loadBrown();
  emails = loadSpamAssassin();
  udhr = loadUdhr();
  corpus = buildCorpus(brown, emails, options, udhr);
  documents = new Map(
    corpusDocuments(brown, options.seed).map((d) => [
      `brown-${d.doc}-${String(d.index).padStart(3, "0")}`,
      d,
    ]),
  );
});

const bytes = (text: string) => new TextEncoder().encode(text);

const splits = () => ({ train: corpus.train, heldout: corpus.heldout, test: corpus.test });

describe("Brown detokenisation", () => {
  it("strips POS tags and restores English spacing and quotes", () => {
    const tagged =
      "The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc Atlanta's/np$ mayor/nn (/( Allen/np )/) won't/md* call/vb you/ppo '/' General/nn-tl '/' ./.";
    expect(detokenizeBrown(tagged)).toBe(
      `The jury said "no evidence", and Atlanta's mayor (Allen) won't call you 'General'.`,
    );
  });

  it("merges paragraphs shorter than the minimum into the next and splits long ones between sentences", () => {
    const sentence = (n: number) => Array.from({ length: n }, () => "word/nn").join(" ") + " ./.";
    const file = `\n\n\tShort/jj ./.\n\n\n\t${sentence(30)}\n${sentence(30)}\n\n\n\t${
      sentence(100)
    }\n${sentence(100)}\n`;
    const paras = brownParagraphs("cx01", file, 150, 600);
    expect(paras.map((p) => p.text.length)).toEqual([6 + 1 + 30 * 5 + 1 + 30 * 5, 500, 500]);
    expect(paras[0].text.startsWith("Short. word word")).toBe(true);
  });

  it("leaves no POS tag in any prose record of the corpus", () => {
    const prose = [...corpus.train, ...corpus.testClean, ...corpus.cleanOnlyTrain].filter((r) =>
      r.source === "prose"
    );
    expect(prose.length).toBeGreaterThan(400);
    for (const r of prose) {
      expect(r.text).not.toMatch(/[A-Za-z,.]\/(at|nn|nns|vb|vbd|in|jj|np|cc|rb)\b/);
    }
  });
});

describe("composition and splits", () => {
  it("gives every split a third clean prose, a third email, a third corrupted prose", () => {
    for (const [name, records] of Object.entries(splits())) {
      const n = records.length;
      const count = (f: (s: string) => boolean) => records.filter((r) => f(r.source)).length;
      expect(Math.abs(count((s) => s === "prose") - n / 3), name).toBeLessThanOrEqual(1);
      expect(Math.abs(count((s) => s.startsWith("email/")) - n / 3), name).toBeLessThanOrEqual(1);
      expect(Math.abs(count((s) => s.startsWith("corrupt/")) - n / 3), name).toBeLessThanOrEqual(1);
    }
    expect(corpus.train.length + corpus.heldout.length + corpus.test.length).toBe(1200);
    expect(corpus.test.length).toBe(120);
    expect(corpus.heldout.length).toBe(120);
  });

  it("uses every corruption kind and records its kind and level", () => {
    const corrupt = corpus.train.filter((r) => r.source.startsWith("corrupt/"));
    expect(new Set(corrupt.map((r) => r.kind))).toEqual(new Set(CORRUPTIONS.map((c) => c.kind)));
    for (const r of corrupt) {
      const c = CORRUPTIONS.find((k) => k.kind === r.kind)!;
      expect(r.source).toBe(`corrupt/${r.kind}`);
      expect(c.levels).toContain(r.noise);
    }
  });

  it("keeps ids, emails and Brown documents disjoint across train, heldout and test", () => {
    const s = splits();
    const ids = Object.values(s).flatMap((records) => records.map((r) => r.id));
    expect(new Set(ids).size).toBe(ids.length);
    const docsOf = (records: typeof corpus.train) =>
      new Set(records.filter((r) => !r.source.startsWith("email/")).map((r) => r.origin));
    const [tr, he, te] = [docsOf(s.train), docsOf(s.heldout), docsOf(s.test)];
    for (const d of te) expect(tr.has(d) || he.has(d)).toBe(false);
    for (const d of he) expect(tr.has(d)).toBe(false);
    // test-clean and clean-only come from their split's own documents.
    for (const r of corpus.testClean) expect(tr.has(r.origin) || he.has(r.origin)).toBe(false);
    for (const r of corpus.cleanOnlyTrain) expect(te.has(r.origin) || he.has(r.origin)).toBe(false);
    for (const r of corpus.cleanOnlyHeldout) {
      expect(te.has(r.origin) || tr.has(r.origin)).toBe(false);
    }
  });

  it("never uses a document both as a clean record and as a corrupted one", () => {
    const all = Object.values(splits()).flat();
    const clean = new Set(all.filter((r) => r.source === "prose").map((r) => r.id));
    for (const r of all.filter((r) => r.source.startsWith("corrupt/"))) {
      expect(clean.has(r.id.split("~")[0])).toBe(false);
    }
  });

  it("makes test-clean and the clean-only corpus prose only", () => {
    for (const r of [...corpus.testClean, ...corpus.cleanOnlyTrain, ...corpus.cleanOnlyHeldout]) {
      expect(r.source).toBe("prose");
    }
    expect(corpus.testClean.length).toBe(120);
    expect(corpus.cleanOnlyTrain.length).toBe(960);
  });

  it("is deterministic for a seed and differs between seeds", () => {
    expect(buildCorpus(brown, emails, options, udhr)).toEqual(corpus);
    const other = buildCorpus(brown, emails, { ...options, seed: 8 }, udhr);
    expect(other.train.map((r) => r.id)).not.toEqual(corpus.train.map((r) => r.id));
    expect(other.unseen.map((r) => r.text)).not.toEqual(corpus.unseen.map((r) => r.text));
  });

  it("refuses a size the packages cannot supply, naming a size that works", () => {
    expect(() => buildCorpus(brown, emails, { ...options, size: 30000 }, udhr)).toThrow(
      CorpusSizeError,
    );
    expect(() => buildCorpus(brown, emails, { ...options, size: 30000 }, udhr)).toThrow(
      /use --size ≤ \d+/,
    );
  });
});

describe("documents", () => {
  it("cuts each Brown file into consecutive paragraphs joined with blank lines, within the size bounds", () => {
    const docs = corpusDocuments(brown, options.seed);
    const paragraphsOf = new Map<string, string[]>();
    for (const p of brown) paragraphsOf.set(p.doc, [...(paragraphsOf.get(p.doc) ?? []), p.text]);
    const next = new Map<string, number>();
    for (const d of docs) {
      const n = bytes(d.text).length;
      expect(n).toBeGreaterThanOrEqual(DOCUMENT_BYTES.min);
      expect(n).toBeLessThanOrEqual(DOCUMENT_BYTES.max);
      const parts = d.text.split("\n\n");
      expect(parts.length).toBe(d.paragraphs);
      // The file's paragraphs in order, from where its previous document stopped.
      const from = next.get(d.doc) ?? 0;
      expect(paragraphsOf.get(d.doc)!.slice(from, from + parts.length)).toEqual(parts);
      next.set(d.doc, from + parts.length);
    }
    expect(docs.filter((d) => d.paragraphs >= 2).length / docs.length).toBeGreaterThan(0.97);
    // Targets are uniform in [1 KiB, 6 KiB]: the sizes spread over the whole range.
    const sizes = docs.map((d) => bytes(d.text).length).sort((a, b) => a - b);
    expect(sizes[Math.floor(sizes.length * 0.1)]).toBeLessThan(2000);
    expect(sizes[Math.floor(sizes.length * 0.5)]).toBeGreaterThan(2800);
    expect(sizes[Math.floor(sizes.length * 0.5)]).toBeLessThan(4000);
    expect(sizes[Math.floor(sizes.length * 0.9)]).toBeGreaterThan(5000);
  });

  it("joins a file's short remainder to its previous document, or leaves it out past the maximum", () => {
    const para = (doc: string, index: number, n: number) => ({
      doc,
      index,
      text: "x".repeat(n),
    });
    // Targets from this seed are above 300 bytes, so each document takes paragraphs until it
    // passes its target; the 100-byte remainder then joins (or, past the maximum, is dropped).
    const joined = brownDocuments(
      [para("f", 0, 400), para("f", 1, 400), para("f", 2, 100)],
      new Rng(1),
      { min: 300, max: 1000 },
    );
    expect(joined.map((d) => d.text.length)).toEqual([400 + 2 + 400 + 2 + 100]);
    const dropped = brownDocuments(
      [para("g", 0, 900), para("g", 1, 100)],
      new Rng(1),
      { min: 300, max: 950 },
    );
    expect(dropped.map((d) => d.text)).toEqual(["x".repeat(900)]);
  });

  it("makes every prose record a whole document and keeps emails whole up to the cap", () => {
    expect(DEFAULT_CORPUS_OPTIONS.maxRecordChars).toBe(16384);
    const all = [...Object.values(splits()).flat(), ...corpus.testClean, ...corpus.cleanOnlyTrain];
    for (const r of all.filter((r) => r.source === "prose")) {
      expect(r.text).toBe(documents.get(r.id)!.text);
    }
    const byId = new Map(emails.map((e) => [`sa-${e.group}-${e.id}`, e.text]));
    const mail = Object.values(splits()).flat().filter((r) => r.source.startsWith("email/"));
    for (const r of mail) {
      const original = byId.get(r.id)!;
      if (original.length <= options.maxRecordChars) {
        expect(r.text).toBe(original);
        expect(r.truncated).toBeUndefined();
      } else {
        expect(r.text).toBe(original.slice(0, options.maxRecordChars));
        expect(r.truncated).toBe(true);
      }
    }
    expect(mail.some((r) => r.text.length > 8192)).toBe(true);
  });

  it("refuses a size whose prose Brown cannot supply without reusing documents, naming one that works", () => {
    const big = { ...options, size: 2600 };
    expect(() => buildCorpus(brown, emails, big, udhr)).toThrow(CorpusSizeError);
    let message = "";
    try {
      buildCorpus(brown, emails, big, udhr);
    } catch (error) {
      message = (error as Error).message;
    }
    const fits = Number(message.match(/use --size ≤ (\d+)/)![1]);
    expect(fits).toBeGreaterThan(1800);
    expect(() => buildCorpus(brown, emails, { ...big, size: fits }, udhr)).not.toThrow();
  });

  it("counts the Brown documents it uses and never puts one in the mixture twice", () => {
    const s = corpus.brown;
    expect(s.documents).toBe(documents.size);
    expect(s.usedDocuments).toBeLessThanOrEqual(s.documents);
    expect(s.usedBytes).toBeLessThanOrEqual(s.documentBytes);
    // Mixture records never share a document (prose, damaged originals), across all splits.
    const mixtureDocs = Object.values(splits()).flat().filter((r) => r.id.startsWith("brown-"))
      .map((r) => r.id.split("~")[0]);
    expect(new Set(mixtureDocs).size).toBe(mixtureDocs.length);
  });
});

/** The original document of a damaged or unseen record and the byte-level comparison with it. */
function compareWithOriginal(r: CorpusRecord) {
  const original = bytes(documents.get(r.id.split("~")[0])!.text);
  const text = bytes(r.text);
  const { start, end } = r.damage!;
  const originalEnd = original.length - (text.length - end);
  return {
    original,
    text,
    start,
    end,
    originalEnd,
    prefixEqual: text.subarray(0, start).every((b, i) => b === original[i]),
    suffixEqual: text.subarray(end).every((b, i) => b === original[originalEnd + i]),
  };
}

describe("damaged documents", () => {
  const damaged = () =>
    Object.values(splits()).flat().filter((r) => r.source.startsWith("corrupt/"));

  it("records byte-exact damage: outside [start, end) the bytes are the original's, inside they differ", () => {
    expect(damaged().length).toBe(400);
    for (const r of damaged()) {
      const c = compareWithOriginal(r);
      expect(c.start).toBeGreaterThanOrEqual(0);
      expect(c.end).toBeLessThanOrEqual(c.text.length);
      expect(c.originalEnd).toBeGreaterThan(c.start);
      expect(c.prefixEqual, r.id).toBe(true);
      expect(c.suffixEqual, r.id).toBe(true);
      expect(c.text.subarray(c.start, c.end), r.id).not.toEqual(
        c.original.subarray(c.start, c.originalEnd),
      );
      // The damaged part is 10–50% of the original document.
      const share = (c.originalEnd - c.start) / c.original.length;
      expect(share, r.id).toBeGreaterThanOrEqual(DAMAGE.fraction[0]);
      expect(share, r.id).toBeLessThanOrEqual(DAMAGE.fraction[1]);
    }
  });

  it("damages a third of each split's damaged documents at the head and two thirds in the body", () => {
    for (const [name, records] of Object.entries(splits())) {
      const d = records.filter((r) => r.source.startsWith("corrupt/"));
      const heads = d.filter((r) => r.position === "head");
      expect(heads.length, name).toBe(Math.round(d.length / 3));
      for (const r of heads) expect(r.damage!.start).toBe(0);
      for (const r of d.filter((r) => r.position === "body")) {
        const c = compareWithOriginal(r);
        expect(c.start / c.original.length, r.id).toBeGreaterThanOrEqual(DAMAGE.bodyStart);
      }
    }
    // Half the body damage runs to the end (tail), half has clean text after it (middle).
    for (const [name, records] of Object.entries(splits())) {
      const body = records.filter((r) => r.position === "body");
      const tail = body.filter((r) => r.damage!.end === bytes(r.text).length).length;
      expect(tail, name).toBe(Math.round(body.length / 2));
    }
  });
});

describe("unseen junk", () => {
  const junk = () => corpus.unseen.filter((r) => r.source.startsWith("unseen/"));
  const perKind = Math.round(options.size / 100);

  it("uses kinds that no corruption has and that train, heldout and test never contain", () => {
    const kinds = UNSEEN_JUNK.map((k) => k.kind);
    for (const k of kinds) expect(CORRUPTIONS.map((c) => c.kind)).not.toContain(k);
    for (const r of Object.values(splits()).flat()) {
      expect(r.source.startsWith("unseen/")).toBe(false);
      expect(kinds).not.toContain(r.kind);
    }
    const training = [...corpus.train, ...corpus.heldout].map((r) => r.text).join("\u0000");
    for (const r of junk()) {
      const block = new TextDecoder().decode(bytes(r.text).subarray(r.damage!.start, r.damage!.end))
        .trim();
      expect(training.includes(block), r.id).toBe(false);
      for (const line of block.split("\n").filter((l) => l.length > 40)) {
        expect(training.includes(line), r.id).toBe(false);
      }
    }
  });

  it("inserts each kind's block into test documents held by no other dataset, beside the untouched originals", () => {
    expect(junk().length).toBe(perKind * UNSEEN_JUNK.length);
    const controls = corpus.unseen.filter((r) => r.source === "prose");
    expect(controls.length).toBe(junk().length);
    const elsewhere = new Set(
      [
        ...Object.values(splits()).flat(),
        ...corpus.testClean,
        ...corpus.cleanOnlyTrain,
        ...corpus.cleanOnlyHeldout,
      ].map((r) => r.id.split("~")[0]),
    );
    // Test documents: from Brown files that no training, heldout or clean-only record comes from.
    const trainingFiles = new Set(
      [...corpus.train, ...corpus.heldout, ...corpus.cleanOnlyTrain, ...corpus.cleanOnlyHeldout]
        .map((r) => r.origin),
    );
    for (const r of controls) {
      expect(elsewhere.has(r.id)).toBe(false);
      expect(trainingFiles.has(r.origin)).toBe(false);
      expect(r.text).toBe(documents.get(r.id)!.text);
    }
    const controlIds = new Set(controls.map((r) => r.id));
    for (const kind of UNSEEN_JUNK) {
      const records = junk().filter((r) => r.kind === kind.kind);
      expect(records.length, kind.kind).toBe(perKind);
      const heads = Math.round(perKind / 3);
      expect(records.filter((r) => r.position === "head").length).toBe(heads);
      for (const r of records) {
        expect(r.source).toBe(`unseen/${kind.kind}`);
        expect(controlIds.has(r.id.split("~")[0])).toBe(true);
      }
    }
  });

  it("records the inserted bytes exactly: removing [start, end) gives back the document", () => {
    const udhrParagraphs = new Set(udhr.flatMap((u) => u.paragraphs));
    for (const r of junk()) {
      const c = compareWithOriginal(r);
      expect(c.originalEnd, r.id).toBe(c.start);
      expect(c.prefixEqual && c.suffixEqual, r.id).toBe(true);
      expect(r.position, r.id).toBe(c.start === 0 ? "head" : "body");
      if (r.position === "body") {
        expect(c.start / c.original.length).toBeGreaterThanOrEqual(DAMAGE.bodyStart);
      }
      const block = new TextDecoder().decode(c.text.subarray(c.start, c.end));
      expect(block.startsWith("\n\n") || block.endsWith("\n\n"), r.id).toBe(true);
      const inner = block.replace(/^\n\n|\n\n$/g, "");
      if (r.kind === "number-table") {
        for (const line of inner.split("\n")) expect(line).toMatch(/^(?: *[-+.\de]+)+$/);
      } else if (r.kind === "non-english") {
        for (const p of inner.split("\n\n")) expect(udhrParagraphs.has(p), r.id).toBe(true);
      } else if (r.kind === "private-key") {
        expect(inner).toMatch(
          /^-----BEGIN (RSA )?PRIVATE KEY-----\nMII[A-Za-z0-9+/]{61}\n(?:[A-Za-z0-9+/=]{1,64}\n)+-----END (RSA )?PRIVATE KEY-----$/,
        );
      } else {
        for (const line of inner.split("\n")) {
          expect(line).toMatch(/^[0-9a-f]{8}: (?:[0-9a-f]{4} ){7}[0-9a-f]{4} {2}[\x20-\x7e]{16}$/);
        }
      }
    }
  });
});

describe("corruptions", () => {
  const text =
    `The jury said "it was well operated" -- and the mayor's office agreed, Olive noted.`;

  it("each kind changes the text and is a deterministic function of the seed", () => {
    for (const c of CORRUPTIONS) {
      const level = c.levels[c.levels.length - 1];
      const a = c.apply(text, new Rng(3), level);
      expect(a, c.kind).not.toBe(text);
      expect(c.apply(text, new Rng(3), level), c.kind).toBe(a);
    }
  });

  it("byte noise grows with its level and leaves the text intact at level 0", () => {
    const noise = CORRUPTIONS.find((c) => c.kind === "byte-noise")!;
    const long = text.repeat(20);
    const changed = (level: number) => {
      const out = noise.apply(long, new Rng(1), level);
      let diff = 0;
      for (let i = 0; i < Math.min(out.length, long.length); i++) if (out[i] !== long[i]) diff++;
      return diff;
    };
    expect(noise.apply(long, new Rng(1), 0)).toBe(long);
    expect(changed(0.02)).toBeLessThan(changed(0.1));
    expect(changed(0.1)).toBeLessThan(changed(0.4));
  });

  it("mojibake shows the Windows-1252 reading of UTF-8 punctuation", () => {
    const moji = CORRUPTIONS.find((c) => c.kind === "mojibake")!;
    expect(moji.apply(text, new Rng(0), 0)).toContain("mayorâ€™s");
    expect(moji.apply(text, new Rng(0), 0)).toContain("â€œit");
  });

  it("base64 blobs are 76-character base64 lines", () => {
    const blob = CORRUPTIONS.find((c) => c.kind === "base64-blob")!.apply(
      text.repeat(5),
      new Rng(0),
      1,
    );
    for (const line of blob.split("\n")) expect(line).toMatch(/^[A-Za-z0-9+/=]{1,76}$/);
  });
});

describe("prepareCorpus (written shards)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await Deno.makeTempDir();
  });
  afterAll(async () => {
    await Deno.remove(dir, { recursive: true });
  });

  it("writes gzip JSON Lines shards byte-identically for the same seed, and reuses a finished corpus", async () => {
    const opts = { ...options, size: 300, shardSize: 40 };
    const a = await prepareCorpus(storage, join(dir, "a"), opts);
    const b = await prepareCorpus(storage, join(dir, "b"), opts);
    expect(a.reused).toBe(false);
    expect(a.datasets.train.shards).toBe(Math.ceil(a.datasets.train.records / 40));
    for (
      const name of [
        "train/shard-00000.jsonl.gz",
        "train/shard-00005.jsonl.gz",
        "test-clean/shard-00000.jsonl.gz",
      ]
    ) {
      expect(await Deno.readFile(join(dir, "a", name))).toEqual(
        await Deno.readFile(join(dir, "b", name)),
      );
    }
    const withoutUris = (s: typeof a) =>
      JSON.stringify(s.datasets, (k, v) => (k === "uri" ? undefined : v));
    expect(withoutUris(a)).toBe(withoutUris(b));
    const first: Record<string, unknown>[] = [];
    for await (const r of readRecords(storage, join(dir, "a", "train", "shard-00000.jsonl.gz"))) {
      first.push(r.record);
    }
    expect(first.length).toBe(40);
    expect(Object.keys(first[0]).sort()).toEqual(
      expect.arrayContaining(["id", "kind", "noise", "origin", "source", "text"]),
    );
    // corpus.json: the resolved options, the document and damage parameters, Brown's use.
    expect(a.version).toBe(2);
    expect(a.options.unseenPerKind).toBe(3);
    expect(a.datasets.unseen.records).toBe(2 * 3 * UNSEEN_JUNK.length);
    expect(a.datasets.unseen.shards).toBe(1);
    expect(a.documents).toMatchObject({ minBytes: 1024, maxBytes: 6144 });
    expect(a.documents.usedDocuments).toBeGreaterThan(200);
    expect(a.damage).toEqual(DAMAGE);
    expect(a.unseen.kinds.map((k) => k.kind)).toEqual(UNSEEN_JUNK.map((k) => k.kind));
    expect(a.datasets.train.sizes.prose.min).toBeGreaterThanOrEqual(1024);
    expect(a.datasets.train.sizes.prose.max).toBeLessThanOrEqual(6144);
    expect(Object.keys(a.datasets.train.sizes)).toEqual([
      "corrupt",
      "email/ham",
      "email/spam",
      "prose",
    ]);
    expect((await prepareCorpus(storage, join(dir, "a"), opts)).reused).toBe(true);
    await expect(prepareCorpus(storage, join(dir, "a"), { ...opts, seed: 99 })).rejects.toThrow(
      /different options/,
    );
  });
});
