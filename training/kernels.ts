/**
 * Every tfjs-wasm kernel this project replaces, in one place, installed once by the backend setup
 * (`useBackend("wasm")` in `training/backend.ts`) and by nothing else:
 *
 * - BatchMatMul. The stock kernel is slow in two ways, measured here (tfjs-backend-wasm 4.22, SIMD,
 *   one thread): with `transposeA`/`transposeB` set it falls from 10–25 GFLOP/s to 0.6–2 (and
 *   backpropagation through a product always asks for a transposed operand), and it sends every
 *   product with a batch dimension > 1 (attention and its gradients) to a scalar loop at ~2
 *   GFLOP/s while its 2-D path (XNNPACK) runs at 15–25. The replacement transposes explicitly
 *   and runs batched products as one 2-D product per batch entry. One kernel does both so that
 *   no second wrapper can stack on the first: results cannot depend on what was installed when.
 * - Identity. The stock kernel copies its input, and the engine runs it for every tensor it saves
 *   for a gradient (about a thousand per meta-step, half of them activation-sized). Tensors are
 *   immutable, so sharing the buffer with a reference count (what the Reshape kernel and the CPU
 *   backend's Identity already do) is equivalent, and saves the copies' time and memory.
 *
 * Each op's results are unchanged up to float32 summation order; only kernels are replaced.
 * Relies on tfjs-backend-wasm internals (pinned at 4.22.0); where they are missing, the batched
 * path falls back to the stock kernel.
 *
 * @example
 * ```ts
 * await tf.setBackend("wasm");
 * installWasmKernels();
 * ```
 */
import * as tf from "@tensorflow/tfjs";

/**
 * Marks a kernel function as this module's wrapper. A global symbol, not module state, so that a
 * second copy of this module (a test runner's fresh import) still sees the kernels as wrapped and
 * never wraps a wrapper.
 */
const WRAPPER = Symbol.for("datarater.wasmKernelWrapper");

/**
 * Wraps the wasm kernel `name` (keeping the stock set-up and disposal); the wrapper gets the stock
 * kernel to fall back on. A no-op when the kernel is already wrapped; false when no such kernel
 * is registered (the wasm backend was not imported).
 */
function wrapWasmKernel(
  name: string,
  wrap: (stock: tf.KernelConfig) => tf.KernelFunc,
): boolean {
  const stock = tf.getKernel(name, "wasm");
  if (!stock) return false;
  if ((stock.kernelFunc as unknown as Record<symbol, boolean>)[WRAPPER]) return true;
  const kernelFunc = Object.assign(wrap(stock), { [WRAPPER]: true });
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({
    kernelName: name,
    backendName: "wasm",
    setupFunc: stock.setupFunc,
    disposeFunc: stock.disposeFunc,
    kernelFunc,
  });
  return true;
}

/**
 * Installs the faster BatchMatMul and the sharing Identity on tfjs-wasm. Idempotent, in any
 * process state: a kernel already replaced is left alone. Throws if the wasm backend's kernels
 * are not registered (import `@tensorflow/tfjs-backend-wasm` first).
 */
export function installWasmKernels(): void {
  const transpose = tf.getKernel(tf.Transpose, "wasm");
  if (
    !transpose || !wrapWasmKernel(tf.BatchMatMul, fastBatchMatMul(transpose)) ||
    !wrapWasmKernel(tf.Identity, sharedIdentity)
  ) {
    throw new Error(
      "tfjs-wasm kernels are not registered: import @tensorflow/tfjs-backend-wasm first",
    );
  }
}

/** Whether BatchMatMul on wasm is this module's kernel (for tests and diagnostics). */
export function wasmKernelsInstalled(): boolean {
  const k = tf.getKernel(tf.BatchMatMul, "wasm");
  return Boolean(k && (k.kernelFunc as unknown as Record<symbol, boolean>)[WRAPPER]);
}

