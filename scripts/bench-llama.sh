#!/usr/bin/env bash
# ernie vs llama.cpp on the same checkpoint, same run (issue #13, item 6): llama-bench's pp512
# (prefill) and tg128 (decode) for bf16, f16, q8_0 and q4_k_m, both engines interleaved round by
# round, memory read bandwidth measured before and after. Prints a Markdown table of medians,
# ours/theirs ratios and the decode rate as a fraction of the bandwidth roofline
# (bandwidth ÷ bytes of weights one decode step reads).
#
# Usage: scripts/bench-llama.sh ERNIE_BINARY [ROUNDS]
# Env:   BENCH_MODEL   the 4-layer 21B-A3B-shaped bf16 checkpoint (written when missing)
#        BENCH_PYTHON  a python with numpy (+ torch, sentencepiece for the conversion)
#        LLAMA_BIN     llama.cpp's build/bin (llama-bench, llama-quantize)
#        LLAMA_SRC     llama.cpp sources with convert_hf_to_gguf.py and gguf-py
#        GGUF_DIR      where the GGUF files go (never the repository)
#        THREADS       threads for both engines (default 2)
#        FORMATS       subset of "bf16 f16 q8_0 q4_k_m"
set -euo pipefail
bin=$(realpath "${1:?ernie binary}"); rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
model=${BENCH_MODEL:-$HOME/.cache/ernie-bench-21b-a3b-4layer}
py=${BENCH_PYTHON:-python3}
llama_bin=${LLAMA_BIN:-/work/llama.cpp/build/bin}
llama_src=${LLAMA_SRC:-/work/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp}
gguf_dir=${GGUF_DIR:-$HOME/.cache/ernie-bench-gguf}
threads=${THREADS:-2}
formats=${FORMATS:-bf16 f16 q8_0 q4_k_m}
export LD_LIBRARY_PATH="$llama_bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# (a) the checkpoint, (b) its GGUF files.
[ -f "$model/model.safetensors" ] || "$py" "$here/tests/reference/make_bench_checkpoint.py" "$model"
mkdir -p "$gguf_dir"
# bf16 is also the source of the quantised files; f16 only when asked for.
for t in bf16 f16; do
  case " $formats " in *" $t "*|*" q8_0 "*|*" q4_k_m "*) ;; *) continue ;; esac
  [ "$t" = f16 ] && case " $formats " in *" f16 "*) ;; *) continue ;; esac
  [ -f "$gguf_dir/bench-$t.gguf" ] || "$py" "$here/scripts/bench_gguf_convert.py" "$llama_src" "$model" "$gguf_dir/bench-$t.gguf" "$t" >&2
done
for t in q8_0 q4_k_m; do
  case " $formats " in *" $t "*) ;; *) continue ;; esac
  up=$(tr '[:lower:]' '[:upper:]' <<<"$t")
  [ -f "$gguf_dir/bench-$t.gguf" ] || "$llama_bin/llama-quantize" "$gguf_dir/bench-bf16.gguf" "$gguf_dir/bench-$t.gguf" "$up" "$threads" >&2
done

# Our side of each format: the bf16 safetensors checkpoint itself for bf16 (what the GGUF files
# were converted from), and for f16 / q8_0 / q4_k_m the very GGUF file llama-bench reads (ernie
# loads llama.cpp's GGUF files, quantised tensors as views of the map: same bytes on both sides).
ours_model() {
  case $1 in
    bf16) echo "$model" ;;
    *) echo "$gguf_dir/bench-$1.gguf" ;;
  esac
}

bandwidth() { "$bin" bench --bandwidth --format json | sed -n 's/.*"bandwidth_gbs":\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {if (!NR) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
json_num() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }

