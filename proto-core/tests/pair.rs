//! A peer and a tracker joined by `proto_core::testing::Pair`: the tracker session end to end,
//! with nothing played by hand.

use std::net::SocketAddr;

use proto_core::peer::{Peer, PeerConfig, PeerEvent};
use proto_core::storage::{Region, StorageKey};
use proto_core::testing::{End, Pair};
use proto_core::time::Duration;
use proto_core::time::Instant;
use proto_core::tracker::{SmallTrackerMemory, Tracker, TrackerConfig, TrackerEvent};
use proto_core::wire::NodeId;

type P = Peer<'static, 8>;

type T = Tracker<'static>;

fn pair() -> Pair<P, T> {
    let tracker_addr: SocketAddr = "10.0.0.1:7070".parse().unwrap();
    let memory: &'static mut SmallTrackerMemory = Box::leak(Box::default());
    let tracker = Tracker::with_memory(
        TrackerConfig::new(NodeId([0xee; 16])),
        Instant::ZERO,
        memory,
    );
    let peer = proto_core::testing::fixed_peer::<4, 1, 8, 4, 16>(
        PeerConfig::new(NodeId([1; 16]), 7000, Some(tracker_addr)),
        Instant::ZERO,
    );
    Pair::new(
        End::new(peer, "10.0.0.2:7000".parse().unwrap()),
        End::new(tracker, tracker_addr),
    )
}

fn registrations(pair: &Pair<P, T>) -> usize {
    pair.a
        .events
        .iter()
        .filter(|e| matches!(e, PeerEvent::Registered { .. }))
        .count()
}

#[test]
fn a_peer_registers_publishes_stays_and_comes_back_after_a_reset() {
    let mut pair = pair();
    pair.step();
    assert_eq!(registrations(&pair), 1);
    assert!(matches!(
        pair.b.events[..],
        [TrackerEvent::PeerJoined { .. }]
    ));

    // Share a file: its hashes go from the peer's store to the tracker's.
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let m = proto_core::testing::manifest_of("p.bin", &data, 1024);
    let (header, id, hashes) = (m.header, m.id, m.hashes);
    let key = StorageKey {
        slot: 0,
        region: Region::Hashes,
    };
    pair.a.store.set(key, &hashes);
    let now = pair.now;
    assert_eq!(pair.a.node.share(now, id, header).unwrap(), 0);
    pair.step();
    assert!(pair.a.events.contains(&PeerEvent::Published { file: id }));
    assert_eq!(pair.b.store.bytes(key), &hashes[..]);

    // A minute of pings answered: still registered, nothing lost.
    pair.advance(Duration::from_secs(60));
    assert!(!pair
        .a
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::TrackerLost { .. })));
    assert_eq!(pair.b.node.peer_count(), 1);

    // The connection is reset: the peer says so, dials again after its backoff, registers
    // again and publishes again (the tracker's state is soft).
    pair.cut();
    assert!(pair
        .a
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::TrackerLost { .. })));
    assert_eq!(pair.b.node.peer_count(), 0);
    pair.advance(Duration::from_secs(5));
    assert_eq!(registrations(&pair), 2);
    assert_eq!(pair.b.node.file_count(), 1);
    pair.a.node.check_invariants();
    pair.b.node.check_invariants();
}
