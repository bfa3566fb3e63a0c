#!/usr/bin/env bash
# Decode speed and peak RSS of `ernie generate` for each elastic setting (issue: ERNIE 5.0 elastic
# sub-models) on the 4-layer ERNIE-4.5-21B-A3B-shaped checkpoint written by
# tests/reference/make_bench_checkpoint.py. Prints a Markdown table of medians over RUNS runs.
# Usage: scripts/bench-elastic.sh ERNIE_BINARY MODEL_DIR [RUNS]
set -euo pipefail
bin=${1:?ernie binary}; model=${2:?model dir}; runs=${3:-3}
prompt="Tell me about the sea and the wind."
# Warm the page cache once so the first setting is not charged for reading the file.
"$bin" generate --model "$model" --prompt "$prompt" --max-tokens 2 --draft-tokens 0 >/dev/null 2>&1
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| setting | decode tokens/s (median of $runs) | prefill tokens/s | peak RSS (MiB) |"
echo "|---|---|---|---|"
for opt in "" "--top-k 3" "--top-k 2" "--top-k 1" "--experts 0-31"; do
  dec=(); pre=(); rss=()
  for _ in $(seq "$runs"); do
    err=$("$bin" generate --model "$model" --prompt "$prompt" --max-tokens 32 --draft-tokens 0 --format json $opt 2>&1 >/dev/null)
    dec+=("$(sed -n 's/.*decode: .*(\([0-9.]*\) tok\/s).*/\1/p' <<<"$err")")
    pre+=("$(sed -n 's/^prefill: .* (\([0-9.]*\) tok\/s);.*/\1/p' <<<"$err")")
    rss+=("$(sed -n 's/^peak RSS: \([0-9.]*\) MiB/\1/p' <<<"$err")")
  done
  printf '| %s | %s | %s | %s |\n' "${opt:-default (top-6, 64 experts)}" \
    "$(printf '%s\n' "${dec[@]}" | median)" "$(printf '%s\n' "${pre[@]}" | median)" "$(printf '%s\n' "${rss[@]}" | median)"
done
