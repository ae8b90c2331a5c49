#!/bin/bash
# One download of a random file on loopback from S seeders with the release `shoal` binary:
# prints the transfer rate and the getter's peak RSS.
#   bench/transfer.sh [--mib M] [--seeders S] [--rounds R]
# Only 127.0.0.1 is used; every process is bounded by `timeout` and stopped by its PID.
set -u
MIB=1024 SEEDERS=1 ROUNDS=3
while [ $# -gt 0 ]; do case $1 in
  --mib) MIB=$2; shift 2;; --seeders) SEEDERS=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
  *) echo "unknown argument: $1" >&2; exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=$ROOT/target/release/shoal
[ -x "$SHOAL" ] || cargo build --release -q -p adapter-std --manifest-path "$ROOT/Cargo.toml"
WORK=${SHOAL_BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal-bench}/transfer
mkdir -p "$WORK" && cd "$WORK" || exit 1
export SHOAL_STATE_DIR=$WORK/state
SRC=random-${MIB}m.bin
BYTES=$((MIB * 1048576))
[ -f "$SRC" ] && [ "$(stat -c %s "$SRC")" = "$BYTES" ] || head -c "$BYTES" /dev/urandom > "$SRC"
cat "$SRC" > /dev/null
PORT=$((7400 + RANDOM % 500))
for r in $(seq "$ROUNDS"); do
  rm -f out.bin out.bin.part out.bin.shoal-journal links.txt
  timeout 300 "$SHOAL" tracker --listen 127.0.0.1:$PORT 2> tracker.log & tr=$!
  sleep 0.3
  pids=()
  for s in $(seq "$SEEDERS"); do
    timeout 300 "$SHOAL" share "$SRC" --tracker 127.0.0.1:$PORT --listen 127.0.0.1:0 >> links.txt 2>> share.log & pids+=($!)
  done
  for _ in $(seq 600); do [ "$(wc -l < links.txt)" -ge "$SEEDERS" ] && break; sleep 0.1; done
  sleep 0.5 # let every seeder's publish reach the tracker before the getter locates holders
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o rss.txt timeout 300 "$SHOAL" get "$(head -n1 links.txt)" -o out.bin --no-seed --tracker 127.0.0.1:$PORT > /dev/null 2> get.log
  t1=$(date +%s.%N)
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  kill $tr 2>/dev/null; wait $tr 2>/dev/null
  if cmp -s out.bin "$SRC"; then
    awk -v a="$t0" -v b="$t1" -v n="$BYTES" -v r="$(tail -n1 rss.txt)" -v s="$SEEDERS" -v k="$r" \
      'BEGIN{printf "round %d, %d seeder(s): %.0f MB/s, getter peak RSS %.1f MiB\n", k, s, n/(b-a)/1e6, r/1024}'
  else
    echo "round $r: content mismatch or failure (see $WORK/get.log)"
  fi
  rm -f out.bin
done
