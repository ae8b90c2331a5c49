#!/bin/bash
# Swarm efficiency in the deterministic simulator: one seeder, equal symmetric 100 Mbit/s links,
# 10 ms latency, no loss, a 128 MiB file in 128 KiB chunks; 20, 50 and 100 peers. Prints the
# simulator's summary line for each (efficiency = fluid lower bound / simulated time).
#   bench/sim-efficiency.sh [SEED]
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p tests --bin sim
for peers in 20 50 100; do
  ./target/release/sim --peers "$peers" --seeders 1 --file-mib 128 --chunk-kib 128 \
    --latency-ms 10 --up-mbps 100 --down-mbps 100 --loss 0 --seed "${1:-1}"
done
