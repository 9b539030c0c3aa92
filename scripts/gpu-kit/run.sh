#!/usr/bin/env bash
# The DataRater GPU kit (built by `deno task gpu-kit --output DIR`; see the README's "GPU kit").
# Needs bash and coreutils; no Node or Deno: the kit carries Deno. On any GPU node:
#
#   bash run.sh [--quick] [--budget SECONDS] [--only STAGE,STAGE...]
#
# prints JSON lines, one per stage: the WebGPU adapter found, a correctness check (WebGPU's
# meta-gradient against WASM's on a tiny config), then ms per meta-step on WebGPU, in PyTorch on
# CUDA, on WASM and in PyTorch on the CPU, for the reference step and one member of the GPU
# example's population (the `large` size). A stage that fails or runs out of time prints a line
# with "error", and the next stage runs. The lines also go to $OUT/gpu-kit-results.jsonl (with
# the stages' stderr in $OUT/gpu-kit-run.log) when OUT is set.
#
# Knobs: --quick (or GPU_KIT_QUICK=1) times the tiny size instead, a smoke test of the kit;
# --budget / GPU_KIT_BUDGET_S (default 300) bounds the whole run; --only / GPU_KIT_ONLY runs
# the named measuring stages alone (e.g. adapter,correctness,wasm-tiny); GPU_KIT_WORK is where
# Deno is unpacked and the logs kept (default: a folder in $TMPDIR or /tmp); GPU_KIT_PYTHON is
# the Python with torch (default python3); GPU_KIT_VULKAN_PREFIX unpacks missing Vulkan loaders
# there with LD_LIBRARY_PATH, as for users other than root, instead of into / (root's default).
set -u

KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QUICK=${GPU_KIT_QUICK:-0}
BUDGET_S=${GPU_KIT_BUDGET_S:-300}
PYTHON=${GPU_KIT_PYTHON:-python3}
ONLY=${GPU_KIT_ONLY:-}
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --budget) BUDGET_S=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
START=$SECONDS

# Deno unpacked (95 MB) stays out of the kit, which must stay small enough to travel, and is reused
# by reruns of the same kit only (the folder is named after kit.json's checksum).
WORK=${GPU_KIT_WORK:-${TMPDIR:-/tmp}/datarater-gpu-kit-$(cksum <"$KIT/kit.json" | cut -d' ' -f1)}
if ! mkdir -p "$WORK" 2>/dev/null || [ ! -w "$WORK" ]; then WORK=$(mktemp -d); fi
RESULTS=$WORK/results.jsonl
LOG=$WORK/run.log
: >"$RESULTS"
: >"$LOG"

# Copies the results so far to $OUT: a run cut short still leaves its lines there.
save_out() {
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$RESULTS" "$OUT/gpu-kit-results.jsonl" && cp "$LOG" "$OUT/gpu-kit-run.log"
  fi
}

emit() {
  printf '%s\n' "$1" | tee -a "$RESULTS"
  save_out
}

# A JSON string holding $1 (control characters become spaces).
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=$(printf '%s' "$s" | tr '\000-\037' ' ')
  printf '"%s"' "$s"
}

