//! The seed documents' scenarios, each run in the simulator over many seeds. Every assertion
//! names its seed, so a failure can be replayed with `sim --seed N` or by narrowing `SEEDS`.

use proto_core::peer::PeerEvent;
use proto_core::peer::{BlockCheck, FetchFailure, PeerConfig};
use proto_core::time::{Duration, Instant};
use proto_core::tracker::{LeaveReason, TrackerEvent};
use tests::sim::{Fault, Report, Sim, SimConfig, TRACKER};

const SEEDS: std::ops::Range<u64> = 1..11;

fn small(seed: u64) -> SimConfig {
    SimConfig {
        peers: 5,
        seeders: 1,
        file_bytes: 3 << 20,
        chunk_bytes: 64 * 1024,
        latency: Duration::from_millis(5),
        up: 4_000_000,
        down: 8_000_000,
        seed,
        time_limit: Duration::from_secs(300),
        ..SimConfig::default()
    }
}

fn assert_ok(r: &Report) {
    assert!(r.ok(), "seed {}: {}", r.seed, r.line());
}

/// Every event of peer `i`.
fn events_of(sim: &Sim, i: usize) -> impl Iterator<Item = (Instant, &PeerEvent)> {
    sim.events
        .iter()
        .filter(move |(_, n, _)| *n == i)
        .map(|(t, _, e)| (*t, e))
}

#[test]
fn parallel_download_from_several_peers() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 4;
        cfg.seeders = 3;
        cfg.sniff = true;
        let mut sim = Sim::new(cfg);
        let r = sim.run();
        assert_ok(&r);
        // The one downloader (node 4) asked every seeder for blocks.
        let mut sources: Vec<usize> = sim
            .requests
            .iter()
            .filter(|q| q.from == 4)
            .map(|q| q.to)
            .collect();
        sources.sort();
        sources.dedup();
        assert_eq!(
            sources,
            vec![1, 2, 3],
            "seed {seed}: blocks came from {sources:?}"
        );
        // And faster than one seeder alone could give it: each uploads 4 MB/s, it takes 8.
        let one_seeder = 3.0 * 1048576.0 / 4e6;
        assert!(r.sim_secs < one_seeder, "seed {seed}: {} s", r.sim_secs);
    }
}

#[test]
fn peers_report_what_they_moved_and_the_tracker_shows_it() {
    for seed in 1..4 {
        let cfg = small(seed);
        let size = cfg.file_bytes;
        let mut sim = Sim::new(cfg);
        assert_ok(&sim.run());
        // Two ping rounds after the last download: every peer has reported since.
        let later = sim.now() + Duration::from_secs(11);
        sim.run_until(later);
        let t = sim.tracker().expect("the tracker is up");
        let peers: Vec<_> = t.peers().collect();
        assert_eq!(peers.len(), 5, "seed {seed}");
        let downloaders = peers.iter().filter(|p| p.downloaded == size).count();
        assert_eq!(downloaders, 4, "seed {seed}: {peers:?}");
        let seeders = peers.iter().filter(|p| p.downloaded == 0).count();
        assert_eq!(seeders, 1, "seed {seed}: {peers:?}");
        let up: u64 = peers.iter().map(|p| p.uploaded).sum();
        assert!(up >= 4 * size, "seed {seed}: {up} uploaded of {}", 4 * size);
        let files: Vec<_> = t.files().collect();
        assert_eq!((files.len(), files[0].complete), (1, 5), "seed {seed}");
        assert_eq!(t.holders(&files[0].file).count(), 5, "seed {seed}");
    }
}

#[test]
fn a_peer_that_drops_its_file_is_forgotten_as_its_holder_but_stays_registered() {
    let mut sim = Sim::new(small(1));
    assert_ok(&sim.run());
    let file = sim.tracker().unwrap().files().next().unwrap().file;
    assert_eq!(sim.tracker().unwrap().holders(&file).count(), 5);
    // The seeder (node 1) stops sharing; a downloader (node 3) cancels.
    sim.cancel(1);
    sim.cancel(3);
    let later = sim.now() + Duration::from_millis(100);
    sim.run_until(later);
    let t = sim.tracker().unwrap();
    let holders: Vec<_> = t.holders(&file).map(|h| h.peer.addr).collect();
    assert_eq!(holders.len(), 3, "{holders:?}");
    assert!(!holders.contains(&sim.addr(1)) && !holders.contains(&sim.addr(3)));
    assert_eq!(t.peers().count(), 5, "both stay registered");
}