function sharedIdentity(stock: tf.KernelConfig): tf.KernelFunc {
  return (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === "string") return stock.kernelFunc(args);
    (args.backend as unknown as { incRef(id: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

/** The parts of tfjs-backend-wasm's backend object the batched product reaches into. */
interface WasmBackendInternals {
  wasm: {
    _malloc(bytes: number): number;
    _register_tensor(id: number, size: number, memoryOffset: number): void;
    _dispose_data(id: number): void;
    _BatchMatMul(
      aId: number,
      aShapePtr: number,
      aRank: number,
      bId: number,
      bShapePtr: number,
      bRank: number,
      transposeA: number,
      transposeB: number,
      outId: number,
    ): void;
    HEAP32: Int32Array;
  };
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } | undefined };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: "float32"): tf.TensorInfo;
  disposeData(dataId: unknown): boolean;
}

/** Below this many multiply-adds per product, the per-product set-up costs more than it saves. */
const MIN_SLICED_MACS = 4096;
/** Per wasm module: 6 int32s holding the shapes [1, m, k] and [1, k, n] passed to the kernel. */
const shapeScratch = new WeakMap<object, number>();

/**
 * BatchMatMul with the transposes done by the Transpose kernel and batched products sliced into
 * 2-D ones. With exactly one operand transposed, the layout is chosen for speed:
 *
 * - 2-D: transpose whichever operand is smaller (aᵀb = (bᵀa)ᵀ, abᵀ = (baᵀ)ᵀ), so a weight
 *   gradient (activationsᵀ · dy) transposes the narrower operand, not, say, a [2048, 321] one-hot
 *   constant;
 * - batched: XNNPACK is ~2× faster when the output's rows outnumber its columns (e.g.
 *   [64, 64]·[64, 16] rather than [16, 64]·[64, 64]), so an output with fewer rows is computed
 *   transposed and transposed back.
 */
function fastBatchMatMul(transpose: tf.KernelConfig) {
  return (stock: tf.KernelConfig): tf.KernelFunc => (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as {
      transposeA: boolean;
      transposeB: boolean;
    };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (a.dtype !== "float32" || b.dtype !== "float32") return stock.kernelFunc(args);
    // Intermediate results this call owns and frees; the output is never one of them.
    const temps: tf.TensorInfo[] = [];
    const temp = (t: tf.TensorInfo): tf.TensorInfo => (temps.push(t), t);
    const flip = (x: tf.TensorInfo): tf.TensorInfo => {
      const r = x.shape.length;
      return transpose.kernelFunc({
        inputs: { x },
        backend: args.backend,
        attrs: { perm: [...Array(r - 2).keys(), r - 1, r - 2] },
      }) as tf.TensorInfo;
    };
    const plain = (x: tf.TensorInfo, y: tf.TensorInfo): tf.TensorInfo =>
      slicedBatchMatMul(x, y, backend) ??
        stock.kernelFunc({
          inputs: { a: x, b: y },
          backend: args.backend,
          attrs: { ...args.attrs, transposeA: false, transposeB: false },
        }) as tf.TensorInfo;
    const size = (x: tf.TensorInfo) => x.shape.reduce((p, q) => p * q, 1);
    const ra = a.shape.length, rb = b.shape.length;
    const outRows = a.shape[transposeA ? ra - 1 : ra - 2];
    const outCols = b.shape[transposeB ? rb - 2 : rb - 1];
    const outputTransposed = transposeA !== transposeB &&
      (ra === 2 && rb === 2
        ? size(transposeA ? a : b) > size(transposeA ? b : a)
        : ra >= 3 && rb >= 3 && outRows < outCols);
    const out = outputTransposed
      ? flip(temp(transposeA ? plain(temp(flip(b)), a) : plain(b, temp(flip(a)))))
      : plain(transposeA ? temp(flip(a)) : a, transposeB ? temp(flip(b)) : b);
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
}

/** a [..., m, k] · b [..., k, n] as one 2-D product per batch entry; null where not applicable. */
function slicedBatchMatMul(
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  backend: WasmBackendInternals,
): tf.TensorInfo | null {
  if (typeof backend.wasm?._BatchMatMul !== "function") return null;
  const ra = a.shape.length, rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const [m, k] = a.shape.slice(-2), [k2, n] = b.shape.slice(-2);
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = outerA.reduce((x, y) => x * y, 1);
  const batchB = outerB.reduce((x, y) => x * y, 1);
  if (k !== k2 || m * k * n < MIN_SLICED_MACS || m * k * n === 0) return null;
  // Same outer dims, or b shared by every entry of a (then a's entries are just more rows).
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  const bShared = batchB === 1 && outerB.length <= outerA.length;
  if (batchA <= 1 || (!sameOuter && !bShared)) return null;
  const aData = backend.dataIdMap.get(a.dataId);
  const bData = backend.dataIdMap.get(b.dataId);
  if (!aData || !bData) return null;
  const out = backend.makeOutput([...outerA, m, n], "float32");
  const outOffset = backend.dataIdMap.get(out.dataId)!.memoryOffset;
  const wasm = backend.wasm;
  let shapes = shapeScratch.get(wasm);
  if (shapes === undefined) {
    shapes = wasm._malloc(6 * 4) >>> 0;
    shapeScratch.set(wasm, shapes);
  }
  const rows = bShared ? batchA * m : m;
  wasm.HEAP32.set([1, rows, k, 1, k, n], shapes >>> 2);
  const products = bShared ? 1 : batchA;
  for (let i = 0; i < products; i++) {
    const aId = backend.dataIdNextNumber++;
    const bId = backend.dataIdNextNumber++;
    const outId = backend.dataIdNextNumber++;
    wasm._register_tensor(aId, rows * k, aData.memoryOffset + 4 * i * rows * k);
    wasm._register_tensor(bId, k * n, bData.memoryOffset + 4 * i * k * n);
    wasm._register_tensor(outId, rows * n, outOffset + 4 * i * rows * n);
    wasm._BatchMatMul(aId, shapes, 3, bId, shapes + 12, 3, 0, 0, outId);
    // Forgetting a view frees nothing (the JS side owns the memory) but drops the XNNPACK
    // operator cached on the b view, so no packed copy of a stale slice outlives this call.
    wasm._dispose_data(aId);
    wasm._dispose_data(bId);
    wasm._dispose_data(outId);
  }
  return out;
}
