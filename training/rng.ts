/**
 * A small seeded PRNG whose whole state is one 32-bit integer, so checkpoints can store it and a
 * resumed run draws exactly the numbers the uninterrupted run would have.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * rng.next(); // in [0, 1)
 * const saved = rng.state; new Rng(0).state = saved;
 * ```
 */
export class Rng {
  state: number;

  constructor(seed: number) {
    // Mix the seed so nearby seeds give unrelated streams.
    this.state = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0;
  }

  /** Uniform in [0, 1) (mulberry32). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** `n` normal draws scaled by `std`, as a Float32Array. */
  normals(n: number, std: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * std;
    return out;
  }

  /** A derived generator: independent stream, this one advances by one draw. */
  fork(): Rng {
    return new Rng(Math.floor(this.next() * 2 ** 31));
  }
}
