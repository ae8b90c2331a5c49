//! Several trackers and peer exchange in the simulator: a swarm survives its trackers, new
//! peers join through one peer they know, and a peer lying in exchange costs bounded work.

use std::collections::BTreeSet;

use proto_core::peer::PeerEvent;
use proto_core::time::{Duration, Instant};
use tests::sim::{Fault, Sim, SimConfig};

const SEEDS: std::ops::Range<u64> = 1..6;

fn cfg(seed: u64, peers: usize) -> SimConfig {
    SimConfig {
        peers,
        seeders: 1,
        file_bytes: 4 << 20,
        chunk_bytes: 256 * 1024,
        latency: Duration::from_millis(5),
        up: 4_000_000,
        down: 8_000_000,
        seed,
        time_limit: Duration::from_secs(300),
        trackers: 2,
        ..SimConfig::default()
    }
}

/// The distinct addresses peer `i` exchanged bitfields with.
fn sources(sim: &Sim, i: usize) -> BTreeSet<std::net::SocketAddr> {
    sim.events
        .iter()
        .filter(|(_, n, _)| *n == i)
        .filter_map(|(_, _, e)| match e {
            PeerEvent::PeerConnected { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect()
}

#[test]
fn new_peers_join_through_one_known_peer_while_every_tracker_is_down() {
    const EARLY: usize = 6; // the seeder and five downloaders, with the trackers up
    const PEERS: usize = 24;
    for seed in SEEDS {
        let down = Instant::from_millis(800);
        let mut sim = Sim::with_setup(cfg(seed, PEERS), |sim| {
            for (k, i) in (EARLY + 1..=PEERS).enumerate() {
                // Every newcomer knows the same one early downloader (not the seeder).
                let at = Instant::from_millis(2_000 + 150 * k as u64);
                sim.join_later(i, at, vec![2]);
            }
        });
        for t in sim.tracker_nodes().to_vec() {
            sim.at(down, Fault::Crash(t));
        }
        let r = sim.run();
        assert!(r.ok(), "seed {seed}: {}", r.line());
        assert_eq!(r.completed, PEERS - 1, "seed {seed}: {}", r.line());
        for i in EARLY + 1..=PEERS {
            let registered = sim
                .events
                .iter()
                .any(|(_, n, e)| *n == i && matches!(e, PeerEvent::Registered { .. }));
            assert!(!registered, "seed {seed}: peer {i} found a tracker");
            // It met the swarm beyond the one peer it was given: exchange told it of others.
            let met = sources(&sim, i).len();
            assert!(met >= 4, "seed {seed}: peer {i} met only {met} peers");
        }
    }
}

#[test]
fn a_getter_finds_holders_through_the_second_tracker_when_the_first_is_down() {
    for seed in SEEDS {
        let peers = 6;
        let mut sim = Sim::with_setup(cfg(seed, peers), |sim| {
            sim.join_later(peers, Instant::from_secs(2), Vec::new());
        });
        let [first, second] = sim.tracker_nodes().to_vec()[..] else {
            panic!("two trackers");
        };
        sim.at(Instant::from_millis(500), Fault::Crash(first));
        let r = sim.run();
        assert!(r.ok(), "seed {seed}: {}", r.line());
        let second_addr = sim.addr(second);
        let via_second = sim.events.iter().any(|(_, n, e)| {
            *n == peers
                && matches!(e, PeerEvent::Registered { tracker, .. } if *tracker == second_addr)
        });
        assert!(
            via_second,
            "seed {seed}: the getter did not register with the second tracker"
        );
        assert!(
            sim.completed_at(peers).is_some(),
            "seed {seed}: {}",
            r.line()
        );
    }
}
