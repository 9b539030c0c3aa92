/**
 * The CEL subset the fake API server evaluates (`test/support/cel.ts`): what the CRD's rules need,
 * with CEL's semantics where they matter (laziness, absent fields, integer arithmetic).
 */
import { describe, expect, it } from "vitest";
import { CelError, evaluateCel } from "../support/cel.ts";

describe("evaluateCel", () => {
  it("evaluates arithmetic and comparisons with CEL's precedence", () => {
    expect(evaluateCel("1 + 2 * 3 == 7", null)).toBe(true);
    expect(evaluateCel("(1 + 2) * 3", null)).toBe(9);
    expect(evaluateCel("7 % 3 + 10 / 4", null)).toBe(3); // 1 + 2: integer division
    expect(evaluateCel("-7 / 2", null)).toBe(-3); // truncates toward zero
    expect(evaluateCel("2 < 3 && 3 <= 3 && 4 > 3 && 3 >= 4 == false", null)).toBe(true);
    expect(evaluateCel("'ab' + 'c' == \"abc\"", null)).toBe(true);
  });

  it("reads fields of self and tests their presence with has()", () => {
    const self = { a: 6, b: { c: 4 }, z: 0 };
    expect(evaluateCel("self.a % self.b.c == 0", self)).toBe(false);
    expect(evaluateCel("self.a % 3 == 0", self)).toBe(true);
    expect(evaluateCel("has(self.a) && has(self.b.c) && !has(self.x)", self)).toBe(true);
    expect(evaluateCel("has(self.z)", self)).toBe(true); // present though falsy
  });

  it("evaluates only the arm of ?: that is taken, and short-circuits && and ||", () => {
    expect(evaluateCel("(has(self.x) ? self.x : 64) % 4 == 0", {})).toBe(true);
    expect(evaluateCel("(has(self.x) ? self.x : 64) % 4 == 0", { x: 30 })).toBe(false);
    expect(evaluateCel("!has(self.x) || self.x > 0", {})).toBe(true);
    expect(evaluateCel("has(self.x) && self.x > 0", {})).toBe(false);
  });

  it("fails, as CEL does, on an absent field, a zero divisor, a type mismatch or unknown syntax", () => {
    expect(() => evaluateCel("self.x == 1", {})).toThrow(/no such key: x/);
    expect(() => evaluateCel("self.a.b == 1", { a: 1 })).toThrow(/no such key: b/);
    expect(() => evaluateCel("self.a % self.b == 0", { a: 1, b: 0 })).toThrow(/modulus by zero/);
    expect(() => evaluateCel("1 + 'a'", null)).toThrow(CelError);
    expect(() => evaluateCel("self.all(x, x > 0)", [1])).toThrow(CelError);
    expect(() => evaluateCel("size(self) > 0", "a")).toThrow(CelError);
    expect(() => evaluateCel("1 +", null)).toThrow(CelError);
  });
});
