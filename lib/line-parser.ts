/**
 * Parses long JSON lines in a Web Worker. Joining, checking, decoding and parsing a line near the
 * 64 MiB limit takes seconds here; on the main thread that stalls `/healthz` past the liveness
 * probe's timeout. Only receiving the parsed value (a structured clone) stays on the main thread.
 *
 * @example
 * ```ts
 * const parser = new LineParser();
 * try {
 *   const parsed = await parser.parse([new TextEncoder().encode('{"id":"a","text":"b"}')]);
 * } finally {
 *   parser.close();
 * }
 * ```
 */

/** A line to parse: the bytes of `parts` in order, a trailing `\r` dropped (buffers transferred). */
export interface ParseRequest {
  id: number;
  parts: ArrayBuffer[];
  /** With `textHead`: the value's field `textField`, if a string, is cut to its head. */
  textField?: string;
  /** See `ReadRecordsOptions.textHead` in lib/records.ts. */
  textHead?: number;
}

/**
 * The parsed value and whether the line was valid UTF-8 (bytes, and the whole text's escapes), or
 * JSON.parse's error message.
 */
export type ParseReply =
  | { id: number; ok: true; value: unknown; invalidUtf8: boolean }
  | { id: number; ok: false; message: string };

const WORKER_URL = new URL("./line-parse-worker.ts", import.meta.url);

/** One worker, started on the first line and stopped by {@link LineParser.close}. */
export class LineParser {
  #worker: Worker | null = null;
  #next = 0;
  #pending = new Map<number, { resolve: (r: ParseReply) => void; reject: (e: Error) => void }>();

  #start(): Worker {
    const worker = new Worker(WORKER_URL.href, { type: "module" });
    worker.onmessage = (e: MessageEvent<ParseReply>) => {
      const waiter = this.#pending.get(e.data.id);
      this.#pending.delete(e.data.id);
      waiter?.resolve(e.data);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(new Error(`the line-parsing worker failed: ${e.message}`));
    };
    return worker;
  }

  #fail(error: Error): void {
    for (const waiter of this.#pending.values()) waiter.reject(error);
    this.#pending.clear();
    this.#worker?.terminate();
    this.#worker = null;
  }

  /**
   * Parses one line given as its pieces (the pieces are joined in the worker). Each piece that is
   * a view of its whole buffer is handed over to the worker, so the caller must not use it again;
   * other pieces (views of a part of a buffer, which may be in use elsewhere) are copied.
   */
  parse(
    parts: Uint8Array[],
    options: { textField?: string; textHead?: number } = {},
  ): Promise<ParseReply> {
    this.#worker ??= this.#start();
    const buffers = parts.map((p) =>
      p.byteOffset === 0 && p.buffer instanceof ArrayBuffer && p.byteLength === p.buffer.byteLength
        ? p.buffer
        : p.slice().buffer as ArrayBuffer
    );
    const id = this.#next++;
    const worker = this.#worker;
    return new Promise<ParseReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const msg: ParseRequest = { id, parts: buffers, ...options };
      worker.postMessage(msg, buffers);
    });
  }

  /** Stops the worker; lines still being parsed are rejected. */
  close(): void {
    this.#fail(new Error("the line parser was closed"));
  }
}
