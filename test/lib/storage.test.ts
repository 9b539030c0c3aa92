import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  configureS3,
  deleteObject,
  InvalidUriError,
  list,
  NotFoundError,
  parseUri,
  PreconditionFailedError,
  readBytes,
  readText,
  stat,
  writeObject,
} from "../../lib/storage.ts";
import { type S3Server, startS3Server } from "../../lib/s3-server.ts";

let s3: S3Server;
let tmp: string;

beforeAll(async () => {
  tmp = await Deno.makeTempDir({ prefix: "storage-test-" });
  s3 = await startS3Server({ dir: `${tmp}/s3`, buckets: ["test-bucket"] });
  configureS3(s3.settings);
});

afterAll(async () => {
  await s3.stop();
  await Deno.remove(tmp, { recursive: true });
});

describe("parseUri", () => {
  test("splits s3 URIs into bucket and key", () => {
    expect(parseUri("s3://my-bucket/a/b.jsonl")).toEqual({
      scheme: "s3",
      bucket: "my-bucket",
      key: "a/b.jsonl",
    });
  });
  test("resolves bare paths and keeps a trailing slash as a prefix marker", () => {
    expect(parseUri("/x/y/")).toEqual({ scheme: "file", path: "/x/y/" });
    expect(parseUri("file:///x/y.txt")).toEqual({
      scheme: "file",
      path: "/x/y.txt",
    });
  });
  test("rejects other schemes and bad bucket names with the reason", () => {
    expect(() => parseUri("http://example.com/x")).toThrow(InvalidUriError);
    expect(() => parseUri("s3://Bad_Bucket/x")).toThrow(/bucket names/);
  });
});

for (const kind of ["file", "s3"] as const) {
  describe(`${kind} storage`, () => {
    const base = () => (kind === "s3" ? "s3://test-bucket/t" : `${tmp}/files`);

    test("round-trips bytes and text and reports size", async () => {
      const bytes = new Uint8Array([0, 1, 2, 255]);
      await writeObject(`${base()}/bin`, bytes);
      expect(await readBytes(`${base()}/bin`)).toEqual(bytes);
      await writeObject(`${base()}/txt`, "héllo");
      expect(await readText(`${base()}/txt`)).toBe("héllo");
      expect((await stat(`${base()}/txt`))?.size).toBe(6);
    });

    test("streams a body in", async () => {
      await writeObject(
        `${base()}/stream`,
        new Blob(["a".repeat(100_000)]).stream(),
      );
      expect((await readText(`${base()}/stream`)).length).toBe(100_000);
    });

    test("missing objects: read throws NotFoundError, stat is null, delete is a no-op", async () => {
      await expect(readText(`${base()}/missing`)).rejects.toBeInstanceOf(
        NotFoundError,
      );
      expect(await stat(`${base()}/missing`)).toBeNull();
      await deleteObject(`${base()}/missing`);
    });

    test("lists a prefix in key order", async () => {
      for (const name of ["c", "a", "b/nested"]) {
        await writeObject(`${base()}/list/${name}`, name);
      }
      const uris = (await Array.fromAsync(list(`${base()}/list/`))).map((o) =>
        o.uri.split("/list/")[1]
      );
      expect(uris).toEqual(["a", "b/nested", "c"]);
    });
  });
}

test("file create-only write refuses to overwrite and leaves the original", async () => {
  const uri = `${tmp}/files/once`;
  await writeObject(uri, "first", { ifNoneMatch: "*" });
  await expect(writeObject(uri, "second", { ifNoneMatch: "*" })).rejects
    .toBeInstanceOf(
      PreconditionFailedError,
    );
  expect(await readText(uri)).toBe("first");
  const leftovers = (await Array.fromAsync(Deno.readDir(`${tmp}/files`)))
    .filter((e) => e.name.endsWith(".tmp"));
  expect(leftovers).toEqual([]);
});

test("s3 listing pages through truncated results (continuation tokens)", async () => {
  await Promise.all(
    Array.from(
      { length: 25 },
      (_, i) => writeObject(`s3://test-bucket/page/${i}`, String(i)),
    ),
  );
  const all = await Array.fromAsync(
    list("s3://test-bucket/page/", { pageSize: 10 }),
  );
  expect(all.length).toBe(25);
  expect(new Set(all.map((o) => o.uri)).size).toBe(25);
});
