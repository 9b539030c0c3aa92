/**
 * Heuristic quality filtering in the style of C4 (Raffel et al. 2020, "Exploring the limits of
 * transfer learning", §2.2) and Gopher/MassiveText (Rae et al. 2021, "Scaling language models",
 * appendix A.1.1): the baseline the DataRater is compared against.
 *
 * C4's rules are line rules first (lines that fail are removed from the record's text) and then
 * document rules (the record is dropped). Gopher's rules are document rules. The constants are the
 * papers'. They were written for web pages, and our records are paragraphs and emails: the length
 * rules (C4 ≥ 3 sentences, Gopher ≥ 50 words) therefore also drop short clean paragraphs, which the
 * report's per-source keep rates show. Not implemented: C4's bad-words list (no list ships here)
 * and its three-sentence-span deduplication (a corpus-level step, not a per-record rule).
 *
 * @example
 * ```ts
 * const r = heuristicFilter("Some text.\nmore");
 * if (r.keep) train(r.text); else console.log(r.reason);
 * ```
 */

/** The outcome for one record: the cleaned text when kept, the first failed rule when dropped. */
export type HeuristicResult = { keep: true; text: string } | { keep: false; reason: string };

// ---------------------------------------------------------------------------------------------
// C4 (as in TensorFlow Datasets' c4_utils: clean_page)

/** C4: a line must end in terminal punctuation (a closing quote counts). */
const C4_TERMINAL = /[.!?"]$/;
/** C4: lines with fewer words are removed. */
export const C4_MIN_WORDS_PER_LINE = 3;
/** C4: pages with fewer sentences (after line cleaning) are dropped. */
export const C4_MIN_SENTENCES = 3;
/** C4: lines containing a word longer than this are removed. */
export const C4_MAX_WORD_LENGTH = 1000;
/** C4: lines mentioning cookie/privacy boilerplate are removed. */
const C4_POLICY = [
  "terms of use",
  "privacy policy",
  "cookie policy",
  "uses cookies",
  "use of cookies",
  "use cookies",
];

/**
 * C4's rules. Line rules: keep lines with ≥ 3 words, ending in terminal punctuation, no word over
 * 1000 characters, not mentioning "javascript" or cookie/privacy policies; citation markers like
 * "[1]" are removed. Document rules: drop if "lorem ipsum" or a curly bracket appears, or if fewer
 * than 3 sentences remain.
 */
export function c4Filter(text: string): HeuristicResult {
  const lower = text.toLowerCase();
  if (lower.includes("lorem ipsum")) return { keep: false, reason: "c4: lorem ipsum" };
  if (text.includes("{")) return { keep: false, reason: "c4: curly bracket" };
  const kept: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\[\d+\]/g, "").trim();
    const words = line.split(/\s+/).filter(Boolean);
    if (words.length < C4_MIN_WORDS_PER_LINE) continue;
    if (!C4_TERMINAL.test(line)) continue;
    if (words.some((w) => w.length > C4_MAX_WORD_LENGTH)) continue;
    const l = line.toLowerCase();
    if (l.includes("javascript")) continue;
    if (C4_POLICY.some((p) => l.includes(p))) continue;
    kept.push(line);
  }
  const cleaned = kept.join("\n");
  if (countSentences(cleaned) < C4_MIN_SENTENCES) {
    return { keep: false, reason: "c4: fewer than 3 sentences" };
  }
  return { keep: true, text: cleaned };
}

