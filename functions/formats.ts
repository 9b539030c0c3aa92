/**
 * The scoring request's `formats` option: the manifest also written as Parquet and/or dolma
 * attributes (lib/manifest-formats.ts), once the v1 manifest exists. Kept apart from score.ts so
 * the scoring path itself is unchanged: the extra formats are derived from the written manifest.
 */
import {
  dolmaAttributesUriFor,
  type ManifestFormats,
  type ManifestFormatsResult,
  writeManifestFormats,
} from "../lib/manifest-formats.ts";
import { ManifestError } from "../lib/manifest.ts";
import type { Storage } from "../lib/storage.ts";
import { ApiError } from "./errors.ts";

/**
 * Normalises the request's format URIs (dolma's derived from the input when not given) and checks
 * each against the allowed roots, before anything is scored.
 */
export async function resolveRequestedFormats(
  formats: ManifestFormats,
  input: string,
  normalise: (field: string, uri: string) => string,
  checkAllowed: (field: string, uri: string) => Promise<void>,
): Promise<ManifestFormats> {
  const out: ManifestFormats = {};
  if (formats.parquet) {
    out.parquet = normalise("formats.parquet", formats.parquet);
    await checkAllowed("formats.parquet", out.parquet);
  }
  if (formats.dolmaAttributes) {
    const { name } = formats.dolmaAttributes;
    let uri: string;
    try {
      uri = formats.dolmaAttributes.uri ?? dolmaAttributesUriFor(input, name);
    } catch (e) {
      throw new ApiError("bad_request", (e as Error).message, { field: "formats.dolmaAttributes" });
    }
    uri = normalise("formats.dolmaAttributes.uri", uri);
    await checkAllowed("formats.dolmaAttributes.uri", uri);
    out.dolmaAttributes = { name, uri };
  }
  return out;
}

/** Writes the requested formats of the manifest at `manifest`; failures become API errors. */
export async function writeRequestedFormats(
  storage: Storage,
  manifest: string,
  formats: ManifestFormats,
): Promise<ManifestFormatsResult> {
  try {
    return await writeManifestFormats(storage, manifest, formats);
  } catch (e) {
    if (e instanceof ManifestError) {
      throw new ApiError("conflict", `writing the requested formats failed: ${e.message}`, {
        field: "formats",
        uri: manifest,
      });
    }
    throw new ApiError(
      "storage_error",
      `writing the requested formats failed: ${(e as Error).message}`,
      {
        field: "formats",
      },
    );
  }
}
