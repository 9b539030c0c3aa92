/**
 * `deno task prepare`: build the demo corpus (see {@link prepareCorpus} in `corpus/prepare.ts`).
 *
 * @example
 * ```sh
 * deno task prepare --output s3://bucket/corpus/ --size 2100 --seed 0
 * ```
 */
import { parseArgs } from "node:util";
import { DEFAULT_CORPUS_OPTIONS, formatSummary, prepareCorpus } from "../corpus/prepare.ts";
import { storageFromEnv } from "../lib/storage.ts";

/** Records are documents of several KB, so a shard of 250 is about 1 MB of text. */
const DEFAULT_SHARD_SIZE = 250;

const USAGE = `usage: deno task prepare --output URI [--size N] [--seed N] [--shard-size N]
                         [--heldout-fraction F] [--test-fraction F] [--max-record-chars N]
                         [--unseen-per-kind N]
  --output            storage prefix (s3://bucket/prefix/, file:///abs/dir/ or a path)
  --size              records in the mixture, all splits together; each prose or damaged record
                      is a Brown document of 1-6 KiB used once, so Brown allows about 2100-2180
                      (default ${DEFAULT_CORPUS_OPTIONS.size})
  --seed              seed for document cuts, splits, sampling and damage (default 0)
  --shard-size        records per shard (default ${DEFAULT_SHARD_SIZE})
  --heldout-fraction  share of records in heldout/ (default 0.1)
  --test-fraction     share of records in test/ (default 0.1)
  --max-record-chars  emails are cut at this many characters (default ${DEFAULT_CORPUS_OPTIONS.maxRecordChars})
  --unseen-per-kind   documents per unseen junk kind in unseen/ (default: 1% of --size, 2 to 25)`;

function numberOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`--${name} expects a number, got "${value}"\n${USAGE}`);
  return n;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      output: { type: "string" },
      size: { type: "string" },
      seed: { type: "string" },
      "shard-size": { type: "string" },
      "heldout-fraction": { type: "string" },
      "test-fraction": { type: "string" },
      "max-record-chars": { type: "string" },
      "unseen-per-kind": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.output) {
    console.log(USAGE);
    Deno.exit(values.help ? 0 : 2);
  }
  const d = DEFAULT_CORPUS_OPTIONS;
  const options = {
    size: numberOption(values.size, "size", d.size),
    seed: numberOption(values.seed, "seed", d.seed),
    heldoutFraction: numberOption(
      values["heldout-fraction"],
      "heldout-fraction",
      d.heldoutFraction,
    ),
    testFraction: numberOption(values["test-fraction"], "test-fraction", d.testFraction),
    maxRecordChars: numberOption(values["max-record-chars"], "max-record-chars", d.maxRecordChars),
    shardSize: numberOption(values["shard-size"], "shard-size", DEFAULT_SHARD_SIZE),
    ...(values["unseen-per-kind"] === undefined ? {} : {
      unseenPerKind: numberOption(values["unseen-per-kind"], "unseen-per-kind", 0),
    }),
  };
  try {
    const summary = await prepareCorpus(
      storageFromEnv(Deno.env.toObject()),
      values.output,
      options,
      (l) => console.error(l),
    );
    console.log(
      summary.reused
        ? `corpus already prepared at ${values.output}`
        : `corpus written to ${values.output}`,
    );
    console.log(formatSummary(summary));
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  }
}
