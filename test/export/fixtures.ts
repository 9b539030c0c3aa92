/**
 * Shared fixtures for the export tests: raters with non-trivial random weights (not the near-zero
 * init, so attention, LayerNorm and GELU all do visible work) and a set of varied records that
 * exercise every tokeniser edge: empty, one byte, exactly seqLen, longer, multi-byte UTF-8 (also
 * cut mid-character by truncation), invalid UTF-8 and binary.
 */
import { quantileCalibration, type ScoreCalibration } from "../../lib/calibration.ts";
import type { RaterConfig } from "../../lib/config.ts";
import { RaterConfigSchema } from "../../lib/config.ts";
import type { ParamArrays } from "../../training/nn.ts";
import { initRaterArrays } from "../../training/rater.ts";
import { exportRaterOnnx, sha256Hex } from "../../training/export-onnx.ts";
import { Rng } from "../../training/rng.ts";

/** Rater parameters perturbed well away from init: gains 1±0.3, biases ±0.3, matrices std 0.25. */
export function randomRaterParams(rater: RaterConfig, seqLen: number, seed: number): ParamArrays {
  const rng = new Rng(seed);
  const params = initRaterArrays(rater, seqLen, rng);
  for (const p of Object.values(params)) {
    const std = p.shape.length === 1 ? 0.3 : 0.25;
    for (let i = 0; i < p.values.length; i++) p.values[i] += rng.normal() * std;
  }
  return params;
}

export function raterConfig(input: Partial<RaterConfig>): RaterConfig {
  return RaterConfigSchema.parse(input);
}

/** A calibration with no ties (so metadata round-trips carry real values). */
export function someCalibration(): ScoreCalibration {
  const rng = new Rng(7);
  return quantileCalibration(Array.from({ length: 500 }, () => rng.normal()));
}

/** {@link randomRaterParams} and the ONNX model exported from them (config digest of `tag`). */
export function randomRaterModel(
  rater: RaterConfig,
  seqLen: number,
  seed: number,
  tag: string,
): { params: ParamArrays; model: Uint8Array } {
  const params = randomRaterParams(rater, seqLen, seed);
  const model = exportRaterOnnx({
    params,
    rater,
    seqLen,
    calibration: someCalibration(),
    configDigest: sha256Hex(tag),
  });
  return { params, model };
}

/** At least `count` varied records (strings and raw byte arrays) for a model of `seqLen` bytes. */
export function variedRecords(
  seqLen: number,
  count: number,
  seed: number,
): (string | Uint8Array)[] {
  const rng = new Rng(seed);
  const fixed: (string | Uint8Array)[] = [
    "",
    "a",
    "\0",
    " ",
    new Uint8Array([0]),
    new Uint8Array([255]),
    "x".repeat(seqLen),
    "y".repeat(seqLen - 1),
    "z".repeat(seqLen + 1),
    "long ".repeat(seqLen),
    // A 3-byte character straddling the truncation point.
    "a".repeat(seqLen - 1) + "日本語",
    "wörld ünïcode 日本語 😀 emoji",
    "😀".repeat(seqLen),
    new Uint8Array([0xc3]), // lone UTF-8 lead byte
    new Uint8Array([0xff, 0xfe, 0xfd, 0x80, 0x80]), // never valid UTF-8
    new Uint8Array([0xed, 0xa0, 0x80]), // encoded surrogate (invalid)
    "\ufffd replacement char",
    "Subject: WIN $$$ NOW!!!\r\nContent-Type: text/html\r\n\r\n<html><b>click</b></html>",
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election",
    "=?utf-8?B?" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(3),
    "\t\n\r\v\f",
  ];
  const out = [...fixed];
  const alphabet =
    "abcdefghijklmnopqrstuvwxyz ABCDEFG.,;:!?0123456789äöüßéèñ日本語中文😀\n\t<>/\"'";
  const chars = Array.from(alphabet);
  while (out.length < count) {
    const kind = out.length % 3;
    const len = rng.int(seqLen * 2 + 1);
    if (kind === 0) {
      // Binary: random bytes, including zeros and invalid sequences.
      const b = new Uint8Array(len);
      for (let i = 0; i < len; i++) b[i] = rng.int(256);
      out.push(b);
    } else {
      let s = "";
      for (let i = 0; i < len; i++) s += chars[rng.int(chars.length)];
      out.push(s);
    }
  }
  return out;
}
