/**
 * Owned temporary files and the sweep of a crashed owner's leftovers: a dead local pid's file is
 * removed after the grace period, a live one's (or one of another host) only past the age limit,
 * names that are not ours never.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStorage } from "../../lib/storage.ts";
import {
  hostTag,
  pidAlive,
  sweepStaleTempFiles,
  tempFileName,
  tempFileOwner,
} from "../../lib/tempfiles.ts";

let dir: string;
beforeEach(async () => {
  dir = await Deno.makeTempDir({ prefix: "tempfiles-" });
});
afterEach(async () => {
  await Deno.remove(dir, { recursive: true });
});

/** The pid of a process that has exited (so, until reused, no process has it). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

async function touch(name: string, ageMs: number): Promise<void> {
  await Deno.writeTextFile(`${dir}/${name}`, "partial");
  const t = new Date(Date.now() - ageMs);
  await Deno.utime(`${dir}/${name}`, t, t);
}

async function names(): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

describe("tempFileName", () => {
  it("records this process's pid and host, with an unguessable part", () => {
    const a = tempFileName(".out.jsonl");
    const b = tempFileName(".out.jsonl");
    expect(a).not.toBe(b);
    expect(a).toMatch(/^\.out\.jsonl\.\d+\.[A-Za-z0-9-]+\.[0-9a-f]{16}\.tmp$/);
    expect(tempFileOwner(a)).toEqual({ pid: Deno.pid, host: hostTag() });
    expect(tempFileOwner(".out.jsonl.123.0.tmp")).toBeNull();
  });

  it("fits in a name of at most 255 bytes whatever the stem, so any valid name can be written", async () => {
    for (const stem of [".".repeat(1) + "a".repeat(254), "é".repeat(127), "😀".repeat(60)]) {
      const name = tempFileName(stem);
      expect(new TextEncoder().encode(name).length).toBeLessThanOrEqual(255);
      expect(tempFileOwner(name)).toEqual({ pid: Deno.pid, host: hostTag() });
    }
    // The end to end case: FileStorage's temporary file for a 250-byte output name.
    const out = `${dir}/${"o".repeat(250)}`;
    await new FileStorage().write(out, "x", { ifNoneMatch: "*" });
    expect(await Deno.readTextFile(out)).toBe("x");
  });

  it("pidAlive tells a running process from an exited one", async () => {
    expect(pidAlive(Deno.pid)).toBe(true);
    expect(pidAlive(await deadPid())).toBe(false);
    expect(pidAlive(0)).toBe(false);
  });
});

describe("sweepStaleTempFiles", () => {
  it("removes a dead local writer's file past the grace period, and nothing else", async () => {
    const dead = await deadPid();
    const host = hostTag();
    const deadOld = `.m.jsonl.${dead}.${host}.0123456789abcdef.tmp`;
    const deadFresh = `.n.jsonl.${dead}.${host}.0123456789abcdef.tmp`;
    const liveOld = `.o.jsonl.${Deno.pid}.${host}.0123456789abcdef.tmp`;
    const otherHost = `.p.jsonl.${dead}.elsewhere-1.0123456789abcdef.tmp`;
    await touch(deadOld, 5 * 60_000);
    await touch(deadFresh, 1000);
    await touch(liveOld, 5 * 60_000);
    await touch(otherHost, 5 * 60_000);
    await touch(".q.jsonl.99.0.tmp", 48 * 3600_000); // not a name tempFileName makes
    await touch("m.jsonl", 48 * 3600_000);
    expect(await sweepStaleTempFiles(dir, ".")).toEqual([deadOld]);
    expect(await names()).toEqual(
      [".q.jsonl.99.0.tmp", deadFresh, liveOld, "m.jsonl", otherHost].sort(),
    );
  });

  it("removes any owned file past the age limit, and only names with the prefix", async () => {
    const host = hostTag();
    const liveAncient = `datarater-manifest-x.${Deno.pid}.${host}.0123456789abcdef.tmp`;
    const otherAncient = `datarater-manifest-y.1.elsewhere.0123456789abcdef.tmp`;
    const otherPrefix = `.z.${Deno.pid}.${host}.0123456789abcdef.tmp`;
    await touch(liveAncient, 25 * 3600_000);
    await touch(otherAncient, 25 * 3600_000);
    await touch(otherPrefix, 25 * 3600_000);
    expect(await sweepStaleTempFiles(dir, "datarater-manifest-")).toEqual(
      [liveAncient, otherAncient].sort(),
    );
    expect(await names()).toEqual([otherPrefix]);
  });

  it("a missing folder is nothing to sweep", async () => {
    expect(await sweepStaleTempFiles(`${dir}/nope`, ".")).toEqual([]);
  });
});
