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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** As `textHeadOf` in lib/records.ts (not imported: this worker loads none of the reader). */
function textHeadOf(text: string, bytes: number): string {
  const code = text.charCodeAt(bytes - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? bytes + 1 : bytes);
}

scope.onmessage = (e) => {
  const { id, parts, textField, textHead } = e.data;
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
    let invalidUtf8 = !isUtf8(bytes);
    const value = JSON.parse(decoder.decode(bytes));
    if (textHead !== undefined && textField !== undefined && isObject(value)) {
      const text = value[textField];
      if (typeof text === "string" && text.length > textHead) {
        // Judged on the whole text: the head sent back may not show a lone surrogate.
        if (!text.isWellFormed()) invalidUtf8 = true;
        value[textField] = textHeadOf(text, textHead);
      }
    }
    reply = { id, ok: true, value, invalidUtf8 };
  } catch (error) {
    reply = { id, ok: false, message: (error as Error).message };
  }
  scope.postMessage(reply);
};