/** Sentences: runs of text ending in . ! or ? followed by whitespace or the end. */
export function countSentences(text: string): number {
  return (text.match(/[^.!?]*[A-Za-z][^.!?]*[.!?]+(?=["')\]]*(\s|$))/g) ?? []).length;
}

// ---------------------------------------------------------------------------------------------
// Gopher (MassiveText quality filters)

/** Gopher's stop words: a document must contain at least two of them. */
const GOPHER_STOP_WORDS = new Set(["the", "be", "to", "of", "and", "that", "have", "with"]);

/** Gopher's thresholds (Rae et al. 2021, A.1.1), named as in the paper. */
export const GOPHER = {
  minWords: 50,
  maxWords: 100_000,
  minMeanWordLength: 3,
  maxMeanWordLength: 10,
  maxSymbolToWordRatio: 0.1,
  maxBulletLineFraction: 0.9,
  maxEllipsisLineFraction: 0.3,
  minAlphaWordFraction: 0.8,
  minStopWords: 2,
  maxDuplicateLineFraction: 0.3,
  maxDuplicateParagraphFraction: 0.3,
  maxDuplicateLineCharFraction: 0.2,
  maxDuplicateParagraphCharFraction: 0.2,
  /** Most frequent n-gram's character share, n = 2, 3, 4. */
  maxTopNgramCharFraction: { 2: 0.2, 3: 0.18, 4: 0.16 } as Record<number, number>,
  /** Characters in duplicated n-grams, n = 5…10. */
  maxDuplicateNgramCharFraction: { 5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.1 } as Record<
    number,
    number
  >,
} as const;

/**
 * Gopher's quality and repetition rules: word count in [50, 100000]; mean word length in [3, 10];
 * '#' and '...' together at most 0.1 per word; at most 90% of lines starting with a bullet and 30%
 * ending with an ellipsis; at least 80% of words with a letter; at least two stop words; and the
 * repetition limits on duplicate lines/paragraphs and on frequent or duplicated n-grams.
 */
export function gopherFilter(text: string): HeuristicResult {
  const words = text.split(/\s+/).filter(Boolean);
  const n = words.length;
  if (n < GOPHER.minWords) return { keep: false, reason: "gopher: fewer than 50 words" };
  if (n > GOPHER.maxWords) return { keep: false, reason: "gopher: more than 100000 words" };
  const meanLength = words.reduce((a, w) => a + w.length, 0) / n;
  if (meanLength < GOPHER.minMeanWordLength || meanLength > GOPHER.maxMeanWordLength) {
    return { keep: false, reason: "gopher: mean word length outside [3, 10]" };
  }
  const symbols = (text.match(/#/g) ?? []).length + (text.match(/\.\.\.|…/g) ?? []).length;
  if (symbols / n > GOPHER.maxSymbolToWordRatio) {
    return { keep: false, reason: "gopher: symbol-to-word ratio" };
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (lines.length > 0) {
    const bullets = lines.filter((l) => /^[•\-*‣◦⁃]/.test(l)).length;
    if (bullets / lines.length > GOPHER.maxBulletLineFraction) {
      return { keep: false, reason: "gopher: bullet lines" };
    }
    const ellipses = lines.filter((l) => /(\.\.\.|…)$/.test(l)).length;
    if (ellipses / lines.length > GOPHER.maxEllipsisLineFraction) {
      return { keep: false, reason: "gopher: ellipsis lines" };
    }
  }
  if (words.filter((w) => /\p{L}/u.test(w)).length / n < GOPHER.minAlphaWordFraction) {
    return { keep: false, reason: "gopher: too few words with a letter" };
  }
  const stop = new Set(words.map((w) => w.toLowerCase()).filter((w) => GOPHER_STOP_WORDS.has(w)));
  if (stop.size < GOPHER.minStopWords) {
    return { keep: false, reason: "gopher: fewer than 2 stop words" };
  }
  const repetition = gopherRepetition(text, words);
  if (repetition) return { keep: false, reason: `gopher: ${repetition}` };
  return { keep: true, text };
}

/** Duplicate share of a list of pieces: [fraction of pieces, fraction of their characters]. */
function duplicateFractions(pieces: string[]): [number, number] {
  if (pieces.length === 0) return [0, 0];
  const seen = new Set<string>();
  let dup = 0;
  let dupChars = 0;
  let chars = 0;
  for (const p of pieces) {
    chars += p.length;
    if (seen.has(p)) {
      dup++;
      dupChars += p.length;
    } else seen.add(p);
  }
  return [dup / pieces.length, chars === 0 ? 0 : dupChars / chars];
}

/** The first Gopher repetition rule the text fails, or null. */
export function gopherRepetition(
  text: string,
  words = text.split(/\s+/).filter(Boolean),
): string | null {
  const lines = text.split(/\n+/).map((l) => l.trim()).filter(Boolean);
  const paragraphs = text.split(/\n{2,}/).map((p) => p.trim()).filter(Boolean);
  const [dupLines, dupLineChars] = duplicateFractions(lines);
  if (dupLines > GOPHER.maxDuplicateLineFraction) return "duplicate lines";
  if (dupLineChars > GOPHER.maxDuplicateLineCharFraction) return "duplicate line characters";
  const [dupParas, dupParaChars] = duplicateFractions(paragraphs);
  if (dupParas > GOPHER.maxDuplicateParagraphFraction) return "duplicate paragraphs";
  if (dupParaChars > GOPHER.maxDuplicateParagraphCharFraction) {
    return "duplicate paragraph characters";
  }
  const totalChars = words.reduce((a, w) => a + w.length, 0);
  if (totalChars === 0) return null;
  for (const [nText, limit] of Object.entries(GOPHER.maxTopNgramCharFraction)) {
    const k = Number(nText);
    const counts = new Map<string, number>();
    for (let i = 0; i + k <= words.length; i++) {
      const g = words.slice(i, i + k).join(" ");
      counts.set(g, (counts.get(g) ?? 0) + 1);
    }
    let best = 0;
    for (const [g, c] of counts) {
      if (c > 1) best = Math.max(best, (g.length - (k - 1)) * c);
    }
    if (best / totalChars > limit) return `top ${k}-gram character fraction`;
  }
  for (const [nText, limit] of Object.entries(GOPHER.maxDuplicateNgramCharFraction)) {
    const k = Number(nText);
    const seen = new Set<string>();
    const covered = new Uint8Array(words.length);
    for (let i = 0; i + k <= words.length; i++) {
      const g = words.slice(i, i + k).join(" ");
      if (seen.has(g)) covered.fill(1, i, i + k);
      else seen.add(g);
    }
    let dupChars = 0;
    for (let i = 0; i < words.length; i++) if (covered[i]) dupChars += words[i].length;
    if (dupChars / totalChars > limit) return `duplicate ${k}-gram character fraction`;
  }
  return null;
}

/** C4's line and document rules, then Gopher's rules on what C4 kept. */
export function heuristicFilter(text: string): HeuristicResult {
  const c4 = c4Filter(text);
  if (!c4.keep) return c4;
  return gopherFilter(c4.text);
}
