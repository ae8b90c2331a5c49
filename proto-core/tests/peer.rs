//! Peer rules checked directly through the sans-IO API, with the test playing the tracker and
//! the remote peers byte by byte. Whole-swarm behaviour is in tests/ (the simulator).

use std::net::SocketAddr;

use proto_core::conn::ConnId;
use proto_core::io::Action;
use proto_core::manifest::ManifestHeader;
use proto_core::peer::{FetchFailure, Peer, PeerConfig, PeerEvent};
use proto_core::storage::{Region, StorageKey};
use proto_core::testing::{self, frame, MemStore, Seen};
use proto_core::time::{Duration, Instant};
use proto_core::wire::{BlockRef, FileId, Hello, Message, NodeId, RejectReason, PROTOCOL_VERSION};

type P = Peer<'static, 8>;

const TRACKER: &str = "10.0.0.1:7070";

struct Harness {
    p: P,
    now: Instant,
    store: MemStore,
    seen: Seen<PeerEvent>,
    tracker: ConnId,
}

fn hello(n: u8, port: u16) -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        node: NodeId([n; 16]),
        listen_port: port,
        nonce: [0x11; 16],
    })
}

impl Harness {
    /// A peer in fixed memory registered with a (pretend) tracker.
    fn new(config: impl FnOnce(&mut PeerConfig)) -> Self {
        let mut c = PeerConfig::new(NodeId([1; 16]), 7000, Some(TRACKER.parse().unwrap()));
        config(&mut c);
        Self::over(proto_core::testing::fixed_peer::<6, 2, 8, 8, 16>(
            c,
            Instant::ZERO,
        ))
    }

    /// A peer with its tables on the heap (as a host runs it), registered with a tracker.
    fn heap() -> Self {
        let c = PeerConfig::new(NodeId([1; 16]), 7000, Some(TRACKER.parse().unwrap()));
        Self::over(P::new(c, Instant::ZERO))
    }

    fn over(p: P) -> Self {
        let mut h = Harness {
            p,
            now: Instant::ZERO,
            store: MemStore::default(),
            seen: Seen::default(),
            tracker: ConnId::from_parts(u16::MAX, 0),
        };
        h.drain();
        let tracker_addr: SocketAddr = TRACKER.parse().unwrap();
        h.tracker = h
            .seen
            .actions
            .iter()
            .find_map(|a| match *a {
                Action::Connect { conn, addr } if addr == tracker_addr => Some(conn),
                _ => None,
            })
            .expect("connects to the tracker at once");
        let tracker = h.tracker;
        h.p.handle_connected(h.now, tracker);
        h.drain();
        h.feed(tracker, &hello(0xee, 0));
        h.feed(
            tracker,
            &Message::Registered {
                addr: "10.0.0.2:7000".parse().unwrap(),
            },
        );
        h
    }

    /// Feeds bytes from a remote; returns the bytes the peer wrote to storage meanwhile.
    fn feed_bytes(&mut self, c: ConnId, bytes: &[u8]) -> u64 {
        let before = self.store.written;
        let d = testing::feed(&mut self.p, self.now, c, bytes, &mut self.store);
        self.seen.add(d);
        self.store.written - before
    }

    fn feed(&mut self, c: ConnId, m: &Message) -> u64 {
        self.feed_bytes(c, &frame(m))
    }

    fn drain(&mut self) {
        let d = testing::drain(&mut self.p, self.now, &mut self.store);
        self.seen.add(d);
    }

    fn take(&mut self, c: ConnId) -> Vec<Message> {
        self.seen.take(c)
    }

    /// Node `n` connects from `port`, fetching `file` (of `chunks` chunks, at most 8) and
    /// holding none of it; what the peer sends it is left to take.
    fn downloader(&mut self, n: u8, port: u16, file: FileId, chunks: u32) -> ConnId {
        let c = self
            .p
            .handle_accept(self.now, format!("10.0.0.{n}:{port}").parse().unwrap())
            .unwrap()
            .conn;
        self.feed(c, &hello(n, 7000 + u16::from(n)));
        self.feed(c, &Message::Bitfield { file, chunks });
        self.feed_bytes(c, &[0]);
        c
    }
}

fn manifest(len: usize) -> (ManifestHeader, FileId, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
    let m = proto_core::testing::manifest_of("f.bin", &data, 1024);
    (m.header, m.id, m.hashes)
}

