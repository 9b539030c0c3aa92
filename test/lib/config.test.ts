import { expect, test } from "vitest";
import { ConfigError, parseTrainConfig } from "../../lib/config.ts";

test("fills documented defaults (population 8, unroll 2, wasm backend)", () => {
  const c = parseTrainConfig({
    data: { train: "s3://b/train/", heldout: "s3://b/heldout/" },
    output: "/tmp/run",
  });
  expect(c.meta.population).toBe(8);
  expect(c.meta.unroll).toBe(2);
  expect(c.backend).toBe("wasm");
  expect(c.data.idField).toBe("id");
});

test("names every bad field and what was expected", () => {
  let err: ConfigError | undefined;
  try {
    parseTrainConfig({
      data: { train: "http://x/y" },
      output: 3,
      meta: { population: 0 },
      rater: { dModel: 10, heads: 3 },
    });
  } catch (e) {
    err = e as ConfigError;
  }
  expect(err).toBeInstanceOf(ConfigError);
  const paths = err!.issues.map((i) => i.path);
  expect(paths).toEqual(
    expect.arrayContaining([
      "data.train",
      "data.heldout",
      "output",
      "meta.population",
      "rater.heads",
    ]),
  );
  expect(err!.message).toMatch(/data\.train: expected s3:\/\/bucket\/key/);
});
