#!/bin/bash
# Builds the Cortex-M4F firmware example (adapter-smoltcp/firmware) and prints its flash and
# static RAM, with the configuration they are for. Exits non-zero past the budget:
# flash (.text + .rodata) under 96 KiB, static RAM (.data + .bss) under 48 KiB.
#   bench/firmware-size.sh
set -eu
cd "$(dirname "$0")/../adapter-smoltcp/firmware"
cargo build --release -q
size="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-size"
elf=target/thumbv7em-none-eabihf/release/shoal-firmware
"$size" -A "$elf" | awk '
  $1 == ".text" || $1 == ".rodata" { flash += $2 }
  $1 == ".data" { data = $2 } $1 == ".bss" { bss = $2 }
  END {
    ram = data + bss
    printf "firmware: STM32F429 (thumbv7em-none-eabihf), 4 TCP connections with 2 KiB buffers each way,\n"
    printf "          2+2 Ethernet DMA descriptors, a peer for 1 file of up to 1024 chunks, 4 in flight\n"
    printf "firmware: flash .text+.rodata %d bytes (%.1f KiB, budget 96 KiB); .data image %d more\n", flash, flash / 1024, data
    printf "firmware: static RAM .data+.bss %d bytes (%.1f KiB, budget 48 KiB)\n", ram, ram / 1024
    if (flash >= 96 * 1024 || ram >= 48 * 1024) { print "firmware: over budget"; exit 1 }
    # A firmware that panics unconditionally at start-up links to almost nothing: catch that.
    if (flash < 32 * 1024) { print "firmware: suspiciously small; did the compiler prove a panic at boot?"; exit 1 }
  }'
