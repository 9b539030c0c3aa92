/**
 * `deno task export --config FILE [--output URI] [--checkpoint URI] [--weights ema|current]
 *  [--reference N] [--to URI]`: exports a run's rater from a checkpoint to ONNX, calibrated on a
 * sample of the run's training records.
 *
 * The config must be the run's own (its digest is checked against the checkpoint's). By default
 * it takes the newest checkpoint under the run's output prefix (`config.output`, or
 * `--output`), exports the parameter average (`etaEma`) when the run keeps one, writes
 * `<output>/rater.onnx`, `rater.onnx.sha256` and `artifacts.json` by the trainer's own export
 * procedure (training/export.ts: the same bytes for the same weights; the trainer picks final vs.
 * averaged weights by held-out loss, this takes `--weights`), and prints a JSON summary. With `--to URI` it writes only the model there (artifacts.json
 * describes the run's own export and is left alone). S3 settings come from the environment
 * (`S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, …).
 *
 * @example
 * ```sh
 * deno task export --config run.yaml
 * deno task export --config run.yaml --checkpoint s3://b/run1/checkpoints/step-00000500.ckpt --to ./rater-500.onnx
 * ```
 */
import * as yaml from "js-yaml";
import { parseArgs } from "node:util";
import { configDigest, joinUri, parseTrainConfig, RUN_LAYOUT } from "../lib/config.ts";
import { storageFromEnv } from "../lib/storage.ts";
import { decodeCheckpoint, listCheckpoints } from "../training/checkpoint.ts";
import { describeStats, loadDataset } from "../training/data.ts";
import { exportRater, REFERENCE_SIZE } from "../training/export.ts";
import { datasetOptions } from "../training/trainer.ts";

const USAGE = "usage: deno task export --config FILE [--output URI] [--checkpoint URI] " +
  "[--weights ema|current] [--reference N] [--to URI]";

/** Bad command line or run state: printed without a stack trace. */
class UsageError extends Error {}

async function main() {
  const storage = storageFromEnv(Deno.env.toObject());
  const { values } = parseArgs({
    options: {
      config: { type: "string" },
      output: { type: "string" },
      checkpoint: { type: "string" },
      weights: { type: "string" },
      reference: { type: "string", default: String(REFERENCE_SIZE) },
      to: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.config) throw new UsageError(`--config is required\n${USAGE}`);
  const referenceSize = Number(values.reference);
  if (!Number.isInteger(referenceSize) || referenceSize < 1) {
    throw new UsageError(`--reference must be a positive integer, got ${values.reference}`);
  }
  if (values.weights && values.weights !== "ema" && values.weights !== "current") {
    throw new UsageError(`--weights must be ema or current, got ${values.weights}`);
  }

  // YAML is a superset of JSON, so one parser reads both config styles.
  const config = parseTrainConfig(yaml.load(await storage.readText(values.config)), values.config);
  const output = values.output ?? config.output;

  let checkpointUri = values.checkpoint;
  if (!checkpointUri) {
    const all = await listCheckpoints(storage, output);
    if (all.length === 0) {
      throw new UsageError(
        `no checkpoints under ${joinUri(output, RUN_LAYOUT.checkpoints)}: train first, ` +
          "or pass --output / --checkpoint",
      );
    }
    checkpointUri = all[all.length - 1].uri;
  }
  const state = decodeCheckpoint(await storage.readBytes(checkpointUri), checkpointUri);
  // The rater's shape (heads especially) and the calibration data come from the config: it must
  // be the one the checkpoint was trained under.
  const digest = configDigest(config);
  if (state.configDigest !== digest) {
    throw new UsageError(
      `${checkpointUri} was written under a different config (digest ${state.configDigest}, ` +
        `${values.config} has ${digest}): pass the run's own config`,
    );
  }
  const weights = values.weights ?? (config.meta.paramEma > 0 ? "ema" : "current");
  const params = weights === "ema" ? state.etaEma : state.eta;

  const train = await loadDataset(storage, config.data.train, {
    ...datasetOptions(config),
    name: "train",
  });
  console.error(`calibration data: ${describeStats(train.stats)}`);
  // The trainer's own export procedure (training/export.ts), so a checkpoint exported here gives
  // the bytes the trainer writes at the end of the run for the same weights.
  const exported = await exportRater(storage, {
    config,
    params,
    train,
    referenceSize,
    output,
    to: values.to,
  });
  const q = exported.calibration.quantiles;
  console.log(JSON.stringify({
    onnx: exported.uri,
    sha256: exported.sha256,
    bytes: exported.bytes,
    checkpoint: checkpointUri,
    step: state.step,
    weights,
    configSha256: state.configDigest,
    calibration: { samples: exported.calibration.samples, p10: q[10], p50: q[50], p90: q[90] },
  }));
}

try {
  await main();
} catch (e) {
  console.error(e instanceof UsageError ? e.message : e);
  Deno.exit(e instanceof UsageError ? 2 : 1);
}
