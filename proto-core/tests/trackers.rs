//! Several trackers: which ones a peer registers with, and who stands in for one that is down.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use proto_core::io::Action;
use proto_core::peer::{HostPeer, PeerConfig, Trackers};
use proto_core::testing::{self, MemStore};
use proto_core::time::{Duration, Instant};
use proto_core::wire::NodeId;

fn trackers(n: u8) -> Trackers {
    let mut t = Trackers::default();
    for i in 0..n {
        assert!(t.push(SocketAddr::from(([10, 0, 0, i + 1], 7070))));
    }
    t
}

fn node(i: u32) -> NodeId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_le_bytes());
    NodeId(id)
}

/// The tracker addresses a peer dialled in one drain.
fn dialled(p: &mut HostPeer, now: Instant) -> Vec<(proto_core::conn::ConnId, SocketAddr)> {
    testing::drain(p, now, &mut MemStore::default())
        .actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Connect { conn, addr } => Some((conn, addr)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_peer_registers_with_two_of_four_trackers_and_the_swarm_spreads_evenly() {
    let mut picks: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for i in 0..2_000 {
        let mut c = PeerConfig::new(node(i), 7000, None);
        c.trackers = trackers(4);
        let mut p = HostPeer::new(c, Instant::ZERO);
        let d = dialled(&mut p, Instant::ZERO);
        assert_eq!(d.len(), 2, "peer {i} dialled {d:?}");
        for (_, a) in d {
            *picks.entry(a).or_default() += 1;
        }
    }
    // Each tracker holds about half the swarm (1,000 of 2,000 in expectation).
    assert_eq!(picks.len(), 4);
    for (a, n) in &picks {
        assert!((850..=1150).contains(n), "{a} holds {n} of 2,000 peers");
    }
}

#[test]
fn the_next_tracker_stands_in_for_one_that_is_down() {
    let mut c = PeerConfig::new(node(7), 7000, None);
    c.trackers = trackers(4);
    let order = c.trackers.ranked_for(&c.node);
    let mut p = HostPeer::new(c, Instant::ZERO);
    let first = dialled(&mut p, Instant::ZERO);
    let addr = |i: u8| c.trackers.get(usize::from(i)).unwrap();
    assert_eq!(
        first.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![addr(order[0]), addr(order[1])],
        "the two best for this node, in its order"
    );
    // The best one refuses: the third in the ranking is due at once.
    let now = Instant::ZERO + Duration::from_millis(10);
    p.handle_closed(now, first[0].0);
    let d = testing::drain(&mut p, now, &mut MemStore::default());
    assert_eq!(d.timeout, now, "a stand-in is due now");
    p.handle_timeout(now);
    let next = dialled(&mut p, now);
    assert_eq!(
        next.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![addr(order[2])]
    );
    // With one tracker per peer, only the best is dialled.
    let mut c1 = c;
    c1.trackers_per_peer = 1;
    let mut p1 = HostPeer::new(c1, Instant::ZERO);
    assert_eq!(dialled(&mut p1, Instant::ZERO).len(), 1);
}
