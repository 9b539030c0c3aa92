/**
 * The trainer's command line — the same program the Kubernetes pod runs:
 *
 * ```sh
 * deno task train --config run.yaml [--steps N]
 * ```
 *
 * The config is JSON or YAML (see `lib/config.ts` for fields and defaults). A run resumes from the
 * latest checkpoint under its `output`. On failure it exits non-zero with a message that says what
 * to fix, and also writes that message to `/dev/termination-log` when it can (Kubernetes shows it
 * as the container's termination message).
 */
import { load as loadYaml } from "js-yaml";
import { parseArgs } from "node:util";
import { ConfigError, parseTrainConfig } from "../lib/config.ts";
import { type Storage, StorageError, storageFromEnv } from "../lib/storage.ts";
import { BackendError } from "./backend.ts";
import { CheckpointError } from "./checkpoint.ts";
import { DataError } from "./data.ts";
import { train } from "./trainer.ts";

const USAGE = "usage: deno task train --config FILE [--steps N]";

/** Exit codes: 2 bad usage or config, 3 data or storage, 4 checkpoint, 1 anything else. */
export function exitCodeFor(e: unknown): number {
  if (e instanceof UsageError || e instanceof ConfigError) return 2;
  if (e instanceof DataError || e instanceof StorageError) return 3;
  if (e instanceof CheckpointError) return 4;
  return 1;
}

class UsageError extends Error {
  constructor(message: string) {
    super(`${message}\n${USAGE}`);
    this.name = "UsageError";
  }
}

/** Reads and validates the config file named by `--config`. */
export async function loadConfigFile(path: string) {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = /\.json$/i.test(path) ? JSON.parse(text) : loadYaml(text);
  } catch (e) {
    throw new ConfigError(
      [{ path: "", message: `not valid JSON/YAML: ${(e as Error).message}` }],
      path,
    );
  }
  return parseTrainConfig(raw, path);
}

/**
 * Runs the CLI over `storage` (the program's own is built from its environment: `S3_ENDPOINT`,
 * `AWS_*`); returns the exit code.
 *
 * @example
 * ```ts
 * const code = await main(["--config", "run.yaml"], new FileStorage());
 * ```
 */
export async function main(args: string[], storage: Storage): Promise<number> {
  try {
    const { values } = (() => {
      try {
        return parseArgs({
          args,
          options: {
            config: { type: "string" },
            steps: { type: "string" },
            help: { type: "boolean" },
          },
        });
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    })();
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (!values.config) throw new UsageError("--config is required");
    const config = await loadConfigFile(values.config);
    let steps: number | undefined;
    if (values.steps !== undefined) {
      steps = Number(values.steps);
      if (!Number.isInteger(steps) || steps < 1) {
        throw new UsageError(`--steps must be a positive integer, got ${values.steps}`);
      }
    }
    const result = await train(storage, config, { steps });
    if (result.exported) {
      console.log(`rater exported to ${result.exported.uri} (sha256 ${result.exported.sha256})`);
    }
    return 0;
  } catch (e) {
    const message = e instanceof BackendError || e instanceof ConfigError ||
        e instanceof DataError || e instanceof UsageError || e instanceof CheckpointError
      ? (e as Error).message
      : (e as Error).stack ?? String(e);
    console.error(`train: ${message}`);
    await writeTerminationLog(`train: ${(e as Error).message ?? String(e)}`);
    return exitCodeFor(e);
  }
}

async function writeTerminationLog(message: string): Promise<void> {
  try {
    // Only where the file already exists (Kubernetes mounts it); never create it elsewhere.
    await Deno.writeTextFile("/dev/termination-log", message.slice(0, 4000) + "\n", {
      create: false,
    });
  } catch {
    // Not in a pod, or not writable: stderr already has the message.
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args, storageFromEnv(Deno.env.toObject())));
}