#[test]
fn a_downloaded_chunk_is_served_before_its_holder_finishes() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.sniff = true;
        let mut sim = Sim::new(cfg);
        assert_ok(&sim.run());
        // Some downloader asked another downloader for a block before that one was complete.
        let served_early = sim.requests.iter().any(|q| {
            q.to != 1
                && sim.completed_at(q.to).is_some_and(|done| q.at < done)
                && sim.holds(q.to, q.block.chunk)
        });
        assert!(
            served_early,
            "seed {seed}: no chunk went downloader to downloader before completion"
        );
    }
}

#[test]
fn seeder_crashing_mid_transfer_others_finish() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.seeders = 2;
        cfg.peers = 6;
        let mut sim = Sim::new(cfg);
        sim.at(Instant::from_millis(400), Fault::Crash(1));
        let r = sim.run();
        assert_ok(&r);
        assert!(
            sim.completed_at(3)
                .is_some_and(|t| t > Instant::from_millis(400)),
            "seed {seed}: finished before the crash"
        );
    }
}

#[test]
fn only_holder_crashing_reports_missing_chunks_then_finishes_when_it_returns() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 3;
        let mut sim = Sim::new(cfg);
        let crash = Instant::from_millis(500);
        let back = Instant::from_secs(20);
        sim.at(crash, Fault::Crash(1));
        sim.at(back, Fault::Restart(1));
        sim.run_until(back - Duration::from_millis(1));
        for d in [2, 3] {
            assert!(
                sim.completed_at(d).is_none(),
                "seed {seed}: peer {d} completed without the only holder"
            );
            let peer = sim.peer(d).expect("downloader is up");
            let slot = sim.slot(d).expect("downloader has a slot");
            // Exactly the chunks neither downloader holds are reported missing.
            let expected: Vec<u32> = (0..sim.chunk_count())
                .filter(|&c| !sim.holds(2, c) && !sim.holds(3, c))
                .collect();
            assert!(
                !expected.is_empty(),
                "seed {seed}: the crash came too late to test anything"
            );
            let mut reported = Vec::new();
            let mut from = 0;
            while let Some(r) = peer.missing(slot, from) {
                reported.extend(r.start..r.end);
                from = r.end;
            }
            assert_eq!(reported, expected, "seed {seed}: peer {d}");
            let told = events_of(&sim, d).any(|(_, e)| matches!(e, PeerEvent::Unavailable { missing, .. } if *missing as usize == expected.len()));
            assert!(
                told,
                "seed {seed}: peer {d} never reported {} unavailable chunks",
                expected.len()
            );
        }
        let r = sim.run();
        assert_ok(&r);
        assert!(sim.completed_at(2).is_some_and(|t| t > back), "seed {seed}");
    }
}

#[test]
fn tracker_crashing_mid_transfer_transfers_finish_and_peers_reregister() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 5;
        let mut sim = Sim::new(cfg);
        let crash = Instant::from_millis(300);
        let back = Instant::from_secs(3);
        sim.at(crash, Fault::Crash(TRACKER));
        sim.at(back, Fault::Restart(TRACKER));
        let r = sim.run();
        assert_ok(&r);
        // Transfers went on without the tracker.
        let during = (2..=5)
            .filter(|&d| sim.completed_at(d).is_some_and(|t| t > crash && t < back))
            .count();
        assert!(
            during > 0,
            "seed {seed}: nobody finished while the tracker was down"
        );
        sim.run_until(back + Duration::from_secs(40));
        for p in 1..=5 {
            let again = events_of(&sim, p)
                .any(|(t, e)| t >= back && matches!(e, PeerEvent::Registered { .. }));
            assert!(again, "seed {seed}: peer {p} did not register again");
        }
        // The tracker lists the file again: the seeder re-published it.
        assert!(
            sim.tracker_events.iter().any(|(t, e)| *t >= back
                && matches!(e, proto_core::tracker::TrackerEvent::Published { .. })),
            "seed {seed}: not re-published"
        );
    }
}