# stage NAME CAP_S COMMAND...: runs COMMAND under a timeout of CAP_S seconds or what is left of the
# budget, whichever is less, and prints its last JSON line with "stage" added, or an error line.
stage() {
  local name=$1 cap=$2
  shift 2
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    emit "{\"stage\":\"$name\",\"skipped\":\"not in --only\"}"
    return
  fi
  local left=$((BUDGET_S - (SECONDS - START) - 2))
  if ((left < 5)); then
    emit "{\"stage\":\"$name\",\"error\":\"skipped: the ${BUDGET_S} s budget is spent\"}"
    return
  fi
  local limit=$((cap < left ? cap : left)) began=$SECONDS out rc last
  printf '### %s: %s\n' "$name" "$*" >>"$LOG"
  out=$(timeout -k 5 "$limit" "$@" 2>>"$LOG")
  rc=$?
  printf '%s\n' "$out" >>"$LOG"
  last=$(printf '%s\n' "$out" | grep '^{' | tail -n 1)
  if ((rc == 0)) && [ -n "$last" ] && [ "$last" != "{}" ]; then
    emit "{\"stage\":\"$name\",\"seconds\":$((SECONDS - began)),${last#\{}"
  elif [[ $last == '{"error":'* ]]; then
    emit "{\"stage\":\"$name\",\"exitCode\":$rc,${last#\{}"
  elif ((rc == 124 || rc == 137)); then
    emit "{\"stage\":\"$name\",\"error\":\"timed out after $limit s\"}"
  else
    local log why
    log=$(sed -n "/^### $name: /,\$p" "$LOG" | grep -v '^###' | grep -v '^[[:space:]]*$')
    # Deno's uncaught errors (and tfjs-wasm's XNNPACK complaints) say more than the stack's tail.
    why=$(printf '%s\n' "$log" | grep -E '^error: |XNN status' | head -n 3)
    [ -n "$why" ] || why=$(printf '%s\n' "$log" | tail -n 3)
    emit "{\"stage\":\"$name\",\"error\":$(json_string "exit $rc: ${why:0:600}")}"
  fi
}

cpus=$(nproc 2>/dev/null || echo 1)
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
  head -n 1)
emit "{\"stage\":\"host\",\"machine\":$(json_string "$(uname -m)"),\"cpus\":$cpus,\"gpu\":$(json_string "${gpu:-none found by nvidia-smi}"),\"quick\":$([ "$QUICK" = 1 ] && echo true || echo false),\"budgetSeconds\":$BUDGET_S,\"kit\":$(cat "$KIT/kit.json" 2>/dev/null || echo null)}"

# Deno: xz if the node has it, else Python's lzma.
DENO=$WORK/deno
if [ ! -x "$DENO" ]; then
  if command -v xz >/dev/null; then
    via=xz
    xz -dc "$KIT/deno.xz" >"$DENO.part" 2>>"$LOG"
  else
    via=python3-lzma
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$KIT/deno.xz" "$DENO.part" 2>>"$LOG"
  fi
  if [ $? -eq 0 ]; then
    chmod +x "$DENO.part" && mv "$DENO.part" "$DENO"
  else
    rm -f "$DENO.part"
  fi
else
  via=cached
fi
deno_version=$("$DENO" --version 2>>"$LOG" | head -n 1)
if [ -n "$deno_version" ]; then
  emit "{\"stage\":\"deno\",\"version\":$(json_string "$deno_version"),\"unpackedWith\":\"$via\",\"path\":$(json_string "$DENO")}"
else
  emit "{\"stage\":\"deno\",\"error\":$(json_string "could not unpack or run $KIT/deno.xz with $via (see $LOG)")}"
fi
export DENO_DIR=$WORK/deno-dir DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 NO_COLOR=1

