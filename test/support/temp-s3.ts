/**
 * An s3rver in a temporary folder with storage over it: the set-up of every test that talks S3
 * (`test/lib/parquet.test.ts`, `test/clients/python-reader.test.ts`, the scoring function's
 * `startS3Rig` in `test/functions/fixtures.ts`).
 */
import { type S3Server, startS3Server } from "../../lib/s3-server.ts";
import { createStorage, type UriStorage } from "../../lib/storage.ts";

/** A temporary folder (`tmp`), an s3rver keeping its objects under it, and storage over both. */
export interface TempS3 {
  tmp: string;
  s3: S3Server;
  storage: UriStorage;
}

/** Starts a {@link TempS3} with `buckets`; {@link stopTempS3} undoes it. */
export async function startTempS3(prefix: string, buckets: string[]): Promise<TempS3> {
  const tmp = await Deno.makeTempDir({ prefix });
  const s3 = await startS3Server({ dir: `${tmp}/s3`, buckets });
  return { tmp, s3, storage: createStorage({ s3: s3.settings }) };
}

/** Closes the storage, stops the server and removes the folder (if `temp` got started). */
export async function stopTempS3(temp: TempS3 | undefined): Promise<void> {
  if (!temp) return;
  temp.storage.close();
  await temp.s3.stop();
  await Deno.remove(temp.tmp, { recursive: true });
}
