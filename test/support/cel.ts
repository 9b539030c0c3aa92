/**
 * A small evaluator for the subset of CEL (the Common Expression Language of a CRD's
 * `x-kubernetes-validations` rules) that our CRD uses, so the fake API server can enforce the rules
 * it reads from the CRD instead of a second copy of them.
 *
 * Supported: integer, string, boolean and null literals; `self` and field selection (`self.a.b`);
 * `has(self.a)`; `!` and unary `-`; `* / %`, `+ -`, `< <= > >= == !=`, `&&`, `||`, `c ? a : b`;
 * parentheses. Anything else throws {@link CelError}, as does selecting an absent field (CEL's
 * "no such key"), which the apiserver reports as a failed rule. Integer division and modulo truncate
 * toward zero and fail on a zero divisor, as in CEL.
 *
 * @example
 * ```ts
 * evaluateCel("self.a % self.b == 0", { a: 6, b: 3 }); // true
 * ```
 */

/** An expression outside the supported subset, or an evaluation error (no such key, division by zero). */
export class CelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CelError";
  }
}

type Token =
  | { kind: "num"; value: number }
  | { kind: "str"; value: string }
  | { kind: "id"; value: string }
  | { kind: "op"; value: string };

const OPERATORS = ["&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!"];
const PUNCTUATION = ["(", ")", ".", "?", ":", ","];

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    if (/\s/.test(c)) {
      i++;
    } else if (/[0-9]/.test(c)) {
      const m = /^[0-9]+/.exec(source.slice(i))![0];
      tokens.push({ kind: "num", value: Number(m) });
      i += m.length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(source.slice(i))![0];
      tokens.push({ kind: "id", value: m });
      i += m.length;
    } else if (c === "'" || c === '"') {
      const end = source.indexOf(c, i + 1);
      if (end < 0) throw new CelError(`unterminated string in ${source}`);
      tokens.push({ kind: "str", value: source.slice(i + 1, end) });
      i = end + 1;
    } else {
      const op = [...OPERATORS, ...PUNCTUATION].find((o) => source.startsWith(o, i));
      if (!op) throw new CelError(`unsupported character ${JSON.stringify(c)} in ${source}`);
      tokens.push({ kind: "op", value: op });
      i += op.length;
    }
  }
  return tokens;
}

/** Binding power of each binary operator (CEL's precedence). */
const BINARY: Record<string, number> = {
  "||": 1,
  "&&": 2,
  "==": 3,
  "!=": 3,
  "<": 3,
  "<=": 3,
  ">": 3,
  ">=": 3,
  "+": 4,
  "-": 4,
  "*": 5,
  "/": 5,
  "%": 5,
};

const ABSENT = Symbol("absent");

/** A parsed sub-expression: evaluates it (arms of `?:`, `&&`, `||` only when needed). */
type Ev = () => unknown;

