/** `deno task serve`'s configuration: the listening address and the limits from the environment. */
import { describe, expect, it } from "vitest";
import { optionsFromEnv } from "../../functions/main.ts";

describe("deno task serve configuration", () => {
  it("listens on HOST (default 0.0.0.0, as in the container) and PORT", () => {
    expect(optionsFromEnv({})).toMatchObject({ hostname: "0.0.0.0", port: 8080 });
    expect(optionsFromEnv({ HOST: "127.0.0.1", PORT: "9000" })).toMatchObject({
      hostname: "127.0.0.1",
      port: 9000,
    });
    expect(optionsFromEnv({ HOST: "::1" }).hostname).toBe("::1");
    expect(() => optionsFromEnv({ HOST: " " })).toThrow(/^invalid configuration: HOST: /);
  });

  it("reads the body time limit", () => {
    expect(optionsFromEnv({ DATARATER_BODY_TIMEOUT_MS: "2500" }).app.bodyTimeoutMs).toBe(2500);
    expect(() => optionsFromEnv({ DATARATER_BODY_TIMEOUT_MS: "0" })).toThrow(
      /DATARATER_BODY_TIMEOUT_MS/,
    );
  });

  it("reads the per-request limits; an unset one keeps its default", () => {
    expect(optionsFromEnv({}).app.limits).toEqual({});
    expect(
      optionsFromEnv({
        DATARATER_MAX_ID_BYTES: "256",
        DATARATER_MAX_LINE_BYTES: "1048576",
        DATARATER_MAX_LINES: "1000",
        DATARATER_MAX_DECOMPRESSED_BYTES: "4096",
        DATARATER_MAX_EXPANSION: "8",
      }).app.limits,
    ).toEqual({
      maxIdBytes: 256,
      maxLineBytes: 1048576,
      maxLines: 1000,
      maxDecompressedBytes: 4096,
      maxExpansion: 8,
    });
    expect(() => optionsFromEnv({ DATARATER_MAX_ID_BYTES: "0" })).toThrow(/DATARATER_MAX_ID_BYTES/);
  });

  it("the server binds the HOST it is given", async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "functions/main.ts"],
      env: { HOST: "127.0.0.1", PORT: "0", DATARATER_ALLOWED_ROOTS: "file:///nonexistent/" },
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      reader.releaseLock();
      const listening = JSON.parse(out.split("\n")[0]);
      expect(listening).toMatchObject({ msg: "scoring function listening", hostname: "127.0.0.1" });
      const res = await fetch(`http://127.0.0.1:${listening.port}/healthz`);
      expect(await res.json()).toEqual({ status: "ok" });
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
  }, 60_000);
});