#[test]
fn a_manifest_that_does_not_hash_to_its_id_is_discarded_and_asked_for_again() {
    let mut h = Harness::new(|_| {});
    let (header, id, mut hashes) = manifest(4096);
    let slot = h.p.fetch(h.now, id).unwrap();
    h.drain();
    assert!(h
        .take(h.tracker)
        .contains(&Message::GetManifest { file: id }));
    hashes[5] ^= 1;
    let mut bytes = frame(&Message::Manifest {
        file: id,
        header: header.clone(),
    });
    bytes.extend_from_slice(&hashes);
    let t = h.tracker;
    let written = h.feed_bytes(t, &bytes);
    // The hashes streamed to storage as they came...
    assert_eq!(written, hashes.len() as u64);
    // ...and are thrown away once they do not match the id.
    assert!(h
        .seen
        .events
        .contains(&PeerEvent::ManifestRejected { slot }));
    assert!(h.store.discarded.contains(&StorageKey {
        slot,
        region: Region::Hashes
    }));
    assert!(!h
        .seen
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::ManifestReceived { .. })));
    // Asked again on a later tick.
    h.now = Instant::from_secs(1);
    h.p.handle_timeout(h.now);
    h.drain();
    assert!(h.take(t).contains(&Message::GetManifest { file: id }));
}

#[test]
fn requests_are_checked_before_anything_is_served() {
    let mut h = Harness::new(|c| c.upload_slots = 1);
    let (header, id, _) = manifest(4096);
    let slot = h.p.share(h.now, id, header).unwrap();
    h.drain();
    let a =
        h.p.handle_accept(h.now, "10.0.0.9:50000".parse().unwrap())
            .unwrap()
            .conn;
    h.feed(a, &hello(9, 7009));
    h.feed(
        a,
        &Message::Bitfield {
            file: id,
            chunks: 4,
        },
    );
    h.feed_bytes(a, &[0]);
    h.take(a);
    let block = |chunk, offset, len| BlockRef {
        file: id,
        chunk,
        offset,
        len,
    };
    h.feed(a, &Message::Request(block(9, 0, 10)));
    h.feed(a, &Message::Request(block(0, 1000, 100)));
    h.feed(a, &Message::Request(block(0, 0, 0)));
    let got = h.take(a);
    assert_eq!(
        got,
        vec![
            Message::Reject {
                block: block(9, 0, 10),
                reason: RejectReason::OutOfRange
            },
            Message::Reject {
                block: block(0, 1000, 100),
                reason: RejectReason::OutOfRange
            },
            Message::Reject {
                block: block(0, 0, 0),
                reason: RejectReason::OutOfRange
            },
        ]
    );
    // A good request is served: the Block header, then the payload from storage.
    h.feed(a, &Message::Request(block(1, 0, 512)));
    assert_eq!(h.take(a), vec![Message::Block(block(1, 0, 512))]);
    // One upload slot: a second requester is told it is busy while the first holds it.
    h.feed(a, &Message::Request(block(2, 0, 512)));
    let b =
        h.p.handle_accept(h.now, "10.0.0.8:50000".parse().unwrap())
            .unwrap()
            .conn;
    h.feed(b, &hello(8, 7008));
    h.feed(
        b,
        &Message::Bitfield {
            file: id,
            chunks: 4,
        },
    );
    h.feed_bytes(b, &[0]);
    h.take(b);
    h.feed(b, &Message::Request(block(3, 0, 512)));
    assert_eq!(
        h.take(b),
        vec![Message::Reject {
            block: block(3, 0, 512),
            reason: RejectReason::Busy
        }]
    );
    let _ = slot;
}

#[test]
fn a_peer_asking_for_a_file_we_do_not_have_is_told_and_closed() {
    let mut h = Harness::new(|_| {});
    let a =
        h.p.handle_accept(h.now, "10.0.0.9:50000".parse().unwrap())
            .unwrap()
            .conn;
    h.feed(a, &hello(9, 7009));
    let other = FileId([7; 32]);
    h.feed(
        a,
        &Message::Bitfield {
            file: other,
            chunks: 0,
        },
    );
    assert!(h.take(a).contains(&Message::NotFound { file: other }));
    assert!(h.seen.actions.contains(&Action::Close(a)));
}

#[test]
fn a_storage_failure_ends_the_fetch_with_the_reason() {
    let mut h = Harness::new(|_| {});
    let (_, id, _) = manifest(4096);
    let slot = h.p.fetch(h.now, id).unwrap();
    h.drain();
    h.p.handle_storage_failed(
        h.now,
        StorageKey {
            slot,
            region: Region::Data,
        },
    );
    h.drain();
    assert!(h.seen.events.contains(&PeerEvent::FetchFailed {
        slot,
        reason: FetchFailure::Storage
    }));
    assert!(h.p.file_info(slot).is_none());
}

