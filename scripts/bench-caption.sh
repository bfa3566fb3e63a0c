#!/usr/bin/env bash
# ernie caption vs transformers on the same checkpoint and image, same run (issue #13, item 6):
# time to the first caption token for a 512×512 image on the 4-layer ERNIE-4.5-VL-28B-A3B-shaped
# checkpoint (full 32-block vision tower). Rounds interleave the two engines, one process each,
# never both at once (each holds the 8.6 GB checkpoint). Prints a Markdown table of medians and
# ours/theirs ratios, and whether the two greedy first tokens agree. Never run by CI.
#
#   ours:   `ernie caption --max-tokens 1 --format json` (RAYON_NUM_THREADS threads); its JSON
#           `timings`: load, preprocess (decode, resize, patchify, template), prefill (vision
#           tower + decoder prefill) and first_token_secs (load start → first token).
#   theirs: scripts/bench_caption_transformers.py: Ernie4_5_VLMoeForConditionalGeneration in the
#           checkpoint's dtype + its processor, greedy generate(max_new_tokens=1),
#           torch.set_num_threads(THREADS).
# "after load" = preprocess + vision tower + prefill + first token; "process" = wall time of the
# whole process (includes Python's imports for theirs; ours exits right after the first token).
#
# Usage: scripts/bench-caption.sh ERNIE_BINARY [ROUNDS]
# Env:   VL_BENCH_MODEL  the checkpoint (written by tests/reference/make_vl_bench_checkpoint.py
#                        when missing; ≈ 8.6 GB, keep it outside the repository)
#        BENCH_PYTHON    a python with torch + transformers (the reference env)
#        IMAGE           default assets/media/astronaut_rgb_512x512.png
#        PROMPT          default "Describe this image." (ernie caption's default for one image)
#        THREADS         threads for both engines (default 2)
set -euo pipefail
bin=$(realpath "${1:?ernie binary}"); rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
model=${VL_BENCH_MODEL:-$HOME/.cache/ernie-bench-vl-28b-a3b-4layer}
py=${BENCH_PYTHON:-/work/refenv/bin/python}
image=${IMAGE:-$here/assets/media/astronaut_rgb_512x512.png}
prompt=${PROMPT:-Describe this image.}
threads=${THREADS:-2}

[ -f "$model/model.safetensors.index.json" ] || "$py" "$here/tests/reference/make_vl_bench_checkpoint.py" "$model" >&2

median() { sort -g | awk '{a[NR]=$1} END {if (!NR) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
json_num() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
now() { date +%s.%N; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
  t0=$(now)
  RAYON_NUM_THREADS=$threads "$bin" caption --model "$model" --image "$image" --prompt "$prompt" \
    --max-tokens 1 --format json >"$tmp/ours.json" 2>"$tmp/ours.err" || { cat "$tmp/ours.err" >&2; exit 1; }
  t1=$(now)
  o=$(cat "$tmp/ours.json")
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$tmp/ours-process"
  load=$(json_num load_secs <<<"$o"); first=$(json_num first_token_secs <<<"$o")
  echo "$load" >>"$tmp/ours-load"
  awk -v f="$first" -v l="$load" 'BEGIN {print f - l}' >>"$tmp/ours-after"
  json_num prefill_secs <<<"$o" >>"$tmp/ours-prefill"
  sed -n 's/^peak RSS: \([0-9.]*\) MiB/\1/p' "$tmp/ours.err" >>"$tmp/ours-rss"
  ours_tok=$(sed -n 's/.*"token_ids":\[\([0-9]*\)\].*/\1/p' <<<"$o")
  ours_n=$(json_num prompt_tokens <<<"$o")

  t0=$(now)
  h=$("$py" "$here/scripts/bench_caption_transformers.py" "$model" "$image" --prompt "$prompt" --threads "$threads" 2>"$tmp/hf.err") \
    || { tail -5 "$tmp/hf.err" >&2; echo "transformers failed (exit $?; OOM?)" >&2; exit 1; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$tmp/hf-process"
  json_num load_secs <<<"$h" >>"$tmp/hf-load"
  json_num first_token_secs <<<"$h" >>"$tmp/hf-after"
  json_num generate_secs <<<"$h" >>"$tmp/hf-generate"
  json_num peak_rss_mib <<<"$h" >>"$tmp/hf-rss"
  hf_tok=$(json_num first_token <<<"$h"); hf_n=$(json_num prompt_tokens <<<"$h")
  hf_top2=$(sed -n 's/.*"top2_ids": *\[\([0-9, ]*\)\].*/\1/p' <<<"$h"); gap=$(json_num top2_gap <<<"$h")
  dtype=$(sed -n 's/.*"dtype": *"\([^"]*\)".*/\1/p' <<<"$h")
  echo "round $r: ours first token $ours_tok ($ours_n prompt tokens), transformers $hf_tok ($hf_n prompt tokens; top-2 $hf_top2, gap $gap)" >&2
  echo "$ours_tok $hf_tok $ours_n $hf_n $gap" >>"$tmp/tokens"
done

cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1)
echo "$(date -u +'%F %H:%M') UTC, $cpu, $threads threads each, medians of $rounds interleaved rounds;"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg); checkpoint $(basename "$model"), transformers weights $dtype."
echo
echo "| | ernie caption | transformers | ours / theirs |"
echo "|---|---|---|---|"
row() {
  local a b; a=$(median <"$tmp/$2"); b=$(median <"$tmp/$3")
  awk -v l="$1" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | %.2f | %.2f | %.2f |\n", l, a, b, (b > 0 ? a / b : 0)}'
}
row "first token after load (s): preprocess + vision tower + prefill" ours-after hf-after
row "load (s)" ours-load hf-load
row "process start → first token (s)" ours-process hf-process
row "peak RSS (MiB)" ours-rss hf-rss
echo
awk '{same += ($1 == $2)} END {printf "greedy first token: %d of %d rounds equal (ours %s, transformers %s; prompt tokens %s / %s; transformers top-2 gap %s)\n", same, NR, $1, $2, $3, $4, $5}' "$tmp/tokens"