#[test]
fn five_percent_loss() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.loss = 0.05;
        cfg.peers = 6;
        cfg.seeders = 2;
        assert_ok(&Sim::new(cfg).run());
    }
}

#[test]
fn peer_crashes_at_random_times_do_not_stop_the_rest() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 8;
        cfg.seeders = 2;
        cfg.crashes = 3;
        let r = Sim::new(cfg).run();
        assert_ok(&r);
        assert_eq!(r.downloaders, 3, "seed {seed}");
    }
}

#[test]
fn corrupt_peer_is_banned_and_the_download_is_still_correct() {
    corrupt_peer_is_banned(|_, _| {});
}

#[test]
fn corrupt_peer_is_banned_when_blocks_are_hashed_outside_the_peer() {
    // As on a host, where a thread beside the receive loop hashes each written block.
    corrupt_peer_is_banned(|_, c| c.block_check = BlockCheck::Deferred);
}

fn corrupt_peer_is_banned(tune: fn(usize, &mut PeerConfig)) {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.seeders = 2;
        cfg.corrupt_seeders = 1;
        cfg.peers = 4;
        cfg.tune = tune;
        let mut sim = Sim::new(cfg);
        let r = sim.run();
        assert_ok(&r);
        assert_eq!(r.bad_chunks_written, 0);
        let rejected = sim
            .events
            .iter()
            .any(|(_, _, e)| matches!(e, PeerEvent::ChunkRejected { .. }));
        let banned = sim
            .events
            .iter()
            .any(|(_, _, e)| matches!(e, PeerEvent::PeerBanned { .. }));
        assert!(
            rejected && banned,
            "seed {seed}: rejected {rejected}, banned {banned}"
        );
    }
}

#[test]
fn rarest_chunks_are_requested_before_common_ones() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 3;
        cfg.sniff = true;
        // The downloader's own choice is tested: the seeder shows everything at once.
        cfg.tune = |_, c| c.super_seed = false;
        // Peer 2 holds the first half, so the second half is rare (only the seeder has it).
        let half = (cfg.file_bytes / u64::from(cfg.chunk_bytes) / 2) as u32;
        let mut sim = Sim::with_setup(cfg, |sim| sim.give_partial(2, |c| c < half));
        sim.run();
        // Once the downloader knows both holders (a little after it connected to the second),
        // what it asks the seeder for first is from the rare half.
        let knows_both = events_of(&sim, 3)
            .filter(|(_, e)| matches!(e, PeerEvent::PeerConnected { .. }))
            .map(|(t, _)| t)
            .nth(1)
            .expect("the downloader connected to both holders")
            + Duration::from_millis(20);
        let first: Vec<u32> = sim
            .requests
            .iter()
            .filter(|q| q.from == 3 && q.to == 1 && q.at > knows_both)
            .take(8)
            .map(|q| q.block.chunk)
            .collect();
        assert!(
            !first.is_empty(),
            "seed {seed}: nothing asked of the seeder"
        );
        assert!(
            first.iter().all(|&c| c >= half),
            "seed {seed}: first asks of the seeder {first:?}, rare ones are >= {half}"
        );
    }
}

#[test]
fn upload_rate_limit_is_respected() {
    for seed in 1..4 {
        let mut cfg = small(seed);
        cfg.peers = 2;
        // The seeder may send 500 kB/s (bursts of 125 kB): 3 MiB take at least 6 s.
        cfg.tune = |i, c| {
            if i == 1 {
                c.upload_rate = Some(500_000);
            }
        };
        let r = Sim::new(cfg).run();
        assert_ok(&r);
        // A block goes out while any token is left, so the bucket may end one block (64 KiB)
        // in debt: the floor allows the burst and that block.
        let floor = (3.0 * 1048576.0 - 125_000.0 - 65536.0) / 500_000.0;
        assert!(
            r.sim_secs >= floor,
            "seed {seed}: {} s, limit allows no less than {floor} s",
            r.sim_secs
        );
        assert!(
            r.sim_secs < floor * 1.3,
            "seed {seed}: {} s, the limit should still be used",
            r.sim_secs
        );
    }
}

