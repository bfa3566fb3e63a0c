#!/usr/bin/env bash
# The one prepared GPU check (issue 5): CUDA ops vs CPU ops, tiny-checkpoint parity on the GPU, and
# the GPU benches, run on a lent GPU machine in a single call.
#
#   scripts/gpu-check.sh [--local]   HERE, no GPU needed: builds the cuda-featured binaries, writes
#                                    the kernels' PTX with the pinned NVRTC, stages everything in
#                                    .gpu-check/ (git-ignored), checks the carry limit and prints
#                                    the device command. Sends nothing anywhere (--local is only
#                                    this mode's explicit name).
#   scripts/gpu-check.sh --remote    THERE (repo root of the copied tree, .gpu-check carried):
#                                    runs everything; every output file goes under $OUT.
#
# The device step, for a session whose task is lent a GPU (device tool, `run`):
#     command:   bash scripts/gpu-check.sh --remote
#     carry:     [".gpu-check"]
#     timeout_s: 540
# Then copy the summary and the key lines into docs/gpu-results.md with the date and the device.
#
# Why precompiled PTX: the GPU image has a driver but no guaranteed libnvrtc, and the pinned
# NVRTC 13.0 (libnvrtc.so.13, 109 MB) is over the 64 MiB carry limit. The PTX of every module
# (~0.5 MB per arch) is written here through the same NVRTC path and options Kernels::new uses
# (`dump_ptx`), and there Kernels::new loads it (ERNIE_KERNELS_PTX_DIR) and the driver JIT-compiles
# it. PTX ISA 9.0 from NVRTC 13.0 is what driver 580 accepts.
#
# cuBLAS is not carried either (libcublasLt alone is several hundred MB): the remote step looks for
# libcublas.so.13 on the image (CUDA toolkit, or the nvidia-cublas wheel beside PyTorch) and puts
# its folder on LD_LIBRARY_PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAGE=.gpu-check
CARRY_LIMIT=$((64 * 1024 * 1024))
# Archs to precompile: sm_90 (H100/H200, the lent machines) and sm_80 (A100).
ARCHS=(sm_90 sm_80)

