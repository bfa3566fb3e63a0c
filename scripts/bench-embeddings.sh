#!/usr/bin/env bash
# Embeddings throughput and latency of `ernie serve` on loopback: builds release binaries, starts
# the server on a free 127.0.0.1 port, runs examples/bench_embeddings.rs against it, stops it.
#
# Usage: scripts/bench-embeddings.sh [MODEL_DIR] [REQUESTS] [CONCURRENCY] [INPUTS_PER_REQUEST]
#   defaults: tests/fixtures/moe-f32 2000 8 1
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-tests/fixtures/moe-f32}
REQUESTS=${2:-2000}
CONCURRENCY=${3:-8}
INPUTS=${4:-1}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --bin ernie --example bench_embeddings
log=$(mktemp)
# Queue deeper than the client count: this measures throughput, not 429 backpressure.
"$TARGET/release/ernie" serve --model "$MODEL" --host 127.0.0.1 --port 0 --max-queue 1024 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
addr=
for _ in $(seq 1 300); do
  addr=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$log" >&2; exit 1; }
echo "model $MODEL, server $addr, $(nproc) cores"
"$TARGET/release/examples/bench_embeddings" "$addr" "$REQUESTS" "$CONCURRENCY" "$INPUTS"
