/**
 * The allowed-roots check of the scoring function: every model, input and output URI must lie
 * under one of the configured roots, by name and, for local files, by the real path it reaches.
 *
 * By name: the canonical URI (lib/storage.ts `parseUri` has already refused S3 keys with dot or
 * empty segments, which a resolving server would otherwise take to another prefix or bucket)
 * starts with a root. For files, names are not enough: a symlink inside a root can point anywhere.
 * So the real path (every link resolved; for an output that does not exist yet, its nearest
 * existing ancestor resolved and the rest appended, so the folders a write would create count
 * too) must lie under a root's real path. What is there must also be a regular file, or nothing:
 * a FIFO blocks its reader, a device never ends.
 *
 * What this cannot close: a link swapped in between the check and the open by someone who can
 * write inside a root. FileStorage narrows it (its temporary file is created with O_EXCL, the
 * final name is taken by link/rename, which do not follow links there); whoever can write in a
 * root is trusted not to race the function.
 *
 * @example
 * ```ts
 * const roots = new AllowedRoots(["file:///data/", "s3://corpus/"]);
 * await roots.check("input", "file:///data/shards/part-0.jsonl");
 * ```
 */
import * as path from "node:path";
import { formatUri, parseUri } from "../lib/storage.ts";
import { ApiError } from "./errors.ts";

/** Links followed before a path is declared a loop (Linux's own limit). */
const MAX_LINKS = 40;

/** Normalises a root so that prefix matching cannot cross a name boundary. */
export function normaliseRoot(root: string): string {
  const uri = formatUri(parseUri(root));
  return uri.endsWith("/") ? uri : uri + "/";
}

/** The path with a trailing `/` dropped (but `/` itself kept). */
function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

/**
 * The real path `p` reaches: every link resolved, a missing tail appended to its nearest existing
 * ancestor's real path (a dangling link is followed to where it would create). Throws
 * `Deno.errors.FilesystemLoop` after {@link MAX_LINKS} links.
 */
export async function resolveReal(p: string, links = 0): Promise<string> {
  p = trimSlash(path.resolve(p));
  try {
    return await Deno.realPath(p);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.lstat(p);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
  }
  if (info?.isSymlink) {
    // Dangling: a write here would create the link's target.
    if (links >= MAX_LINKS) throw new Deno.errors.FilesystemLoop(`too many links at ${p}`);
    const target = await Deno.readLink(p);
    return await resolveReal(path.resolve(path.dirname(p), target), links + 1);
  }
  const parent = path.dirname(p);
  if (parent === p) return p;
  return path.join(await resolveReal(parent, links), path.basename(p));
}

/** A local file's kind, from what `stat` (following links) finds there; null: nothing. */
async function kindAt(p: string): Promise<string | null> {
  let s: Deno.FileInfo;
  try {
    s = await Deno.stat(p);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
  if (s.isFile) return "file";
  if (s.isDirectory) return "a folder";
  if (s.isFifo) return "a FIFO";
  if (s.isCharDevice || s.isBlockDevice) return "a device";
  if (s.isSocket) return "a socket";
  return "not a regular file";
}

/** See the module documentation. */
export class AllowedRoots {
  /** Canonical roots, each ending in `/`. */
  readonly roots: string[];
  readonly #fileRoots: string[];

  /** Throws `InvalidUriError` (lib/storage.ts) for a malformed root. */
  constructor(roots: string[]) {
    this.roots = roots.map(normaliseRoot);
    this.#fileRoots = this.roots.filter((r) => r.startsWith("file://"))
      .map((r) => (parseUri(r) as { path: string }).path);
  }

  /**
   * Throws {@link ApiError} 403 `forbidden` if `uri` (canonical, from `formatUri(parseUri(…))`)
   * lies outside every root, by name or, for files, by real path; 400 `bad_request` if a local
   * object there is not a regular file. Nothing of what the file holds is ever in the message.
   */
  async check(field: string, uri: string): Promise<void> {
    if (!this.roots.some((r) => uri.startsWith(r))) throw this.#outside(field, uri);
    const loc = parseUri(uri);
    if (loc.scheme !== "file") return;
    let real: string;
    try {
      real = await resolveReal(loc.path);
    } catch (e) {
      throw new ApiError(
        "bad_request",
        `${field} ${uri} cannot be resolved (${(e as Error).name}): check the links on its path`,
        { field, uri },
      );
    }
    if (!await this.#underFileRoot(real)) throw this.#outside(field, uri, true);
    if (uri.endsWith("/")) return; // a prefix: the caller refuses it with its own message
    const kind = await kindAt(real);
    if (kind !== null && kind !== "file") {
      throw new ApiError(
        "bad_request",
        `${field} ${uri} is ${kind}, not a regular file: give the URI of a file` +
          (field === "output" ? " to create" : ""),
        { field, uri },
      );
    }
  }

  async #underFileRoot(real: string): Promise<boolean> {
    for (const root of this.#fileRoots) {
      // Resolved at each check: a root may be created, or its links changed, after start.
      let r: string;
      try {
        r = trimSlash(await resolveReal(root));
      } catch {
        continue;
      }
      if (real === r || real.startsWith(r === "/" ? r : r + "/")) return true;
    }
    return false;
  }

  #outside(field: string, uri: string, viaLink = false): ApiError {
    return new ApiError(
      "forbidden",
      this.roots.length
        ? `${field} ${uri} is outside the allowed roots (${this.roots.join(", ")})` +
          (viaLink ? ": a link on its path leads out of them" : "")
        : `${field} ${uri} is not allowed: no storage roots are configured ` +
          "(set DATARATER_ALLOWED_ROOTS to a comma-separated list such as s3://bucket/)",
      { field, uri },
    );
  }
}