log() { echo "gpu-check: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# here
# ---------------------------------------------------------------------------------------------

# Prints the executable of target "$2" (kind "$1") from cargo's JSON messages on stdin.
pick_executable() {
  python3 -c '
import json, sys
kind, name = sys.argv[1], sys.argv[2]
found = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == name and kind in t["kind"]:
        found = m["executable"]
if not found:
    sys.exit("no %s target %r in cargo output" % (kind, name))
print(found)
' "$1" "$2"
}

# cargo ARGS... --message-format=json, build output to stderr, JSON to a file; prints the file.
cargo_json() {
  local out
  out="$(mktemp)"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo "$@" --message-format=json-render-diagnostics >"$out"
  echo "$out"
}

local_build() {
  command -v python3 >/dev/null || { log "python3 is needed"; exit 1; }
  command -v strip >/dev/null || { log "strip (binutils) is needed"; exit 1; }
  log "toolchain (pinned NVRTC 13.0 for the PTX)"
  eval "$(scripts/cuda-toolchain.sh)"

  rm -rf "$STAGE"
  mkdir -p "$STAGE/bin" "$STAGE/ptx"

  log "building the cuda-featured test binaries, the ernie binary and the GPU bench"
  local j_tests j_kernels j_bench j_dump
  j_tests="$(cargo_json test --features cuda --no-run --test cuda)"
  j_kernels="$(cargo_json test -p ernie-kernels --no-run --test gpu)"
  j_bench="$(cargo_json bench --features cuda --no-run --bench gpu)"
  j_dump="$(cargo_json build -p ernie-kernels --example dump_ptx)"

  # name in the stage <- (json, kind, target)
  local -a plan=(
    "cuda-tests $j_tests test cuda"
    "ernie $j_tests bin ernie"
    "kernels-gpu-tests $j_kernels test gpu"
    "gpu-bench $j_bench bench gpu"
  )
  for entry in "${plan[@]}"; do
    read -r name json kind target <<<"$entry"
    exe="$(pick_executable "$kind" "$target" <"$json")"
    # Debug info is most of a test binary's size; the symbols stay, so backtraces keep names.
    strip --strip-debug -o "$STAGE/bin/$name" "$exe"
    log "  $name <- $exe"
  done

  # target/debug/ernie is shared with other builds: make sure the copy is the cuda-featured one.
  local probe
  probe="$("$STAGE/bin/ernie" generate --model tests/fixtures/dense-f32 --prompt x --device cuda 2>&1 || true)"
  if [[ "$probe" == *"no CUDA support"* ]]; then
    log "FAIL: the staged ernie was built without --features cuda (a concurrent build replaced it?); re-run"
    exit 1
  fi

  log "writing PTX for ${ARCHS[*]}"
  dump="$(pick_executable example dump_ptx <"$j_dump")"
  "$dump" "$STAGE/ptx" "${ARCHS[@]}" >/dev/null
  rm -f "$j_tests" "$j_kernels" "$j_bench" "$j_dump"

  # The binaries must load on the GPU image (Ubuntu 24.04, glibc 2.39 seen there).
  local glibc_needed
  glibc_needed="$(set +o pipefail; for f in "$STAGE"/bin/*; do objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*'; done | sort -uV | tail -n1)"

  # What travels: the tree (tracked + untracked-not-ignored, + shared/ if any) and the stage.
  local tree_bytes stage_bytes total
  # (du skips files that vanish meanwhile; its status is not the point here)
  tree_bytes="$(set +o pipefail; { git ls-files -z --cached --others --exclude-standard; if [[ -d shared ]]; then find shared -type f -print0; fi; } | du --files0-from=- -cb 2>/dev/null | tail -n1 | cut -f1)"
  stage_bytes="$(du -sb "$STAGE" | cut -f1)"
  total=$((tree_bytes + stage_bytes))
  if ((total > CARRY_LIMIT * 15 / 16)); then
    log "over budget uncompressed ($total bytes): xz-compressing the binaries"
    xz -T0 -6 "$STAGE"/bin/*
    stage_bytes="$(du -sb "$STAGE" | cut -f1)"
    total=$((tree_bytes + stage_bytes))
  fi

  {
    echo "built:        $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -n1)"
    echo "commit:       $(git rev-parse HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "glibc needed: $glibc_needed"
    echo "nvrtc:        $("$ERNIE_CUDA_HOME/bin/ptxas" --version 2>/dev/null | tail -n1) (PTX written with the pinned NVRTC 13.0)"
    echo "carry:        tree $tree_bytes + stage $stage_bytes = $total bytes (limit $CARRY_LIMIT)"
    echo "files:"
    (cd "$STAGE" && find . -type f ! -name manifest.txt -printf '%P\t%s\n' | sort)
  } >"$STAGE/manifest.txt"
  cat "$STAGE/manifest.txt" >&2

  if ((total > CARRY_LIMIT)); then
    log "FAIL: $total bytes would travel, over the $CARRY_LIMIT-byte limit"
    exit 1
  fi
  cat <<EOF

Ready. $(numfmt --to=iec "$total") would travel (limit 64 MiB). Device step (device tool, one call):
  run  command:   bash scripts/gpu-check.sh --remote
       carry:     [".gpu-check"]
       timeout_s: 540
Outputs come back under \$OUT: gpu-check.log (everything), summary.txt, bench.csv.
EOF
}

# ---------------------------------------------------------------------------------------------
# there
# ---------------------------------------------------------------------------------------------

STEPS=()
FAILED=0

# step NAME TIMEOUT_S CMD...: runs, records status and seconds; never aborts the script.
step() {
  local name="$1" limit="$2" t0 rc status
  shift 2
  echo
  echo "=== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT" ;;
    *) status="FAIL (rc $rc)" ;;
  esac
  [[ $rc == 0 ]] || FAILED=1
  STEPS+=("$(printf '%-28s %-14s %5ss' "$name" "$status" "$(($(date +%s) - t0))")")
}

# Folders holding libcublas / libcublasLt 13 on the image, first match wins.
find_cublas_dirs() {
  {
    find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu \
      -maxdepth 1 -name 'libcublasLt.so.13*' 2>/dev/null
    find /opt /usr/local /usr/lib/python3* -path '*nvidia*' -name 'libcublasLt.so.13*' 2>/dev/null
  } | xargs -r -n1 dirname | awk '!seen[$0]++'
}

cli_smoke() {
  local model=tests/fixtures/moe-bf16-stacked args=(generate --prompt "Write a short poem about the sea." --max-tokens 16 --format json)
  local cpu gpu
  cpu="$("$STAGE/bin/ernie" "${args[@]}" --model "$model" --device cpu)" || { echo "cpu run failed"; return 1; }
  echo "cpu:  $cpu"
  gpu="$("$STAGE/bin/ernie" "${args[@]}" --model "$model" --device cuda)" || { echo "cuda run failed"; return 1; }
  echo "cuda: $gpu"
  python3 - "$cpu" "$gpu" <<'PY'
import json, sys
a, b = (json.loads(s)["token_ids"] for s in sys.argv[1:3])
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"greedy ids agree for {n} of {len(a)} tokens (bf16 on the GPU vs f32 on the CPU may part ways)")
PY
}

remote() {
  # No errexit/pipefail here: every step's status is recorded by `step`, and a probe that finds
  # nothing (find, nvidia-smi) must not end the run.
  set +e +o pipefail
  : "${OUT:?OUT must name the output folder (the device tool sets it)}"
  [[ -f "$STAGE/manifest.txt" ]] || { echo "no $STAGE/manifest.txt: run scripts/gpu-check.sh here first and carry $STAGE" >&2; exit 1; }
  exec > >(tee "$OUT/gpu-check.log") 2>&1
  local tee_pid=$!
  echo "=== gpu-check --remote, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  cat "$STAGE/manifest.txt"
  echo "=== machine"
  uname -srm
  ldd --version 2>&1 | head -n1 || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 || true

  # Carried compressed when the binaries were over budget.
  for f in "$STAGE"/bin/*.xz; do
    [[ -e "$f" ]] || continue
    if command -v xz >/dev/null; then xz -d -k -f "$f"; else python3 -c 'import lzma,sys; open(sys.argv[1][:-3],"wb").write(lzma.open(sys.argv[1]).read())' "$f"; fi
    chmod +x "${f%.xz}"
  done

  local dirs
  dirs="$( (find_cublas_dirs; for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [[ -d $d ]] && echo "$d"; done) | paste -sd: -)"
  echo "library folders (cuBLAS, driver): ${dirs:-none found (the runtime tests will report CudaUnavailable for cublas)}"
  export LD_LIBRARY_PATH="${dirs}${dirs:+:}${LD_LIBRARY_PATH:-}"
  export ERNIE_KERNELS_PTX_DIR="$PWD/$STAGE/ptx"
  export ERNIE_REQUIRE_GPU=1
  export ERNIE_FIXTURES_DIR="$PWD/tests/fixtures"
  export ERNIE_GPU_SEED="${ERNIE_GPU_SEED:-$(date +%s)}"
  export ERNIE_BENCH_OUT="$OUT"
  export RUST_BACKTRACE=1
  echo "seed $ERNIE_GPU_SEED; PTX from $ERNIE_KERNELS_PTX_DIR"

  # Budget: 15 device minutes a session, a few of them for the machine's start; these limits
  # sum to 480 s and the expected total is a few minutes.
  step "kernels: every launcher"   90  "$STAGE/bin/kernels-gpu-tests" --test-threads=1 --nocapture
  step "runtime: ops+blocks+model" 150 "$STAGE/bin/cuda-tests" --test-threads=1 --nocapture
  export STAGE
  export -f cli_smoke
  step "cli: generate cpu vs cuda"  40 bash -c cli_smoke
  step "bench: route/gemm/decode"  200 "$STAGE/bin/gpu-bench"

  {
    echo "=== summary ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'), $(date -u +%Y-%m-%dT%H:%M:%SZ), seed $ERNIE_GPU_SEED)"
    printf '%s\n' "${STEPS[@]}"
    echo "--- NMSE closest to its limit (a value over its limit fails its test):"
    grep -h '^nmse ' "$OUT/gpu-check.log" | python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    m = re.search(r"([0-9.]+e[-+]?[0-9]+) \(limit ([0-9.e+-]+)\)", line)
    if m:
        rows.append((float(m.group(1)) / float(m.group(2)), line.rstrip()))
for ratio, line in sorted(rows, reverse=True)[:8]:
    print(f"{ratio:6.3f} of limit  {line}")
' || true
    echo "--- bench"
    grep -E '^(ceiling|decode) ' "$OUT/gpu-check.log" || true
  } | tee "$OUT/summary.txt"
  # Let tee finish writing the log before the machine is handed back.
  exec 1>&- 2>&-
  wait "$tee_pid" 2>/dev/null || true
  exit "$FAILED"
}

case "${1:---local}" in
  --local) local_build ;;
  --remote) remote ;;
  *) echo "usage: scripts/gpu-check.sh [--local | --remote]" >&2; exit 2 ;;
esac
