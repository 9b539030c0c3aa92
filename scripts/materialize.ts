/**
 * `deno task materialize --manifests PREFIX --output PREFIX [--format jsonl|parquet]
 * [--dropped PREFIX] [--concurrency N]`: writes the kept records of every shard that has a
 * manifest under PREFIX as new shards (see lib/materialize.ts), with a progress bar over the bytes
 * read. Prints a JSON summary; exits 1 on the first shard that fails (the error names the manifest
 * and the shard; nothing of that shard is written).
 */
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import { materialize, type MaterializeFormat } from "../lib/materialize.ts";
import { storageFromEnv } from "../lib/storage.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      manifests: { type: "string" },
      output: { type: "string" },
      dropped: { type: "string" },
      format: { type: "string" },
      concurrency: { type: "string", default: "2" },
    },
  });
  if (
    !values.manifests || !values.output ||
    (values.format !== undefined && !["jsonl", "parquet"].includes(values.format))
  ) {
    console.error(
      "usage: deno task materialize --manifests PREFIX --output PREFIX " +
        "[--format jsonl|parquet] [--dropped PREFIX] [--concurrency N]",
    );
    Deno.exit(2);
  }
  const storage = storageFromEnv(Deno.env.toObject());
  const bar = new cliProgress.SingleBar(
    { format: "materialize [{bar}] {shardsDone}/{shards} shards | {mb} MB read", etaBuffer: 20 },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  try {
    const summary = await materialize(storage, {
      manifests: values.manifests,
      output: values.output,
      dropped: values.dropped,
      format: values.format as MaterializeFormat | undefined,
      concurrency: Number(values.concurrency),
      onProgress: ({ shardsDone, shards, bytesRead }) => {
        const payload = { shardsDone, shards, mb: (bytesRead / 1e6).toFixed(1) };
        if (!started) {
          bar.start(shards, shardsDone, payload);
          started = true;
        } else bar.update(shardsDone, payload);
      },
    });
    bar.stop();
    const { results: _, ...totals } = summary;
    console.log(JSON.stringify(totals));
  } catch (e) {
    bar.stop();
    console.error(`materialize failed: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