#[test]
fn download_rate_limit_is_respected() {
    for seed in 1..4 {
        let mut cfg = small(seed);
        cfg.peers = 3;
        // Peer 3 may take 500 kB/s (bursts of 125 kB); peer 2 has no limit.
        cfg.tune = |i, c| {
            if i == 3 {
                c.download_rate = Some(500_000);
            }
        };
        let mut sim = Sim::new(cfg);
        let r = sim.run();
        assert_ok(&r);
        let secs = |i| sim.completed_at(i).unwrap().total_micros() as f64 / 1e6;
        // A request goes out while any token is left, so the bucket may end one request
        // (64 KiB) in debt: the floor allows the burst and that request.
        let floor = (3.0 * 1048576.0 - 125_000.0 - 65536.0) / 500_000.0;
        assert!(
            secs(3) >= floor,
            "seed {seed}: {} s, the limit allows no less than {floor} s",
            secs(3)
        );
        assert!(
            secs(3) < floor * 1.3,
            "seed {seed}: {} s, the limit should still be used",
            secs(3)
        );
        assert!(
            secs(2) < floor / 2.0,
            "seed {seed}: the unlimited peer took {} s",
            secs(2)
        );
    }
}

#[test]
fn upload_slots_bound_concurrent_uploads_and_everyone_still_finishes() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 6;
        cfg.tune = |_, c| c.upload_slots = 1;
        assert_ok(&Sim::new(cfg).run());
    }
}

#[test]
fn a_stalled_source_loses_its_requests_to_others() {
    for seed in SEEDS {
        let mut cfg = small(seed);
        cfg.peers = 3;
        cfg.seeders = 2;
        // Seeder 1 takes requests and then sends nothing for ages (1 byte/s).
        cfg.tune = |i, c| {
            if i == 1 {
                c.upload_rate = Some(1);
            }
        };
        let r = Sim::new(cfg).run();
        assert_ok(&r);
        // From seeder 2 alone it takes under a second; the stall costs one stall timeout.
        assert!(r.sim_secs < 15.0, "seed {seed}: {} s", r.sim_secs);
    }
}

#[test]
fn fetch_gives_up_at_the_deadline_when_no_holder_returns() {
    for seed in 1..4 {
        let mut cfg = small(seed);
        cfg.peers = 2;
        cfg.tune = |_, c| c.fetch_deadline = Some(Duration::from_secs(10));
        let mut sim = Sim::new(cfg);
        sim.at(Instant::from_millis(500), Fault::Crash(1));
        sim.run_until(Instant::from_secs(30));
        let failed = events_of(&sim, 2).find_map(|(t, e)| match e {
            PeerEvent::FetchFailed {
                reason: FetchFailure::Unavailable { missing },
                ..
            } => Some((t, *missing)),
            _ => None,
        });
        let (at, missing) = failed.unwrap_or_else(|| panic!("seed {seed}: no FetchFailed"));
        assert!(
            missing > 0 && at >= Instant::from_secs(10),
            "seed {seed}: at {at} missing {missing}"
        );
        assert!(
            sim.completed_at(2).is_none(),
            "seed {seed}: reported complete"
        );
    }
}

#[test]
fn leave_tells_the_tracker_and_closes_every_connection() {
    for seed in 1..4 {
        let mut cfg = small(seed);
        cfg.peers = 4;
        let mut sim = Sim::new(cfg);
        sim.run_until(Instant::from_millis(300));
        sim.leave(2);
        sim.run_until(Instant::from_secs(2));
        assert!(
            sim.peer(2).is_some_and(|p| p.is_idle()),
            "seed {seed}: connections left open"
        );
        let told = sim.tracker_events.iter().any(|(_, e)| {
            matches!(
                e,
                TrackerEvent::PeerLeft {
                    reason: LeaveReason::Left,
                    ..
                }
            )
        });
        assert!(told, "seed {seed}: the tracker did not hear Leave");
        // The others carry on without it.
        sim.run_until(Instant::from_secs(60));
        assert!(
            sim.completed_at(3).is_some() && sim.completed_at(4).is_some(),
            "seed {seed}"
        );
    }
}
