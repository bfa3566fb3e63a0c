#!/usr/bin/env bash
# Generation benchmarks (issues #14 item 9, #15 item 9) through the `ernie` binary, on each model
# directory given: NCP speech frames/s and real-time factor, Mimi encode / decode real-time factor
# on 10 s of audio, seconds per image and per scale with CFG off (1) and on (3), and the image
# decoder at 512x512; each next to a same-run baseline (the model's text prefill and decode speed).
# Every figure is the median of RUNS runs; the figures exclude checkpoint loading (the binary's own
# stderr timings). Prints Markdown tables on stdout, progress on stderr.
#
# Usage: scripts/bench-generation.sh ERNIE_BINARY RUNS MODEL_DIR [MODEL_DIR...]
#   MODEL_DIR: an `ernie5` checkpoint; audio rows when it has an `audio` section and audio_codec/,
#   image rows when it has `visual_generation` and vision_decoder/. The word `tiny` stands for the
#   test fixtures (ernie5-tiny + vae/infinity, ernie5-audio-tiny + mimi/tiny).
# Env: CORES (default 2; pins the runs to CPUs 0..CORES-1 with taskset when the machine has more;
#   0 = no pinning), SPEECH_SECONDS (default 2), IMAGE_CFG (default 3), DECODE_SIZE (default 512).
# The 21B-A3B-shaped checkpoint: tests/reference/make_generation_bench_checkpoint.py (`make bench`).
set -euo pipefail
bin=${1:?ernie binary}; runs=${2:?runs}; shift 2
[ $# -gt 0 ] || { echo "give at least one model dir (or 'tiny')" >&2; exit 2; }
cores=${CORES:-2}; speech_s=${SPEECH_SECONDS:-2}; cfg_on=${IMAGE_CFG:-3}; dsize=${DECODE_SIZE:-512}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pin=()
if [ "$cores" -gt 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -gt "$cores" ]; then pin=(taskset -c "0-$((cores - 1))"); fi
# stderr of one run (stdout dropped); a failing run prints its error and stops the script.
run() {
  local e
  e=$("${pin[@]}" "$bin" "$@" 2>&1 >/dev/null) || { log "failed: ernie $*"; echo "$e" >&2; return 1; }
  printf '%s\n' "$e"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "n/a")}'; }
# json FILE EXPR: a Python expression over the parsed file `c` (stdlib only).
json() { python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print($2)" "$1"; }
log() { echo "[bench-generation] $*" >&2; }

models=()
for m in "$@"; do
  if [ "$m" = tiny ]; then
    fx="$root/tests/fixtures"
    mkdir -p "$tmp/tiny-image" "$tmp/tiny-audio"
    cp -r "$fx/ernie5-tiny/." "$tmp/tiny-image/"; cp -r "$fx/vae/infinity" "$tmp/tiny-image/vision_decoder"
    cp -r "$fx/ernie5-audio-tiny/." "$tmp/tiny-audio/"; cp -r "$fx/mimi/tiny" "$tmp/tiny-audio/audio_codec"
    models+=("$tmp/tiny-image" "$tmp/tiny-audio")
  else
    models+=("$m")
  fi
done

# Inputs: 10 s of 24 kHz mono audio (a chirp with noise) and a 32-channel latent for the decoder.
python3 - "$tmp/clip.wav" <<'EOF'
import math, random, struct, sys, wave
random.seed(0)
rate, n = 24000, 240000
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * (200 + 40 * i / rate) * i / rate)
                                             + random.gauss(0, 1000))) for i in range(n)))
EOF

prompt="Tell me about the sea and the wind."
long_prompt=$(for _ in $(seq 24); do printf '%s ' "$prompt"; done)
rows=(); scale_rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

