/**
 * Model loading for the scoring function: fetches a rater from storage, identifies it by its
 * sha256, validates it as a DataRater export and opens its sessions in the inference pool. A
 * model is re-read only when its ETag changes; at most `maxModels` stay loaded (least recently
 * used are unloaded). Concurrent requests for one model share one load.
 */
import { createHash } from "node:crypto";
import type { ScoreCalibration } from "../lib/calibration.ts";
import type { ScoringSpec } from "../training/export-onnx.ts";
import { NotFoundError, type ObjectInfo, type Storage } from "../lib/storage.ts";
import { ApiError } from "./errors.ts";
import { type InferencePool, NotADataRaterModelError } from "./inference.ts";

/** A loaded rater. */
export interface LoadedModel {
  uri: string;
  etag: string | null;
  sha256: string;
  format: string;
  /** Bytes per window the model sees. */
  seqLen: number;
  /** How a whole record is cut into windows and their scores aggregated (the export's metadata). */
  scoring: ScoringSpec;
  calibration: ScoreCalibration;
}

/** See the module documentation. */
export class ModelCache {
  #byKey = new Map<string, Promise<LoadedModel>>();
  #lastUsed = new Map<string, number>(); // digest → time of last use
  #digestRefs = new Map<string, Set<string>>(); // digest → cache keys

  constructor(
    private readonly storage: Storage,
    private readonly pool: InferencePool,
    private readonly options: {
      maxModels: number;
      maxModelBytes: number;
      onLoadedChange?: (n: number) => void;
    },
  ) {}

  /** Digests of the models currently loaded. */
  get loadedDigests(): string[] {
    return [...this.#lastUsed.keys()];
  }

  /** Loads (or reuses) the model at `uri`; throws {@link ApiError} 404/413/422/502. */
  async get(uri: string): Promise<LoadedModel> {
    const info = await this.#stat(uri);
    // Without an ETag there is no cheap way to notice a change: key by size only and re-hash.
    const key = info.etag ? `${uri}\n${info.etag}` : `${uri}\n#${info.size}#${Date.now()}`;
    let loading = this.#byKey.get(key);
    if (!loading) {
      loading = this.#load(uri, info);
      this.#byKey.set(key, loading);
      loading.then(
        (m) => {
          const keys = this.#digestRefs.get(m.sha256) ?? new Set();
          keys.add(key);
          this.#digestRefs.set(m.sha256, keys);
          if (!info.etag) this.#byKey.delete(key);
        },
        () => this.#byKey.delete(key),
      );
    }
    const model = await loading;
    this.#lastUsed.set(model.sha256, performance.now());
    await this.#evict(model.sha256);
    return model;
  }

  async #stat(uri: string): Promise<ObjectInfo> {
    let info: ObjectInfo | null;
    try {
      info = await this.storage.stat(uri);
    } catch (e) {
      throw new ApiError("storage_error", `cannot read model ${uri}: ${(e as Error).message}`, {
        uri,
      });
    }
    if (!info) {
      throw new ApiError("not_found", `model ${uri} does not exist`, { field: "model", uri });
    }
    if (info.size > this.options.maxModelBytes) {
      throw new ApiError(
        "payload_too_large",
        `model ${uri} is ${info.size} bytes, over the ${this.options.maxModelBytes}-byte limit ` +
          "(DATARATER_MAX_MODEL_BYTES)",
        { field: "model", uri, size: info.size },
      );
    }
    return info;
  }

  async #load(uri: string, info: ObjectInfo): Promise<LoadedModel> {
    let bytes: Uint8Array;
    try {
      bytes = await this.storage.readBytes(uri);
    } catch (e) {
      if (e instanceof NotFoundError) {
        throw new ApiError("not_found", `model ${uri} does not exist`, { field: "model", uri });
      }
      throw new ApiError("storage_error", `cannot read model ${uri}: ${(e as Error).message}`, {
        uri,
      });
    }
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    try {
      const meta = await this.pool.load(sha256, bytes);
      this.#lastUsed.set(sha256, performance.now());
      this.options.onLoadedChange?.(this.#lastUsed.size);
      return {
        uri,
        etag: info.etag,
        sha256,
        format: meta.format,
        seqLen: meta.seqLen,
        scoring: meta.scoring,
        calibration: meta.calibration,
      };
    } catch (e) {
      if (e instanceof NotADataRaterModelError) {
        throw new ApiError(
          "not_a_datarater_model",
          `model ${uri} is not a DataRater export: ${e.message}`,
          { field: "model", uri },
        );
      }
      throw e;
    }
  }

  async #evict(keep: string): Promise<void> {
    while (this.#lastUsed.size > this.options.maxModels) {
      let oldest: string | null = null;
      let oldestTime = Infinity;
      for (const [digest, t] of this.#lastUsed) {
        if (digest !== keep && t < oldestTime) [oldest, oldestTime] = [digest, t];
      }
      if (!oldest) return;
      this.#lastUsed.delete(oldest);
      for (const key of this.#digestRefs.get(oldest) ?? []) this.#byKey.delete(key);
      this.#digestRefs.delete(oldest);
      await this.pool.unload(oldest);
      this.options.onLoadedChange?.(this.#lastUsed.size);
    }
  }
}