#[test]
fn bytes_before_hello_are_misbehaviour() {
    let mut h = Harness::new(|_| {});
    let a =
        h.p.handle_accept(h.now, "10.0.0.9:50000".parse().unwrap())
            .unwrap()
            .conn;
    h.feed(a, &Message::Ping(1));
    assert!(h.seen.actions.contains(&Action::Close(a)));
    assert!(h
        .seen
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::Misbehaved { .. })));
}

#[test]
fn a_full_table_evicts_the_inbound_connection_that_has_done_least() {
    // 6 slots: the tracker's, one transfer, four connections that say nothing.
    let mut h = Harness::new(|_| {});
    let (header, id, _) = manifest(4096);
    h.p.share(h.now, id, header).unwrap();
    h.drain();
    let accept = |h: &mut Harness, from: &str| h.p.handle_accept(h.now, from.parse().unwrap());
    let busy = accept(&mut h, "10.0.0.9:1").unwrap().conn;
    h.feed(busy, &hello(9, 7009));
    h.feed(
        busy,
        &Message::Bitfield {
            file: id,
            chunks: 4,
        },
    );
    h.feed_bytes(busy, &[0]);
    let mut silent = Vec::new();
    for i in 0..4 {
        h.now += Duration::from_millis(10);
        let c = accept(&mut h, &format!("10.0.1.{i}:1")).unwrap();
        assert_eq!(c.evicted, None);
        silent.push(c.conn);
    }
    // Full: the newcomer takes the place of the one closest to its handshake deadline.
    let a = accept(&mut h, "10.0.2.1:1").unwrap();
    assert_eq!(a.evicted, Some(silent[0]));
    // One that finished its handshake but never said what it holds goes before none; a
    // connection carrying a transfer never goes.
    for (n, &c) in silent[1..].iter().enumerate() {
        h.feed(c, &hello(20 + n as u8, 7100 + n as u16));
    }
    h.feed(a.conn, &hello(30, 7200));
    h.feed(
        a.conn,
        &Message::Bitfield {
            file: id,
            chunks: 4,
        },
    );
    h.feed_bytes(a.conn, &[0]);
    let mut gone = Vec::new();
    for i in 0..3 {
        let b = accept(&mut h, &format!("10.0.3.{i}:1")).unwrap();
        gone.push(b.evicted.expect("a silent connection makes room"));
        h.feed(b.conn, &hello(40 + i, 7300 + u16::from(i)));
        h.feed(
            b.conn,
            &Message::Bitfield {
                file: id,
                chunks: 4,
            },
        );
        h.feed_bytes(b.conn, &[0]);
    }
    gone.sort();
    let mut want = silent[1..].to_vec();
    want.sort();
    assert_eq!(gone, want);
    // Only transfers are left: a stranger is refused.
    assert!(accept(&mut h, "10.0.4.1:1").is_err());
    // And one address holds at most `max_conns_per_ip` inbound slots.
    let mut h = Harness::new(|c| c.max_conns_per_ip = 2);
    let _ = accept(&mut h, "10.0.5.1:1").unwrap();
    let _ = accept(&mut h, "10.0.5.1:2").unwrap();
    assert!(accept(&mut h, "10.0.5.1:3").is_err());
    assert!(accept(&mut h, "10.0.5.2:1").is_ok());
}

#[test]
fn a_file_takes_inbound_connections_up_to_twice_the_ones_a_peer_opens() {
    // Two opened per file: four in all. A peer everyone dials first does not gather the
    // swarm's connections; the fifth remote goes to another holder.
    let mut h = Harness::new(|c| c.max_conns_per_file = 2);
    let (header, id, _) = manifest(4096);
    h.p.share(h.now, id, header).unwrap();
    h.drain();
    let mut conns = Vec::new();
    for i in 0..5u8 {
        let c =
            h.p.handle_accept(h.now, format!("10.0.1.{i}:1").parse().unwrap())
                .unwrap()
                .conn;
        h.feed(c, &hello(10 + i, 7000 + u16::from(i)));
        h.feed(
            c,
            &Message::Bitfield {
                file: id,
                chunks: 4,
            },
        );
        h.feed_bytes(c, &[0]);
        conns.push(c);
    }
    let connected = h
        .seen
        .events
        .iter()
        .filter(|e| matches!(e, PeerEvent::PeerConnected { .. }))
        .count();
    assert_eq!(connected, 4);
    assert!(h.seen.actions.contains(&Action::Close(conns[4])));
    for &c in &conns[..4] {
        assert!(!h.seen.actions.contains(&Action::Close(c)));
    }
}