/** Evaluates `rule` with `self` bound to `self`. Throws {@link CelError}. */
export function evaluateCel(rule: string, self: unknown): unknown {
  const tokens = tokenize(rule);
  let pos = 0;
  const peek = () => tokens[pos];
  const isOp = (v: string) => peek()?.kind === "op" && peek()!.value === v;
  const expect = (v: string) => {
    if (!isOp(v)) throw new CelError(`expected ${v} at token ${pos} of ${rule}`);
    pos++;
  };

  const primary = (): Ev => {
    const t = tokens[pos++];
    if (!t) throw new CelError(`unexpected end of ${rule}`);
    if (t.kind === "num" || t.kind === "str") return () => t.value;
    if (t.kind === "op" && t.value === "(") {
      const v = ternary();
      expect(")");
      return v;
    }
    if (t.kind === "op" && (t.value === "!" || t.value === "-")) {
      const operand = postfix(primary());
      return () => {
        const v = operand();
        if (t.value === "!") {
          if (typeof v !== "boolean") throw new CelError(`! of a non-bool in ${rule}`);
          return !v;
        }
        if (typeof v !== "number") throw new CelError(`- of a non-int in ${rule}`);
        return -v;
      };
    }
    if (t.kind === "id") {
      if (t.value === "true") return () => true;
      if (t.value === "false") return () => false;
      if (t.value === "null") return () => null;
      if (t.value === "self") return () => self;
      if (t.value === "has") {
        expect("(");
        const v = postfix(primary(), true);
        expect(")");
        return () => v() !== ABSENT;
      }
    }
    throw new CelError(`unsupported expression at token ${pos - 1} of ${rule}`);
  };

  /** Field selections after a primary; inside `has()` the last one tests presence. */
  const postfix = (base: Ev, presence = false): Ev => {
    const fields: string[] = [];
    while (isOp(".")) {
      pos++;
      const field = tokens[pos++];
      if (field?.kind !== "id") throw new CelError(`expected a field name in ${rule}`);
      fields.push(field.value);
    }
    if (fields.length === 0) return base;
    return () => {
      let v = base();
      for (const [i, field] of fields.entries()) {
        if (v === null || typeof v !== "object" || Array.isArray(v)) {
          throw new CelError(`no such key: ${field}`);
        }
        const obj = v as Record<string, unknown>;
        if (!(field in obj) || obj[field] === undefined) {
          if (presence && i === fields.length - 1) return ABSENT;
          throw new CelError(`no such key: ${field}`);
        }
        v = obj[field];
      }
      return v;
    };
  };

  const binary = (minPower: number): Ev => {
    let left = postfix(primary());
    for (;;) {
      const t = peek();
      const power = t?.kind === "op" ? BINARY[t.value] : undefined;
      if (power === undefined || power < minPower) return left;
      pos++;
      const op = t!.value as string;
      const right = binary(power + 1);
      const l = left;
      left = () => apply(op, l, right, rule);
    }
  };

  const ternary = (): Ev => {
    const cond = binary(1);
    if (!isOp("?")) return cond;
    pos++;
    const a = ternary();
    expect(":");
    const b = ternary();
    return () => {
      const c = cond();
      if (typeof c !== "boolean") throw new CelError(`?: on a non-bool in ${rule}`);
      return c ? a() : b();
    };
  };

  const expression = ternary();
  if (pos !== tokens.length) throw new CelError(`unexpected token ${pos} in ${rule}`);
  return expression();
}

function apply(op: string, left: Ev, right: Ev, rule: string): unknown {
  const bool = (v: unknown) => {
    if (typeof v !== "boolean") throw new CelError(`${op} of a non-bool in ${rule}`);
    return v;
  };
  // Short-circuit, so `!has(self.a) || self.a > 0` never reads an absent field.
  if (op === "&&") return bool(left()) && bool(right());
  if (op === "||") return bool(left()) || bool(right());
  const a = left();
  const b = right();
  if (op === "==") return JSON.stringify(a) === JSON.stringify(b);
  if (op === "!=") return JSON.stringify(a) !== JSON.stringify(b);
  if (typeof a !== typeof b || (typeof a !== "number" && typeof a !== "string")) {
    throw new CelError(`no such overload: ${typeof a} ${op} ${typeof b} in ${rule}`);
  }
  if (typeof a === "string") {
    const s = b as string;
    if (op === "+") return a + s;
    if (op === "<") return a < s;
    if (op === "<=") return a <= s;
    if (op === ">") return a > s;
    if (op === ">=") return a >= s;
    throw new CelError(`no such overload: string ${op} string in ${rule}`);
  }
  const x = a as number;
  const y = b as number;
  switch (op) {
    case "+":
      return x + y;
    case "-":
      return x - y;
    case "*":
      return x * y;
    case "/":
    case "%":
      if (y === 0) throw new CelError(`${op === "/" ? "division" : "modulus"} by zero`);
      return op === "/" ? Math.trunc(x / y) : x % y;
    case "<":
      return x < y;
    case "<=":
      return x <= y;
    case ">":
      return x > y;
    case ">=":
      return x >= y;
  }
  throw new CelError(`unsupported operator ${op} in ${rule}`);
}
