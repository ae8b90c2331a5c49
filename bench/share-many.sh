#!/bin/bash
# One `shoal share` of N small files at once against a local tracker: prints how long until
# the tracker listed every one (the share prints a link per listed file) and the sharing
# process's resident memory (now and peak) read from /proc.
#   bench/share-many.sh [--files N] [--kib K]
# Loopback only; both processes are bounded by `timeout` and stopped by PID.
set -u
N=1000 KIB=64
while [ $# -gt 0 ]; do case $1 in
  --files) N=$2; shift 2;; --kib) KIB=$2; shift 2;;
  *) echo "unknown argument: $1" >&2; exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p adapter-std --manifest-path "$ROOT/Cargo.toml" || exit 1
SHOAL=$ROOT/target/release/shoal
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SHOAL_STATE_DIR=$WORK/state
mkdir -p "$WORK/files"
for i in $(seq "$N"); do head -c $((KIB * 1024)) /dev/urandom > "$WORK/files/f$i.bin"; done
. "$ROOT/bench/tracker-lib.sh"
start_tracker "$SHOAL" "$WORK/tracker.log"
start=$(date +%s.%N)
timeout 600 "$SHOAL" share "$WORK"/files/*.bin --tracker "$addr" --listen 127.0.0.1:0 \
  > "$WORK/links.txt" 2> "$WORK/share.log" & sh=$!
for _ in $(seq 6000); do
  [ "$(wc -l < "$WORK/links.txt")" -ge "$N" ] && break
  kill -0 "$sh" 2>/dev/null || break
  sleep 0.1
done
end=$(date +%s.%N)
got=$(wc -l < "$WORK/links.txt")
pid=$(pgrep -P "$sh" shoal || echo "$sh")
echo "share-many: $got of $N files of $KIB KiB listed in $(echo "$end - $start" | bc) s (hashing included)"
awk -v n="$N" '/^VmRSS|^VmHWM/ { printf "share-many: sharing process %s %.1f MiB with %d files\n", $1, $2 / 1024, n }' "/proc/$pid/status"
kill "$sh" "$tr" 2>/dev/null
wait "$sh" "$tr" 2>/dev/null
[ "$got" -ge "$N" ]