#[test]
fn a_peer_that_reconnects_is_counted_once_among_the_peers_served() {
    let mut h = Harness::new(|_| {});
    let (header, id, _) = manifest(4096);
    let slot = h.p.share(h.now, id, header).unwrap();
    h.drain();
    let block = BlockRef {
        file: id,
        chunk: 1,
        offset: 0,
        len: 512,
    };
    // Node 9 connects, is served, leaves and comes back on a new connection; node 8 once.
    for (n, port) in [(9, 50000), (9, 50001), (8, 50002)] {
        let c = h.downloader(n, port, id, 4);
        h.take(c);
        h.feed(c, &Message::Request(block));
        assert_eq!(h.take(c), vec![Message::Block(block)]);
        h.p.handle_closed(h.now, c);
        h.drain();
    }
    let p = h.p.progress(slot).unwrap();
    assert_eq!(p.bytes_uploaded, 3 * 512);
    assert_eq!(p.peers_served, 2, "node 9 twice and node 8 are two peers");
}

/// A peer that dropped an established connection is dialled again within a quarter second
/// (a full table evicting us, at the start of a big swarm); one that refused the connect waits
/// the usual 2 s.
#[test]
fn a_dropped_connection_is_retried_soon_a_refused_one_later() {
    let mut h = Harness::new(|_| {});
    let (header, id, _) = manifest(4096);
    let slot = h.p.resume(h.now, id, header, []).unwrap();
    let dials = |h: &mut Harness, addr: SocketAddr| -> Vec<ConnId> {
        h.drain();
        h.seen
            .actions
            .extract_if(
                ..,
                |a| matches!(a, Action::Connect { addr: to, .. } if *to == addr),
            )
            .filter_map(|a| match a {
                Action::Connect { conn, .. } => Some(conn),
                _ => None,
            })
            .collect()
    };
    let wait = |h: &mut Harness, ms: u64| {
        h.now += Duration::from_millis(ms);
        h.p.handle_timeout(h.now);
    };
    // Dropped after the hellos.
    let a: SocketAddr = "10.0.0.7:7007".parse().unwrap();
    h.p.add_peer(h.now, slot, a).unwrap();
    let c = dials(&mut h, a)[0];
    h.p.handle_connected(h.now, c);
    h.feed(c, &hello(7, 7007));
    h.p.handle_closed(h.now, c);
    wait(&mut h, 200);
    assert!(dials(&mut h, a).is_empty(), "not at once");
    wait(&mut h, 100);
    assert_eq!(dials(&mut h, a).len(), 1, "again after 250 ms");
    // Refused: the connect never succeeded.
    let b: SocketAddr = "10.0.0.8:7008".parse().unwrap();
    h.p.add_peer(h.now, slot, b).unwrap();
    let c = dials(&mut h, b)[0];
    h.p.handle_closed(h.now, c);
    wait(&mut h, 1500);
    assert!(
        dials(&mut h, b).is_empty(),
        "a refused connect backs off longer"
    );
    wait(&mut h, 600);
    assert_eq!(dials(&mut h, b).len(), 1, "again after 2 s");
}

#[test]
fn a_super_seeders_offers_to_a_downloader_that_left_go_to_another() {
    // Super-seeding keeps its offers on the heap.
    let mut h = Harness::heap();
    let (header, id, _) = manifest(4096);
    h.p.share(h.now, id, header).unwrap();
    h.drain();
    // Four downloaders with nothing; the first two make the file super-seeded (it needs three
    // connections), the last two are offered the file's four chunks, two each.
    let mut offered = Vec::new();
    for n in 2..6u8 {
        let c = h.downloader(n, 50000, id, 4);
        let haves: Vec<u32> = h
            .take(c)
            .into_iter()
            .filter_map(|m| match m {
                Message::Have { ranges, .. } => Some(ranges[0].start..ranges[0].end),
                _ => None,
            })
            .flatten()
            .collect();
        offered.push((c, haves));
    }
    let [_, _, (a, at_a), (b, at_b)] = &offered[..] else {
        unreachable!("four downloaders")
    };
    assert_eq!((at_a.len(), at_b.len()), (2, 2), "{offered:?}");
    // a leaves before announcing what it was offered; b announces one of its chunks.
    h.p.handle_closed(h.now, *a);
    h.drain();
    let mut ranges = heapless::Vec::new();
    ranges
        .push(proto_core::wire::ChunkRange {
            start: at_b[0],
            end: at_b[0] + 1,
        })
        .unwrap();
    h.feed(*b, &Message::Have { file: id, ranges });
    // b is offered one of a's chunks: the seeder's only copy had left for a.
    let next: Vec<Message> = h.take(*b);
    assert!(
        next.iter().any(|m| matches!(m,
            Message::Have { ranges, .. } if ranges.len() == 1
                && ranges[0].end == ranges[0].start + 1
                && at_a.contains(&ranges[0].start))),
        "{next:?}"
    );
}