for m in "${models[@]}"; do
  name=$(basename "$m"); cfgf="$m/config.json"
  # Baseline: the same model's text prefill (a ~200-word prompt) and decode speed.
  pre=(); dec=()
  for _ in $(seq "$runs"); do
    err=$(run generate --model "$m" --prompt "$long_prompt" --max-tokens 16 --draft-tokens 0 --format json)
    pre+=("$(sed -n 's/^prefill: .* (\([0-9.]*\) tok\/s);.*/\1/p' <<<"$err")")
    dec+=("$(sed -n 's/.*decode: .*(\([0-9.]*\) tok\/s).*/\1/p' <<<"$err")")
  done
  ntok=$(sed -n 's/^prefill: \([0-9]*\) tokens.*/\1/p' <<<"$err")
  row "$name" "baseline: text prefill ($ntok tokens)" "$(printf '%s\n' "${pre[@]}" | median)" "tok/s"
  row "$name" "baseline: text decode (16 tokens)" "$(printf '%s\n' "${dec[@]}" | median)" "tok/s"

  if [ "$(json "$cfgf" "'audio' in c")" = True ] && [ -d "$m/audio_codec" ]; then
    log "$name: speech"
    fps=(); rtf=(); frames=()
    for i in $(seq "$runs"); do
      err=$(run generate --model "$m" --prompt "$prompt" --output "$tmp/speech.wav" --max-seconds "$speech_s" \
        --temperature 1 --sample-top-k 50 --seed "$i")
      fps+=("$(sed -n 's/^audio: .*, \([0-9.]*\) frames\/s).*/\1/p' <<<"$err")")
      rtf+=("$(sed -n 's/^audio: .*(real-time factor \([0-9.]*\),.*/\1/p' <<<"$err")")
      frames+=("$(sed -n 's/^audio: \([0-9]*\) frames.*/\1/p' <<<"$err")")
    done
    row "$name" "NCP speech: prompt + ${speech_s} s budget (median $(printf '%s\n' "${frames[@]}" | median) frames), codec decode streamed" \
      "$(printf '%s\n' "${fps[@]}" | median)" "frames/s (real-time factor $(printf '%s\n' "${rtf[@]}" | median))"
    log "$name: codec"
    codec="$m/audio_codec"; levels=$(json "$codec/config.json" "c.get('num_quantizers', 32)")
    enc=(); decr=()
    for _ in $(seq "$runs"); do
      err=$(run codec encode --codec "$codec" --audio "$tmp/clip.wav" --out "$tmp/codes.json")
      enc+=("$(sed -n 's/^encode: .*(real-time factor \([0-9.]*\)).*/\1/p' <<<"$err")")
      err=$(run codec decode --codec "$codec" --codes "$tmp/codes.json" --out "$tmp/decoded.wav")
      decr+=("$(sed -n 's/^decode: .*(real-time factor \([0-9.]*\)).*/\1/p' <<<"$err")")
    done
    row "$name" "Mimi encode, 10 s of 24 kHz audio → $levels levels" "$(printf '%s\n' "${enc[@]}" | median)" "real-time factor (s per s of audio)"
    row "$name" "Mimi decode, $levels levels → 10 s of audio" "$(printf '%s\n' "${decr[@]}" | median)" "real-time factor (s per s of audio)"
  fi

  if [ "$(json "$cfgf" "'visual_generation' in c")" = True ] && [ -d "$m/vision_decoder" ]; then
    grids=($(json "$cfgf" "' '.join(f'{h}x{w}' for h, w in c['visual_generation']['scales'])"))
    for cfg in 1 "$cfg_on"; do
      log "$name: image, cfg $cfg"
      tot=(); loop=(); vae=(); : >"$tmp/scales"
      for i in $(seq "$runs"); do
        err=$(run generate --model "$m" --prompt "a red fox in the snow" --output "$tmp/image.png" --cfg "$cfg" \
          --temperature 1 --top-p 0.97 --seed "$i")
        l=$(sed -n 's/^scales: \([0-9.]*\) s; decoder: \([0-9.]*\) s.*/\1 \2/p' <<<"$err")
        loop+=("${l% *}"); vae+=("${l#* }"); tot+=("$(awk -v a="${l% *}" -v b="${l#* }" 'BEGIN {print a + b}')")
        sed -n 's/^scale \([0-9]*\)\/[0-9]*: \([0-9.]*\) s/\1 \2/p; s/^sum slot: \([0-9.]*\) s/sum \1/p' <<<"$err" >>"$tmp/scales"
      done
      px=$(sed -n 's/^wrote .* (\([0-9]*x[0-9]*\))$/\1/p' <<<"$err")
      row "$name" "image $px, ${#grids[@]} scales to ${grids[-1]} tokens, cfg $cfg: whole image (scales + decoder)" "$(printf '%s\n' "${tot[@]}" | median)" "s/image"
      row "$name" "… of which the NFSP scales (with the sum slot)" "$(printf '%s\n' "${loop[@]}" | median)" "s"
      row "$name" "… of which the image decoder ($px)" "$(printf '%s\n' "${vae[@]}" | median)" "s"
      for k in $(seq "${#grids[@]}") sum; do
        s=$(awk -v k="$k" '$1 == k {print $2}' "$tmp/scales" | median)
        printf '%s %s %s\n' "$k" "$cfg" "$s" >>"$tmp/scale-table"
      done
    done
    scale_rows+=("**$name**: seconds per scale, median of $runs (one forward of the scale's slots per sequence; cfg $cfg_on runs two sequences)"
      "" "| scale | grid | cfg 1 (s) | cfg $cfg_on (s) |" "|---|---|---|---|")
    for k in $(seq "${#grids[@]}") sum; do
      g=$([ "$k" = sum ] && echo "1 slot" || echo "${grids[$((k - 1))]}")
      scale_rows+=("| $k | $g | $(awk -v k="$k" '$1 == k && $2 == 1 {print $3}' "$tmp/scale-table") | $(awk -v k="$k" -v c="$cfg_on" '$1 == k && $2 == c {print $3}' "$tmp/scale-table") |")
    done
    scale_rows+=("")
    rm -f "$tmp/scale-table"
    log "$name: decoder at ${dsize}²"
    vd="$m/vision_decoder"
    z=$(json "$vd/config.json" "c['latent_channels']"); f=$(json "$vd/config.json" "2 ** (len(c['block_out_channels']) - 1)")
    python3 - "$tmp/latent.safetensors" "$z" "$((dsize / f))" <<'EOF'
import json, random, struct, sys
path, c, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(0)
n = c * s * s
head = json.dumps({"latent": {"dtype": "F32", "shape": [c, s, s], "data_offsets": [0, 4 * n]}}).encode()
head += b" " * (-len(head) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + struct.pack(f"<{n}f", *(random.gauss(0, 1) for _ in range(n))))
EOF
    dt=()
    for _ in $(seq "$runs"); do
      err=$(run codec decode --codec "$vd" --latent "$tmp/latent.safetensors" --out "$tmp/decoded.png")
      dt+=("$(sed -n 's/^wrote .* in \([0-9.]*\) s after loading$/\1/p' <<<"$err")")
    done
    row "$name" "image decoder alone, $z×$((dsize / f))² latent → ${dsize}×${dsize} (+ PNG write)" "$(printf '%s\n' "${dt[@]}" | median)" "s"
  fi
done

echo "| model | benchmark | median of $runs | unit |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
[ ${#scale_rows[@]} -eq 0 ] || printf '%s\n' "${scale_rows[@]}"