# Vulkan: WebGPU reaches NVIDIA GPUs through the Vulkan loader, which slim images lack.
LDCONFIG=$(command -v ldconfig || ls /sbin/ldconfig /usr/sbin/ldconfig 2>/dev/null | head -n 1)
debs=("$KIT"/debs/*.deb)
if [ -n "$LDCONFIG" ] && "$LDCONFIG" -p 2>/dev/null | grep -q libvulkan; then
  loader=present
elif [ ! -e "${debs[0]}" ]; then
  loader="absent (kit built with --no-vulkan)"
elif [ "$(id -u)" = 0 ] && [ -z "${GPU_KIT_VULKAN_PREFIX:-}" ] && command -v dpkg >/dev/null; then
  for f in "${debs[@]}"; do dpkg -x "$f" / 2>>"$LOG"; done
  "$LDCONFIG" 2>>"$LOG"
  loader="installed into / from the kit's debs"
else
  prefix=${GPU_KIT_VULKAN_PREFIX:-$WORK/vulkan}
  mkdir -p "$prefix"
  for f in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$prefix" 2>>"$LOG"
    else
      # A .deb is an ar archive whose data.tar.* holds the files.
      (cd "$prefix" && ar p "$f" "$(ar t "$f" | grep '^data\.tar')" | tar -x 2>>"$LOG")
    fi
  done
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  loader="unpacked into $prefix (LD_LIBRARY_PATH)"
fi
# NVIDIA's container runtime mounts its Vulkan and EGL manifests where the loaders do not look.
NV=/usr/local/nvidia/share
if ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1 &&
  [ -f $NV/vulkan/icd.d/nvidia_icd.json ] && [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  export VK_DRIVER_FILES=$NV/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=$NV/glvnd/egl_vendor.d/10_nvidia.json
fi
emit "{\"stage\":\"vulkan\",\"loader\":$(json_string "$loader"),\"driverFiles\":$(json_string "${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-loader default}}")}"

# `timeout` runs programs, not shell functions: the commands are arrays.
KIT_JS=("$DENO" run -A --no-config --no-lock "$KIT/datarater-gpu-kit.js")
BENCH=("${KIT_JS[@]}" bench)
# Like-for-like with tfjs-wasm, the CPU reference runs on one thread; the large CPU step would
# take minutes on one, so it gets every core (its line says how many).
TORCH1=(env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PYTHON" "$KIT/meta_step_torch.py" --threads 1)
TORCH_ALL=(env OMP_NUM_THREADS="$cpus" MKL_NUM_THREADS="$cpus" "$PYTHON" "$KIT/meta_step_torch.py"
  --threads "$cpus")

stage adapter 60 "$DENO" eval --no-config '
const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
const info = adapter?.info;
console.log(JSON.stringify(info
  ? { found: true, description: info.description, vendor: info.vendor,
      architecture: info.architecture, device: info.device,
      software: /llvmpipe|lavapipe|swiftshader/i.test(info.description) }
  : { found: false, navigatorGpu: "gpu" in navigator }));'

stage correctness 120 "${KIT_JS[@]}" check

if [ "$QUICK" = 1 ]; then
  # A smoke test: the tiny size runs in seconds even on a software adapter.
  stage webgpu-tiny 60 "${BENCH[@]}" --backend webgpu --size tiny --warmup 1 --steps 2
  stage torch-cuda-tiny 60 "${TORCH1[@]}" --device cuda --size tiny --warmup 1 --steps 2
  stage wasm-tiny 60 "${BENCH[@]}" --backend wasm --size tiny --warmup 1 --steps 2
  stage torch-cpu-tiny 60 "${TORCH1[@]}" --device cpu --size tiny --warmup 1 --steps 2
else
  # GPU figures first: on a short budget the CPU ones are the ones to lose.
  stage webgpu-reference 90 "${BENCH[@]}" --backend webgpu --size reference --warmup 2 --steps 5
  stage torch-cuda-reference 60 "${TORCH1[@]}" --device cuda --warmup 2 --steps 8
  stage webgpu-large 90 "${BENCH[@]}" --backend webgpu --size large --warmup 1 --steps 3
  stage torch-cuda-large 60 "${TORCH1[@]}" --device cuda --size large --warmup 2 --steps 5
  stage wasm-reference 60 "${BENCH[@]}" --backend wasm --size reference --warmup 2 --steps 5
  stage torch-cpu-reference 60 "${TORCH1[@]}" --device cpu --warmup 1 --steps 3
  stage torch-cpu-large 90 "${TORCH_ALL[@]}" --device cpu --size large --warmup 0 --steps 1
  stage wasm-large 150 "${BENCH[@]}" --backend wasm --size large --warmup 0 --steps 1
fi
emit "{\"stage\":\"done\",\"seconds\":$((SECONDS - START))}"
