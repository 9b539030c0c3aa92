/**
 * The line-parsing worker of {@link LineParser} (lib/line-parser.ts): checks a long JSON line's
 * UTF-8, decodes and parses it off the main thread. Imports nothing of the reader, so it starts fast.
 */
import { isUtf8 } from "node:buffer";
import type { ParseReply, ParseRequest } from "./line-parser.ts";

const decoder = new TextDecoder("utf-8");

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<ParseRequest>) => void) | null;
  postMessage(message: ParseReply): void;
};

scope.onmessage = (e) => {
  const { id, parts } = e.data;
  let reply: ParseReply;
  try {
    let length = 0;
    for (const p of parts) length += p.byteLength;
    const joined = new Uint8Array(length);
    let offset = 0;
    for (const p of parts) {
      joined.set(new Uint8Array(p), offset);
      offset += p.byteLength;
    }
    const bytes = length && joined[length - 1] === 0x0d ? joined.subarray(0, length - 1) : joined;
    const invalidUtf8 = !isUtf8(bytes);
    const value = JSON.parse(decoder.decode(bytes));
    reply = { id, ok: true, value, invalidUtf8 };
  } catch (error) {
    reply = { id, ok: false, message: (error as Error).message };
  }
  scope.postMessage(reply);
};
