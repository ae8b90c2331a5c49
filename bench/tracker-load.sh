#!/bin/bash
# Loads a release `shoal tracker` with real connections from 127.0.0.2 to 127.0.0.254 and
# prints, per phase, what the load generator (tests/src/bin/tracker-load.rs) measured, then
# the tracker's resident memory (now and peak) read from /proc.
#   bench/tracker-load.sh [--peers N] [--files F] [--haves H] [--locates L]
# Loopback only; both processes are bounded by `timeout`, and the tracker is stopped by PID.
set -u
ARGS=()
PEERS=10000
while [ $# -gt 0 ]; do case $1 in
  --peers) PEERS=$2; ARGS+=(--peers "$2"); shift 2;;
  --files|--haves|--locates) ARGS+=("$1" "$2"); shift 2;;
  *) echo "unknown argument: $1" >&2; exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p adapter-std -p tests --manifest-path "$ROOT/Cargo.toml" || exit 1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A tracker and the generator each need a descriptor per peer.
ulimit -n "$(ulimit -Hn)"
. "$ROOT/bench/tracker-lib.sh"
start_tracker "$ROOT/target/release/shoal" "$WORK/tracker.log"
grep -o 'tracker holds up to.*' "$WORK/tracker.log"
timeout 600 "$ROOT/target/release/tracker-load" --tracker "$addr" "${ARGS[@]}"
rc=$?
pid=$(pgrep -P "$tr" shoal || echo "$tr")
awk -v peers="$PEERS" '/^VmRSS|^VmHWM/ { printf "tracker-load: tracker %s %.1f MiB at %d peers\n", $1, $2 / 1024, peers }' "/proc/$pid/status"
kill "$tr" 2>/dev/null
wait "$tr" 2>/dev/null
exit $rc
