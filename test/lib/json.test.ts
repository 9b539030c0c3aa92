import { describe, expect, it } from "vitest";
import { canonicalJson, sameJson } from "../../lib/json.ts";

describe("canonical JSON", () => {
  it("sorts keys at every depth, keeps array order, and serialises dates as JSON does", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}',
    );
    expect(canonicalJson({ t: new Date(0) })).toBe('{"t":"1970-01-01T00:00:00.000Z"}');
    expect(canonicalJson([2, 1])).toBe("[2,1]");
    expect(canonicalJson("x")).toBe('"x"');
  });

  it("sameJson ignores key order but not values, array order or undefined-vs-missing keys", () => {
    expect(sameJson({ a: 1, b: { c: 2, d: 3 } }, { b: { d: 3, c: 2 }, a: 1 })).toBe(true);
    expect(sameJson({ a: 1 }, { a: 2 })).toBe(false);
    expect(sameJson([1, 2], [2, 1])).toBe(false);
    // JSON drops undefined members, so a missing optional field equals an undefined one.
    expect(sameJson({ a: 1, b: undefined }, { a: 1 })).toBe(true);
    expect(sameJson({ a: { b: 1 } }, { a: { b: 1, c: 0 } })).toBe(false);
  });
});