bw_before=$(bandwidth)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
active=""
for r in $(seq "$rounds"); do
  for f in $formats; do
    # The llama.cpp built here (-march=native, AMX CPU) dies with SIGILL (132) on q8_0 / q4_k_m
    # in its AMX / repack path (cause not diagnosed: torch's oneDNN runs AMX on the same VM):
    # rerun with --repack 0 (no AMX / repacked
    # buffers; slower for llama.cpp) and mark the row.
    rp=""; [ -e "$tmp/norepack-$f" ] && rp="--repack 0"
    # shellcheck disable=SC2086
    out=$("$llama_bin/llama-bench" -m "$gguf_dir/bench-$f.gguf" -t "$threads" -p 512 -n 128 -r 1 -o jsonl $rp 2>/dev/null) || {
      st=$?; [ "$st" = 132 ] && [ -z "$rp" ] || exit "$st"
      touch "$tmp/norepack-$f"
      out=$("$llama_bin/llama-bench" -m "$gguf_dir/bench-$f.gguf" -t "$threads" -p 512 -n 128 -r 1 -o jsonl --repack 0 2>/dev/null)
    }
    # One JSON object per line: the pp test has n_gen 0, the tg test n_prompt 0.
    grep -E '"n_gen": *0[,}]' <<<"$out" | json_num avg_ts >>"$tmp/llama-$f-pp" || true
    grep -E '"n_prompt": *0[,}]' <<<"$out" | json_num avg_ts >>"$tmp/llama-$f-tg" || true
    o=$("$bin" bench --model "$(ours_model "$f")" -t "$threads" -p 512 -n 128 -r 1 --format json)
    # serde_json sorts keys: pick the whole test object, then its median.
    json_num median_tok_s <<<"$(grep -o '{[^{}]*"name":"pp512"[^{}]*}' <<<"$o")" >>"$tmp/ours-$f-pp"
    json_num median_tok_s <<<"$(grep -o '{[^{}]*"name":"tg128"[^{}]*}' <<<"$o")" >>"$tmp/ours-$f-tg"
    json_num time_to_first_token_secs <<<"$o" >>"$tmp/ours-$f-ttft"
    json_num load_secs <<<"$o" >>"$tmp/ours-$f-load"
    active=$(grep -o '"active":[0-9]*' <<<"$o" | cut -d: -f2)
    total=$(grep -o '"total":[0-9]*' <<<"$o" | cut -d: -f2)
  done
done
bw_after=$(bandwidth)

bw=$(printf '%s\n%s\n' "$bw_before" "$bw_after" | awk '{s+=$1} END {print s/NR}')
cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1)
echo "$(date -u +%F), $cpu, $threads threads, medians of $rounds interleaved rounds; load average $(cut -d' ' -f1-3 /proc/loadavg);"
echo "read bandwidth $bw_before GB/s before, $bw_after GB/s after."
echo
echo "| format | llama.cpp pp512 | ernie pp512 | ratio | llama.cpp tg128 | ernie tg128 | ratio | tg roofline llama.cpp / ernie | ernie load + first token (s) |"
echo "|---|---|---|---|---|---|---|---|---|"
for f in $formats; do
  lp=$(median <"$tmp/llama-$f-pp"); lt=$(median <"$tmp/llama-$f-tg")
  op=nan; ot=nan; tt=nan
  [ -s "$tmp/ours-$f-pp" ] && op=$(median <"$tmp/ours-$f-pp") && ot=$(median <"$tmp/ours-$f-tg") && tt=$(median <"$tmp/ours-$f-ttft")
  # Bytes per decode step at this format: active weights × the file's bits per weight.
  size=$(stat -c %s "$gguf_dir/bench-$f.gguf")
  roof=$(awk -v bw="$bw" -v a="${active:-0}" -v t="${total:-1}" -v s="$size" 'BEGIN {b = a * s / t; if (b > 0) print bw * 1e9 / b; else print "nan"}')
  label=$f; [ -e "$tmp/norepack-$f" ] && label="$f (llama.cpp --repack 0: AMX SIGILL)"
  awk -v f="$label" -v lp="$lp" -v op="$op" -v lt="$lt" -v ot="$ot" -v roof="$roof" -v tt="$tt" 'function n(v, d) { return v == "nan" ? "—" : sprintf("%." d "f", v) } BEGIN {
    rp = (op == "nan" || lp == "nan") ? "—" : sprintf("%.2f", op / lp);
    rt = (ot == "nan" || lt == "nan") ? "—" : sprintf("%.2f", ot / lt);
    fl = (roof == "nan" || lt == "nan") ? "—" : sprintf("%.0f %%", 100 * lt / roof);
    fo = (roof == "nan" || ot == "nan") ? "—" : sprintf("%.0f %%", 100 * ot / roof);
    printf "| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n", f, n(lp, 1), n(op, 1), rp, n(lt, 1), n(ot, 1), rt, fl, fo, n(tt, 2)
  }'
done
