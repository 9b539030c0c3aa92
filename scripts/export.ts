/**
 * `deno task export --config FILE [--output URI] [--checkpoint URI] [--weights ema|current]
 *  [--reference N] [--to URI]`: exports a run's rater from a checkpoint to ONNX, calibrated on a
 * sample of the run's training records.
 *
 * The config must be the run's own (its digest is checked against the checkpoint's). By default
 * it takes the newest checkpoint under the run's output prefix (`config.output`, or
 * `--output`), exports the parameter average (`etaEma`) when the run keeps one, writes
 * `<output>/rater.onnx`, `rater.onnx.sha256` and `artifacts.json` (what the trainer writes when it
 * finishes; the trainer picks final vs. averaged weights by held-out loss, this takes `--weights`),
 * and prints a JSON summary. With `--to URI` it writes only the model there (artifacts.json
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
import {
  joinUri,
  parseTrainConfig,
  raterSeqLen,
  RUN_LAYOUT,
  type TrainerArtifacts,
  TrainerArtifactsSchema,
} from "../lib/config.ts";
import { storageFromEnv } from "../lib/storage.ts";
import { decodeCheckpoint, listCheckpoints } from "../training/checkpoint.ts";
import { describeStats, loadDataset, recordAt } from "../training/data.ts";
import { exportCalibratedRater } from "../training/export-onnx.ts";
import { Rng } from "../training/rng.ts";
import { configDigest } from "../training/trainer.ts";

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
      reference: { type: "string", default: "4096" },
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

  // Calibrate on a seeded sample of the training distribution (without replacement; 4096 records
  // by default, as the trainer does), scored by the exported graph itself.
  const train = await loadDataset(storage, config.data.train, {
    seqLen: raterSeqLen(config),
    name: "train",
    idField: config.data.idField,
    textField: config.data.textField,
  });
  console.error(`calibration data: ${describeStats(train.stats)}`);
  const order = Array.from({ length: train.count }, (_, i) => i);
  const rng = new Rng(config.seed);
  const n = Math.min(referenceSize, train.count);
  for (let i = 0; i < n; i++) {
    const j = i + rng.int(train.count - i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const reference = order.slice(0, n).map((i) => recordAt(train, i));

  const exported = await exportCalibratedRater({
    params,
    rater: config.rater,
    seqLen: raterSeqLen(config),
    configDigest: state.configDigest,
    reference,
  });
  const target = values.to ?? joinUri(output, RUN_LAYOUT.onnx);
  await storage.write(target, exported.model, { contentType: "application/octet-stream" });
  if (!values.to) {
    // Same files as the trainer's own export: the digest beside the model, then artifacts.json.
    await storage.write(`${target}.sha256`, `${exported.sha256}  ${RUN_LAYOUT.onnx}\n`, {
      contentType: "text/plain",
    });
    const artifacts: TrainerArtifacts = TrainerArtifactsSchema.parse({
      onnx: target,
      sha256: exported.sha256,
      calibration: exported.calibration,
      finishedAt: new Date().toISOString(),
    });
    await storage.write(
      joinUri(output, RUN_LAYOUT.artifacts),
      JSON.stringify(artifacts, null, 2) + "\n",
      { contentType: "application/json" },
    );
  }
  const q = exported.calibration.quantiles;
  console.log(JSON.stringify({
    onnx: target,
    sha256: exported.sha256,
    bytes: exported.model.length,
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
