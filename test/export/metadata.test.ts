/**
 * The export's metadata and I/O contract: what the scoring function reads back, and the clear
 * errors for anything that is not a DataRater export.
 */
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { describe, expect, it } from "vitest";
import {
  ExportError,
  exportRaterOnnx,
  META_KEYS,
  NotADataRaterModelError,
  RATER_FORMAT,
  readRaterMetadata,
  sha256Hex,
} from "../../training/export-onnx.ts";
import { randomRaterParams, raterConfig, someCalibration } from "./fixtures.ts";

const { onnx } = onnxProto;
const SEQ_LEN = 32;
const rater = raterConfig({ dModel: 16, layers: 1, heads: 2, ffn: 32 });
const calibration = someCalibration();
const configDigest = sha256Hex('{"seqLen":32}');

function exportDefault() {
  return exportRaterOnnx({
    params: randomRaterParams(rater, SEQ_LEN, 1),
    rater,
    seqLen: SEQ_LEN,
    calibration,
    configDigest,
  });
}

/** Re-encodes an exported model after `edit` changes its decoded ModelProto. */
function edited(edit: (m: ReturnType<typeof onnx.ModelProto.decode>) => void) {
  const m = onnx.ModelProto.decode(exportDefault());
  edit(m);
  return onnx.ModelProto.encode(m).finish();
}

describe("readRaterMetadata", () => {
  it("round-trips format, tokenizer, rater config, calibration and config digest", () => {
    const meta = readRaterMetadata(exportDefault());
    expect(meta).toEqual({
      format: RATER_FORMAT,
      tokenizer: { kind: "utf8-bytes", maxLength: SEQ_LEN, truncation: "head", pad: 0 },
      rater,
      calibration,
      configSha256: configDigest,
      seqLen: SEQ_LEN,
      scoring: { window: SEQ_LEN, stride: SEQ_LEN, aggregation: "mean" },
    });
  });

  it("carries the whole-record scoring spec (window, stride, aggregation) from the rater config", () => {
    const windowed = raterConfig({
      dModel: 16,
      layers: 1,
      heads: 2,
      ffn: 32,
      scoring: { stride: 20, aggregation: "min" },
    });
    const model = exportRaterOnnx({
      params: randomRaterParams(windowed, SEQ_LEN, 1),
      rater: windowed,
      seqLen: SEQ_LEN,
      calibration,
      configDigest,
    });
    const props = onnx.ModelProto.decode(model).metadataProps;
    const map = Object.fromEntries(props.map((p) => [p.key, p.value]));
    expect(JSON.parse(map[META_KEYS.scoring])).toEqual({
      window: SEQ_LEN,
      stride: 20,
      aggregation: "min",
    });
    expect(readRaterMetadata(model).scoring).toEqual({
      window: SEQ_LEN,
      stride: 20,
      aggregation: "min",
    });
    const tooLong = raterConfig({ ...windowed, scoring: { stride: 33, aggregation: "mean" } });
    expect(() =>
      exportRaterOnnx({
        params: randomRaterParams(tooLong, SEQ_LEN, 1),
        rater: tooLong,
        seqLen: SEQ_LEN,
        calibration,
        configDigest,
      })
    ).toThrow(/stride 33 is longer than the window/);
  });

  it("reads an export from before windows and patches as one window per record, one byte per position", () => {
    const old = edited((m) => {
      m.metadataProps = m.metadataProps.filter((p) => p.key !== META_KEYS.scoring).map((p) => {
        if (p.key !== META_KEYS.rater) return p;
        const { patch: _patch, scoring: _scoring, ...rest } = JSON.parse(p.value!);
        return { key: p.key, value: JSON.stringify(rest) };
      });
    });
    const meta = readRaterMetadata(old);
    expect(meta.scoring).toEqual({ window: SEQ_LEN, stride: SEQ_LEN, aggregation: "mean" });
    expect(meta.rater.patch).toBe(1);
  });

  it("stores each metadata value under its datarater.* key as a string", () => {
    const props = onnx.ModelProto.decode(exportDefault()).metadataProps;
    const map = Object.fromEntries(props.map((p) => [p.key, p.value]));
    expect(map[META_KEYS.format]).toBe("1");
    expect(JSON.parse(map[META_KEYS.tokenizer])).toEqual({
      kind: "utf8-bytes",
      maxLength: SEQ_LEN,
      truncation: "head",
      pad: 0,
    });
    expect(JSON.parse(map[META_KEYS.rater])).toEqual(rater);
    expect(JSON.parse(map[META_KEYS.calibration])).toEqual(calibration);
    expect(map[META_KEYS.configSha256]).toBe(configDigest);
  });

  it("rejects a valid ONNX model that is not a DataRater export, saying so", async () => {
    const identity = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 17 }],
      graph: {
        name: "identity",
        node: [{ opType: "Identity", input: ["x"], output: ["y"] }],
        input: [{
          name: "x",
          type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 2 }] } } },
        }],
        output: [{
          name: "y",
          type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 2 }] } } },
        }],
      },
    }).finish();
    // It really is a loadable ONNX model.
    await (await ort.InferenceSession.create(identity)).release();
    expect(() => readRaterMetadata(identity)).toThrow(NotADataRaterModelError);
    expect(() => readRaterMetadata(identity)).toThrow(
      /not a DataRater model: an ONNX model without "datarater.format" metadata/,
    );
  });

  it("rejects bytes that are not ONNX at all", () => {
    const notOnnx = new TextEncoder().encode('{"id": 1, "text": "a JSON line, not a model"}\n');
    expect(() => readRaterMetadata(notOnnx)).toThrow(NotADataRaterModelError);
    expect(() => readRaterMetadata(notOnnx)).toThrow(/not (an ONNX|a DataRater) model/);
    expect(() => readRaterMetadata(new Uint8Array([0xff, 0xff, 0xff]))).toThrow(
      /not an ONNX model \(protobuf decoding failed/,
    );
  });

  it("rejects a newer format version with a message to re-export", () => {
    const v2 = edited((m) => {
      m.metadataProps.find((p) => p.key === META_KEYS.format)!.value = "2";
    });
    expect(() => readRaterMetadata(v2)).toThrow(/format "2" is not supported.*re-export/);
  });

  it("rejects a model whose calibration metadata is malformed, naming the key", () => {
    const bad = edited((m) => {
      m.metadataProps.find((p) => p.key === META_KEYS.calibration)!.value = '{"samples":3}';
    });
    expect(() => readRaterMetadata(bad)).toThrow(/"datarater.calibration" is invalid: quantiles/);
  });

  it("rejects a model whose inputs do not match the tokenizer's length", () => {
    const bad = edited((m) => {
      m.graph!.input![0].type!.tensorType!.shape!.dim![1].dimValue = SEQ_LEN + 1;
    });
    expect(() => readRaterMetadata(bad)).toThrow(/I\/O does not match format 1/);
  });
});

