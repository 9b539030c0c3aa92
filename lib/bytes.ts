/**
 * Byte-level tokenisation shared by the rater, the learners and the ONNX export: a record is its
 * UTF-8 bytes, truncated to `seqLen` (the head is kept: for prose and email the start says most
 * about the kind of record), padded with 0 and masked.
 *
 * @example
 * ```ts
 * const batch = encodeBatch(["hello", "wörld"], 8);
 * batch.tokens; // Int32Array of 2*8 byte values
 * batch.mask;   // Float32Array: 1 where a byte is real
 * ```
 */

/** Byte vocabulary: 256 byte values. The LM's input also uses BOS = 256. */
export const BYTE_VOCAB = 256;
export const BOS = 256;
export const LM_INPUT_VOCAB = 257;

export interface ByteBatch {
  /** [batch, seqLen] byte values (0 where padded). */
  tokens: Int32Array;
  /** [batch, seqLen] 1 where the byte is real, 0 where padded. */
  mask: Float32Array;
  /** Real bytes per record (≥ 1: an empty record is given one 0 byte so pooling is defined). */
  lengths: Int32Array;
  batch: number;
  seqLen: number;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of a record, truncated to `seqLen`. */
export function recordBytes(
  text: string | Uint8Array,
  seqLen: number,
): Uint8Array {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  return bytes.length > seqLen ? bytes.subarray(0, seqLen) : bytes;
}

/**
 * The first `seqLen` bytes of a text's UTF-8 encoding, without encoding the rest (records can be
 * far longer than the model looks). `encodeInto` stops at a whole character, so it is given up to
 * 3 spare bytes: the result is exactly `encode(text).subarray(0, seqLen)`, as the tokenizer cuts.
 */
export function headBytes(text: string, seqLen: number): Uint8Array {
  if (text.length * 3 <= seqLen) return encoder.encode(text); // surely short: no cut needed
  const buf = new Uint8Array(seqLen + 3);
  const { written } = encoder.encodeInto(text, buf);
  return buf.subarray(0, Math.min(written, seqLen));
}

/** Encodes records into a padded, masked batch. */
export function encodeBatch(
  texts: readonly (string | Uint8Array)[],
  seqLen: number,
): ByteBatch {
  const batch = texts.length;
  const tokens = new Int32Array(batch * seqLen);
  const mask = new Float32Array(batch * seqLen);
  const lengths = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const bytes = recordBytes(texts[b], seqLen);
    const n = Math.max(1, bytes.length);
    lengths[b] = n;
    tokens.set(bytes, b * seqLen);
    mask.fill(1, b * seqLen, b * seqLen + n);
  }
  return { tokens, mask, lengths, batch, seqLen };
}

/**
 * LM inputs for next-byte prediction: input at position t is byte t-1 (BOS at t = 0), the target is
 * byte t, and the loss mask is the batch's mask.
 */
export function lmInputs(batch: ByteBatch): Int32Array {
  const { tokens, seqLen } = batch;
  const inputs = new Int32Array(tokens.length);
  for (let b = 0; b < batch.batch; b++) {
    const o = b * seqLen;
    inputs[o] = BOS;
    inputs.set(tokens.subarray(o, o + seqLen - 1), o + 1);
  }
  return inputs;
}

/** The chunks one after another in one new array (`total`: their summed length, when known). */
export function concatBytes(
  chunks: Uint8Array[],
  total = chunks.reduce((n, c) => n + c.length, 0),
): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
