import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import {
  brownParagraphs,
  buildCorpus,
  type Corpus,
  CorpusSizeError,
  CORRUPTIONS,
  DEFAULT_CORPUS_OPTIONS,
  detokenizeBrown,
  type Email,
  loadBrown,
  loadSpamAssassin,
  prepareCorpus,
  type ProseParagraph,
} from "../../corpus/prepare.ts";
import { Rng } from "../../training/rng.ts";
import { readRecords } from "../../lib/records.ts";
import { FileStorage } from "../../lib/storage.ts";

const storage = new FileStorage();

let brown: ProseParagraph[];
let emails: Email[];
let corpus: Corpus;
const options = { ...DEFAULT_CORPUS_OPTIONS, size: 1200, seed: 7 };

beforeAll(() => {
  brown = loadBrown();
  emails = loadSpamAssassin();
  corpus = buildCorpus(brown, emails, options);
});

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

  it("never uses a paragraph both as a clean record and as a corrupted one", () => {
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
    expect(buildCorpus(brown, emails, options)).toEqual(corpus);
    const other = buildCorpus(brown, emails, { ...options, seed: 8 });
    expect(other.train.map((r) => r.id)).not.toEqual(corpus.train.map((r) => r.id));
  });

  it("refuses a size the packages cannot supply, naming a size that works", () => {
    expect(() => buildCorpus(brown, emails, { ...options, size: 30000 })).toThrow(CorpusSizeError);
    expect(() => buildCorpus(brown, emails, { ...options, size: 30000 })).toThrow(
      /use --size ≤ \d+/,
    );
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
    expect((await prepareCorpus(storage, join(dir, "a"), opts)).reused).toBe(true);
    await expect(prepareCorpus(storage, join(dir, "a"), { ...opts, seed: 99 })).rejects.toThrow(
      /different options/,
    );
  });
});
