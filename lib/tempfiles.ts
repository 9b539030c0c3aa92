/**
 * Temporary files whose owner can be known, and a sweep for the ones a crashed owner left.
 *
 * A process killed mid-write (`kill -9`, OOM) leaves its temporary files behind: nothing else
 * knows they are garbage, so they stay forever. {@link tempFileName} puts the writer's host and
 * pid in the name; {@link sweepStaleTempFiles} removes those whose writer is gone (same host, pid
 * not alive, untouched for a grace period) or that are older than any write could take. Files of
 * other hosts (a shared volume) are left to the age limit: their pids mean nothing here.
 *
 * @example
 * ```ts
 * const tmp = path.join(dir, tempFileName(".manifest.jsonl"));
 * await sweepStaleTempFiles(dir, ".manifest.jsonl.");
 * ```
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import * as path from "node:path";
import process from "node:process";

/** This host's name as it appears in temporary file names (letters, digits and `-`). */
export function hostTag(): string {
  return (hostname().replace(/[^A-Za-z0-9-]/g, "-").slice(0, 63)) || "host";
}

/** `STEM.PID.HOST.RANDOM.tmp`: the suffix of every name {@link sweepStaleTempFiles} may remove. */
const OWNED = /\.(\d{1,10})\.([A-Za-z0-9-]{1,63})\.([0-9a-f]{16})\.tmp$/;

/**
 * A fresh temporary file name `STEM.PID.HOST.RANDOM.tmp` (no folder; a long stem is cut, so the
 * name fits where a name of up to 255 bytes does). The random part makes the
 * name unguessable, so a link planted at it in advance is vanishingly unlikely; create it with
 * `createNew` anyway.
 */
export function tempFileName(stem: string): string {
  return `${shortStem(stem)}.${Deno.pid}.${hostTag()}.${randomBytes(8).toString("hex")}.tmp`;
}

/** Longest stem kept, in UTF-8 bytes: with the ≤ 96-byte suffix a name stays under NAME_MAX. */
const MAX_STEM_BYTES = 120;

/** The stem cut to {@link MAX_STEM_BYTES} (a 250-byte output name still gets a temporary file). */
function shortStem(stem: string): string {
  const enc = new TextEncoder();
  if (enc.encode(stem).length <= MAX_STEM_BYTES) return stem;
  let out = "";
  let bytes = 0;
  for (const ch of stem) {
    const n = enc.encode(ch).length;
    if (bytes + n > MAX_STEM_BYTES) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/** The pid and host a name from {@link tempFileName} records, or null for other names. */
export function tempFileOwner(name: string): { pid: number; host: string } | null {
  const m = OWNED.exec(name);
  return m ? { pid: Number(m[1]), host: m[2] } : null;
}

/** Whether a process with this pid exists on this host (EPERM: it exists, it is not ours). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/** Options for {@link sweepStaleTempFiles}. */
export interface SweepOptions {
  /** A file untouched this long is removed whoever wrote it (default 24 h). */
  maxAgeMs?: number;
  /**
   * A file of a dead local pid is removed once untouched this long (default 1 min): a pid just
   * reused, or a clock step, does not take a file that is being written.
   */
  graceMs?: number;
  /** The current time (tests). */
  now?: number;
}

/**
 * Removes the stale temporary files directly in `dir` (not below it) whose names start with
 * `prefix` and were made by {@link tempFileName}; returns the names removed. A missing folder is
 * nothing to sweep; a file that cannot be removed is left (the next sweep tries again).
 */
export async function sweepStaleTempFiles(
  dir: string,
  prefix: string,
  options: SweepOptions = {},
): Promise<string[]> {
  const maxAgeMs = options.maxAgeMs ?? 24 * 3600_000;
  const graceMs = options.graceMs ?? 60_000;
  const now = options.now ?? Date.now();
  const host = hostTag();
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return [];
    throw e;
  }
  for (const entry of entries) {
    if (!entry.isFile || !entry.name.startsWith(prefix)) continue;
    const owner = tempFileOwner(entry.name);
    if (!owner) continue;
    const full = path.join(dir, entry.name);
    let age: number;
    try {
      const s = await Deno.lstat(full);
      age = now - (s.mtime?.getTime() ?? now);
    } catch {
      continue; // gone meanwhile
    }
    const orphan = owner.host === host && owner.pid !== Deno.pid && !pidAlive(owner.pid) &&
      age >= graceMs;
    if (!orphan && age < maxAgeMs) continue;
    try {
      await Deno.remove(full);
      removed.push(entry.name);
    } catch {
      // Removed by another sweeper, or not ours to remove: the next sweep tries again.
    }
  }
  return removed.sort();
}
