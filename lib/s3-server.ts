/**
 * The embedded S3-compatible store: s3rver (the real S3 wire protocol over a local folder) in a
 * Node child process. The demo uses it as its default store and the tests use it as a real S3 peer.
 *
 * Known limits of s3rver: it ignores conditional writes (`If-None-Match`, `If-Match`), so code that
 * relies on them is tested with a fault-injecting wrapper as well. Why Node: `s3-server-child.cjs`.
 *
 * @example
 * ```ts
 * const s3 = await startS3Server({ dir: "/tmp/s3", buckets: ["datarater"] });
 * const storage = createStorage({ s3: s3.settings });
 * // ... s3://datarater/... URIs now work through `storage` ...
 * storage.close();
 * await s3.stop();
 * ```
 */
import type { S3Settings } from "./storage.ts";
import { track } from "./children.ts";

/** A running embedded S3 server. */
export interface S3Server {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  port: number;
  /** Settings for `createStorage({ s3 })` or `new S3Storage({ settings })` (any credentials are accepted). */
  settings: S3Settings;
  /** Stops the server and waits for the process to exit. */
  stop(): Promise<void>;
}

/** Options for {@link startS3Server}. */
export interface S3ServerOptions {
  /** Folder that holds the buckets (created if missing). */
  dir: string;
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
  /** Buckets to create at start. */
  buckets?: string[];
}

const CHILD = new URL("./s3-server-child.cjs", import.meta.url);

/** Starts s3rver under Node (`node` must be on PATH) and waits until it listens. */
export async function startS3Server(
  options: S3ServerOptions,
): Promise<S3Server> {
  await Deno.mkdir(options.dir, { recursive: true });
  const child = track(new Deno.Command("node", {
    args: [
      "--openssl-legacy-provider",
      CHILD.pathname,
      options.dir,
      String(options.port ?? 0),
      "127.0.0.1",
      (options.buckets ?? []).join(","),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    // Resolve `s3rver` from this project's node_modules whatever the caller's cwd.
    cwd: new URL("..", import.meta.url).pathname,
  }).spawn());
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const timeout = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (!buffered.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) {
        const err = await new Response(child.stderr).text();
        throw new Error(
          `embedded S3 server exited before listening: ${err.trim() || "no output"}`,
        );
      }
      buffered += value;
    }
  } finally {
    clearTimeout(timeout);
  }
  reader.releaseLock();
  // Keep draining so the child never blocks on a full pipe.
  child.stdout.pipeTo(new WritableStream()).catch(() => {});
  child.stderr.pipeTo(new WritableStream()).catch(() => {});
  const { port } = JSON.parse(buffered.split("\n")[0]) as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  const stdin = child.stdin.getWriter();
  let stopped: Promise<void> | null = null;
  return {
    endpoint,
    port,
    settings: {
      endpoint,
      region: "us-east-1",
      accessKeyId: "S3RVER",
      secretAccessKey: "S3RVER",
    },
    stop() {
      stopped ??= (async () => {
        await stdin.close().catch(() => {}); // the child exits when its stdin closes
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await child.status;
        clearTimeout(timer);
      })();
      return stopped;
    },
  };
}
