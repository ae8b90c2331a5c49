//! Swarm efficiency (fluid lower bound / simulated time) with 1 seeder, equal symmetric
//! bandwidth and no loss: floors under what has been reached, so a change that loses ground
//! fails CI. Issue 12's target is 0.95 at 20, 100 and 1,000 peers (64 MiB in 256 KiB chunks);
//! these floors sit a little below the figures in BENCHMARKS.md ("Pipeline depth: a round
//! trip's worth") and rise as they do.
//!
//! Also: a 500-peer swarm completes. Too slow for a debug `cargo test`; CI runs them in release:
//! `cargo test --release -p tests --test efficiency -- --ignored`.

use proto_core::time::Duration;
use tests::sim::{Sim, SimConfig};

/// One seeder, symmetric 100 Mbit/s links, 10 ms one-way, no loss.
fn swarm(peers: usize, file_bytes: u64, chunk_bytes: u32, seed: u64) -> SimConfig {
    SimConfig {
        peers,
        seeders: 1,
        file_bytes,
        chunk_bytes,
        latency: Duration::from_millis(10),
        up: 12_500_000,
        down: 12_500_000,
        seed,
        ..SimConfig::default()
    }
}

#[test]
#[ignore = "seconds in release, minutes in debug: run with --release -- --ignored"]
fn twenty_peers_one_seeder_reach_80_percent_of_the_fluid_bound() {
    for seed in 1..=3 {
        reaches(swarm(20, 128 << 20, 128 * 1024, seed), 0.8);
    }
}

/// Runs `cfg`, prints its line, and checks every downloader finished whole and the swarm's
/// efficiency is at least `floor`.
fn reaches(cfg: SimConfig, floor: f64) {
    let seed = cfg.seed;
    let r = Sim::new(cfg).run();
    println!("{}", r.line());
    assert!(r.ok(), "seed {seed}: {}", r.line());
    assert!(r.efficiency >= floor, "seed {seed}: {}", r.line());
}

/// Issue 12's configuration: 64 MiB in 256 KiB chunks.
fn issue_12(peers: usize, seed: u64) -> SimConfig {
    swarm(peers, 64 << 20, 256 * 1024, seed)
}

/// Issue 12's 20-peer swarm with `change` made to it, for seeds 1-3: each at least `floor`.
fn twenty_peers_with(change: impl Fn(&mut SimConfig), floor: f64) {
    for seed in 1..=3 {
        let mut cfg = issue_12(20, seed);
        change(&mut cfg);
        reaches(cfg, floor);
    }
}

#[test]
#[ignore = "seconds in release, minutes in debug: run with --release -- --ignored"]
fn twenty_peers_64_mib_in_256_kib_chunks_reach_90_percent() {
    // Measured 0.921 / 0.915 / 0.919.
    twenty_peers_with(|_| {}, 0.9);
}

#[test]
#[ignore = "about a minute in release: run with --release -- --ignored"]
fn a_hundred_peers_64_mib_in_256_kib_chunks_reach_85_percent() {
    // Measured 0.865 (seeds 2 and 3: 0.863, 0.852).
    reaches(issue_12(100, 1), 0.85);
}

/// Half the downloaders ten times slower both ways: the fast ones must not queue their uplinks
/// for the slow ones (a pipeline deeper than a round trip's worth did: 0.862 / 0.885 / 0.874).
#[test]
#[ignore = "seconds in release, minutes in debug: run with --release -- --ignored"]
fn half_the_peers_ten_times_slower_reach_95_percent() {
    // Measured 0.958 / 0.974 / 0.971.
    twenty_peers_with(|c| c.slow_peers = 10, 0.95);
}

/// Five downloaders crash at random times: the survivors must not end up waiting on each
/// other for a chunk the crashed ones were passing on (seed 3 stood still 2.4 s that way, 0.646).
#[test]
#[ignore = "seconds in release, minutes in debug: run with --release -- --ignored"]
fn five_crashes_leave_the_rest_at_88_percent() {
    // Measured 0.909 / 0.895 / 0.905.
    twenty_peers_with(|c| c.crashes = 5, 0.88);
}

/// A swarm past what any table was sized for at compile time: before the tracker's tables
/// were sized at run time, 40 of 199 downloaders waited for ever (its table held 160).
#[test]
#[ignore = "about a minute in release: run with --release -- --ignored"]
fn five_hundred_peers_all_complete() {
    let r = Sim::new(swarm(500, 16 << 20, 256 * 1024, 1)).run();
    println!("{}", r.line());
    assert!(r.ok(), "{}", r.line());
    assert_eq!((r.completed, r.downloaders), (499, 499), "{}", r.line());
}
