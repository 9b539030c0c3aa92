/**
 * Meta-training checkpoints: everything a run needs to continue exactly where it stopped — the
 * rater and its parameter average, each inner model's meta-optimiser state, the inner models with
 * their optimiser states and ages, the generator state and the step.
 *
 * Format (one object, `<output>/checkpoints/step-00000050.ckpt`): a 4-byte little-endian header
 * length, a JSON header, then the float32 arrays back to back (little-endian), each named in the
 * header with its shape and offset. One self-contained object per checkpoint, written atomically by
 * the storage layer, so a crash mid-write never leaves a checkpoint half-readable.
 *
 * @example
 * ```ts
 * await saveCheckpoint(storage, output, state);
 * const latest = await loadLatestCheckpoint(storage, output); // or null
 * ```
 */
import { joinUri, RUN_LAYOUT } from "../lib/config.ts";
import type { Storage } from "../lib/storage.ts";
import { type ParamArrays, toArrays, toTensors } from "./params.ts";
import type { OptState } from "./optim.ts";

/** An optimiser state outside any backend (same layout as {@link OptState}). */
export type OptStateArrays = { count: number; slots: Record<string, ParamArrays> }[];

/** One inner model as stored. */
export interface MemberCheckpoint {
  params: ParamArrays;
  opt: OptStateArrays;
  /** Meta-steps since this model was (re-)initialised. */
  age: number;
  /** Times it was re-initialised. */
  resets: number;
}

/** The whole state of a run after `step` meta-steps. */
export interface TrainState {
  step: number;
  rngState: number;
  /** sha256 of the config that wrote it: resuming under a different config is refused. */
  configDigest: string;
  eta: ParamArrays;
  /** Exponential moving average of η (the export candidate that smooths the inner models' ages). */
  etaEma: ParamArrays;
  /** One meta-optimiser state per inner model. */
  metaOpt: OptStateArrays[];
  members: MemberCheckpoint[];
  /** Last logged meta-loss (for progress.json). */
  metaLoss: number | null;
}

/** The checkpoint is unreadable or belongs to another configuration. */
export class CheckpointError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CheckpointError";
  }
}

const MAGIC = "DRCKPT1";

/** Downloads an optimiser state. */
export async function optStateToArrays(state: OptState): Promise<OptStateArrays> {
  const out: OptStateArrays = [];
  for (const s of state) {
    const slots: Record<string, ParamArrays> = {};
    for (const [slot, params] of Object.entries(s.slots)) {
      slots[slot] = await toArrays(params);
    }
    out.push({ count: s.count, slots });
  }
  return out;
}

/** Uploads an optimiser state to the active backend. */
export function optStateFromArrays(state: OptStateArrays): OptState {
  return state.map((s) => ({
    count: s.count,
    slots: Object.fromEntries(
      Object.entries(s.slots).map(([slot, arrays]) => [slot, toTensors(arrays)]),
    ),
  }));
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Serialises a state: JSON header with array references, then the raw float32 data. */
export function encodeCheckpoint(state: TrainState): Uint8Array {
  const blobs: Float32Array[] = [];
  let offset = 0;
  // Replace each {shape, values} with {shape, offset, length} in the header.
  const header = JSON.stringify({ magic: MAGIC, state }, (_key, value) => {
    if (value instanceof Float32Array) {
      const ref = { $f32: offset, length: value.length };
      blobs.push(value);
      offset += value.length;
      return ref;
    }
    return value as Json;
  });
  const headerBytes = new TextEncoder().encode(header);
  const out = new Uint8Array(4 + headerBytes.length + offset * 4);
  new DataView(out.buffer).setUint32(0, headerBytes.length, true);
  out.set(headerBytes, 4);
  const dataStart = 4 + headerBytes.length;
  let at = dataStart;
  for (const blob of blobs) {
    out.set(new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength), at);
    at += blob.byteLength;
  }
  return out;
}

/** Parses {@link encodeCheckpoint}'s output. Throws {@link CheckpointError}. */
export function decodeCheckpoint(bytes: Uint8Array, uri = "checkpoint"): TrainState {
  try {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerLength = view.getUint32(0, true);
    const header = new TextDecoder().decode(bytes.subarray(4, 4 + headerLength));
    const dataStart = 4 + headerLength;
    // Copy the data once into an aligned buffer, then slice views out of it.
    const data = new Float32Array(
      bytes.slice(dataStart).buffer,
    );
    const parsed = JSON.parse(header, (_key, value) => {
      if (value && typeof value === "object" && "$f32" in value) {
        const v = value as { $f32: number; length: number };
        return data.slice(v.$f32, v.$f32 + v.length);
      }
      return value;
    }) as { magic: string; state: TrainState };
    if (parsed.magic !== MAGIC) {
      throw new Error(`not a DataRater checkpoint (magic ${parsed.magic})`);
    }
    return parsed.state;
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`cannot read checkpoint ${uri}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** `<output>/checkpoints/step-00000050.ckpt`. */
export function checkpointUri(output: string, step: number): string {
  return joinUri(
    joinUri(output, RUN_LAYOUT.checkpoints),
    `step-${String(step).padStart(8, "0")}.ckpt`,
  );
}

const CKPT_NAME = /step-(\d+)\.ckpt$/;

/** Steps of the checkpoints under an output prefix, ascending. */
export async function listCheckpoints(
  storage: Storage,
  output: string,
): Promise<{ step: number; uri: string }[]> {
  const found: { step: number; uri: string }[] = [];
  for await (const obj of storage.list(joinUri(output, RUN_LAYOUT.checkpoints))) {
    const m = CKPT_NAME.exec(obj.uri);
    if (m) found.push({ step: Number(m[1]), uri: obj.uri });
  }
  return found.sort((a, b) => a.step - b.step);
}

/** Writes a checkpoint and deletes all but the newest `keep`. Returns its URI. */
export async function saveCheckpoint(
  storage: Storage,
  output: string,
  state: TrainState,
  keep = 3,
): Promise<string> {
  const uri = checkpointUri(output, state.step);
  await storage.write(uri, encodeCheckpoint(state), { contentType: "application/octet-stream" });
  const all = await listCheckpoints(storage, output);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) {
    await storage.delete(old.uri);
  }
  return uri;
}

/** The newest checkpoint under an output prefix, or null if there is none. */
export async function loadLatestCheckpoint(
  storage: Storage,
  output: string,
): Promise<TrainState | null> {
  const all = await listCheckpoints(storage, output);
  if (all.length === 0) return null;
  const latest = all[all.length - 1];
  return decodeCheckpoint(await storage.readBytes(latest.uri), latest.uri);
}