describe("exportRaterOnnx", () => {
  it("declares tokens int32 [N, seqLen] and mask float32 [N, seqLen] in, scores float32 [N] out", async () => {
    const session = await ort.InferenceSession.create(exportDefault());
    expect(session.inputNames).toEqual(["tokens", "mask"]);
    expect(session.outputNames).toEqual(["scores"]);
    const [tokens, mask] = session.inputMetadata;
    const [scores] = session.outputMetadata;
    expect(tokens).toMatchObject({ isTensor: true, type: "int32", shape: ["N", SEQ_LEN] });
    expect(mask).toMatchObject({ isTensor: true, type: "float32", shape: ["N", SEQ_LEN] });
    expect(scores).toMatchObject({ isTensor: true, type: "float32", shape: ["N"] });
    await session.release();
  });

  it("is deterministic: the same rater exports to identical bytes (same sha256)", () => {
    expect(sha256Hex(exportDefault())).toBe(sha256Hex(exportDefault()));
  });

  it("scores an empty batch as an empty output", async () => {
    const session = await ort.InferenceSession.create(exportDefault());
    const out = await session.run({
      tokens: new ort.Tensor("int32", new Int32Array(0), [0, SEQ_LEN]),
      mask: new ort.Tensor("float32", new Float32Array(0), [0, SEQ_LEN]),
    });
    expect(out.scores.dims).toEqual([0]);
    await session.release();
  });

  it("refuses parameters that do not fit the rater config, naming the parameter", () => {
    // One byte per position, so positions = bytes in the message below.
    const rater = raterConfig({ dModel: 16, layers: 1, heads: 2, ffn: 32, patch: 1 });
    const params = randomRaterParams(rater, SEQ_LEN, 1);
    const base = { rater, seqLen: SEQ_LEN, calibration, configDigest };
    const { pos: _pos, ...missing } = params;
    expect(() => exportRaterOnnx({ ...base, params: missing })).toThrow(
      /parameter "pos" is missing/,
    );
    expect(() => exportRaterOnnx({ ...base, params, seqLen: 16 })).toThrow(
      /parameter "pos" has shape \[32,16\] but the rater config needs \[16,16\]/,
    );
    const nan = { ...params, "head.b": { shape: [1], values: Float32Array.of(NaN) } };
    const patched = randomRaterParams({ ...rater, patch: 4 }, SEQ_LEN, 1);
    expect(() =>
      exportRaterOnnx({ ...base, rater: { ...rater, patch: 4 }, params: patched, seqLen: 16 })
    ).toThrow(/parameter "pos" has shape \[8,16\] but the rater config needs \[4,16\]/);
    expect(() => exportRaterOnnx({ ...base, params: nan })).toThrow(/"head.b" contains NaN/);
    const extra = { ...params, "l0.attn.extra": { shape: [1], values: new Float32Array(1) } };
    expect(() => exportRaterOnnx({ ...base, params: extra })).toThrow(ExportError);
    expect(() => exportRaterOnnx({ ...base, params, configDigest: "abc" })).toThrow(
      /configDigest must be a lower-case sha256 hex digest/,
    );
  });
});

describe("sha256Hex", () => {
  it("matches the FIPS 180-2 test vector for 'abc'", () => {
    expect(sha256Hex(new TextEncoder().encode("abc"))).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    expect(sha256Hex("abc")).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });
});
