//! The scheduler's rules, each checked directly: the test plays the remote holders of a small
//! file through `proto_core::testing`, and looks at the requests the peer sends each of them.
//! (The simulator measures the same rules across whole swarms.)

use proto_core::conn::ConnId;
use proto_core::manifest::{ManifestBuilder, ManifestHeader};
use proto_core::peer::{Peer, PeerConfig, PeerEvent};
use proto_core::storage::{Region, Storage, StorageKey};
use proto_core::testing::{self, frame, MemStore, Seen};
use proto_core::time::{Duration, Instant};
use proto_core::wire::{BlockRef, FileId, Hello, Message, NodeId, PROTOCOL_VERSION};

type P = Peer<'static, 8>;

/// A fetching peer (no tracker) and the remotes the test plays.
struct Swarm {
    p: P,
    now: Instant,
    store: MemStore,
    seen: Seen<PeerEvent>,
    id: FileId,
    header: ManifestHeader,
    data: Vec<u8>,
}

impl Swarm {
    /// A file of `chunks` chunks of `chunk` bytes, fetched `block` bytes at a time with at most
    /// `in_flight` bytes asked of one connection.
    fn new(chunks: u32, chunk: u32, block: u32, in_flight: u32) -> Self {
        let len = (chunks * chunk) as usize;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let header = ManifestHeader::new("s.bin", len as u64, chunk).unwrap();
        let mut b = ManifestBuilder::new(header);
        let mut hashes = Vec::new();
        b.update(&data, |_, h| hashes.extend_from_slice(&h.0))
            .unwrap();
        let (header, id) = b.finish().unwrap();
        let mut c = PeerConfig::new(NodeId([1; 16]), 7000, None);
        c.block_len = block;
        c.max_in_flight = in_flight;
        let mut p = proto_core::testing::fixed_peer::<6, 1, 8, 8>(c, Instant::ZERO);
        let slot = p.resume(Instant::ZERO, id, header.clone(), []).unwrap();
        let mut store = MemStore::default();
        store.set(
            StorageKey {
                slot,
                region: Region::Hashes,
            },
            &hashes,
        );
        let mut s = Swarm {
            p,
            now: Instant::ZERO,
            store,
            seen: Seen::default(),
            id,
            header,
            data,
        };
        s.drain();
        s
    }

    fn drain(&mut self) {
        let d = testing::drain(&mut self.p, self.now, &mut self.store);
        self.seen.add(d);
    }

    fn feed(&mut self, c: ConnId, bytes: &[u8]) {
        let d = testing::feed(&mut self.p, self.now, c, bytes, &mut self.store);
        self.seen.add(d);
    }

    /// Remote `n` connects to the peer and offers the chunks `has` says it holds.
    fn holder(&mut self, n: u8, has: impl Fn(u32) -> bool) -> ConnId {
        let addr = format!("10.0.0.{n}:50000").parse().unwrap();
        let c = self.p.handle_accept(self.now, addr).unwrap().conn;
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            node: NodeId([n; 16]),
            listen_port: 7000 + u16::from(n),
            nonce: [n; 16],
        });
        let chunks = self.header.chunk_count();
        let mut bytes = frame(&hello);
        bytes.extend(frame(&Message::Bitfield {
            file: self.id,
            chunks,
        }));
        let mut bits = vec![0u8; chunks.div_ceil(8) as usize];
        for chunk in (0..chunks).filter(|&k| has(k)) {
            bits[(chunk / 8) as usize] |= 1 << (chunk % 8);
        }
        bytes.extend(bits);
        self.feed(c, &bytes);
        c
    }

    /// The requests sent to `c` since last asked (other messages are dropped).
    fn requests(&mut self, c: ConnId) -> Vec<BlockRef> {
        self.sent(c)
            .into_iter()
            .filter_map(|m| match m {
                Message::Request(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Everything sent to `c` since last asked.
    fn sent(&mut self, c: ConnId) -> Vec<Message> {
        self.seen.take(c)
    }

    /// Remote `c` sends block `b` with the first `upto` bytes of its true payload.
    fn block(&mut self, c: ConnId, b: BlockRef, upto: u32) {
        let start = self.header.chunk_offset(b.chunk) as usize + b.offset as usize;
        let mut bytes = frame(&Message::Block(b));
        bytes.extend_from_slice(&self.data[start..start + upto.min(b.len) as usize]);
        self.feed(c, &bytes);
    }

    fn verified(&self, chunk: u32) -> bool {
        self.seen
            .events
            .iter()
            .any(|e| matches!(e, PeerEvent::ChunkVerified { chunk: c, .. } if *c == chunk))
    }
}

fn one(requests: Vec<BlockRef>) -> BlockRef {
    assert_eq!(requests.len(), 1, "one request: {requests:?}");
    requests[0]
}

#[test]
fn a_chunk_only_seeds_hold_is_the_rarest() {
    // One block in flight per connection, one block per chunk.
    let mut s = Swarm::new(8, 1024, 1024, 1024);
    let partial = s.holder(2, |c| c < 6);
    let first = one(s.requests(partial));
    assert!(first.chunk < 6);
    let seed = s.holder(3, |_| true);
    // Chunks 6 and 7 have no holder but the seed: they come first from it.
    let a = one(s.requests(seed));
    assert!(a.chunk >= 6, "asked the seed for {a:?}");
    s.block(seed, a, a.len);
    assert!(s.verified(a.chunk));
    let b = one(s.requests(seed));
    assert!(
        b.chunk >= 6 && b.chunk != a.chunk,
        "asked the seed for {b:?}"
    );
    s.p.check_invariants();
}

#[test]
fn a_started_chunk_is_finished_from_its_frontier_before_a_new_one_starts() {
    let mut s = Swarm::new(8, 1024, 1024, 1024);
    let x = s.holder(2, |_| true);
    let a = one(s.requests(x));
    let y = s.holder(3, |_| true);
    let b = one(s.requests(y));
    // Half of a's block arrives, then x is gone: a is started, at byte 512.
    s.block(x, a, 512);
    s.p.handle_closed(s.now, x);
    s.drain();
    // y finishes its own chunk, then continues a where it stopped before it starts a fresh
    // one (the pipeline is counted in bytes, so a fresh chunk may follow in the same breath).
    s.block(y, b, b.len);
    assert!(s.verified(b.chunk));
    let next = s.requests(y)[0];
    assert_eq!(
        next,
        BlockRef {
            file: s.id,
            chunk: a.chunk,
            offset: 512,
            len: 512
        }
    );
    s.block(y, next, next.len);
    assert!(s.verified(a.chunk), "the two halves from two peers verify");
    s.p.check_invariants();
}

#[test]
fn endgame_asks_twice_and_cancels_the_copy_not_needed() {
    let mut s = Swarm::new(3, 1024, 1024, 1024);
    // z holds chunk 2 only and is asked for it; x and y hold everything.
    let z = s.holder(4, |c| c == 2);
    assert_eq!(one(s.requests(z)).chunk, 2);
    let x = s.holder(2, |_| true);
    let a = one(s.requests(x));
    let y = s.holder(3, |_| true);
    let b = one(s.requests(y));
    // x finishes; every missing chunk is in flight, so x duplicates one of them.
    s.block(x, a, a.len);
    let dup = one(s.requests(x));
    assert_ne!(dup.chunk, a.chunk);
    // The first copy wins; x is told to cancel its own.
    let owner = if dup == b { y } else { z };
    s.block(owner, dup, dup.len);
    assert!(s.verified(dup.chunk));
    let to_x = s.sent(x);
    assert!(to_x.contains(&Message::Cancel(dup)), "{to_x:?}");
    // x's copy may still come: it is dropped, not a protocol violation.
    s.block(x, dup, dup.len);
    assert!(!s.seen.events.iter().any(|e| matches!(
        e,
        PeerEvent::Misbehaved { .. } | PeerEvent::PeerBanned { .. }
    )));
    s.p.check_invariants();
}

#[test]
fn a_peer_that_finishes_drops_connections_to_seeds() {
    let mut s = Swarm::new(2, 1024, 1024, 2048);
    let x = s.holder(2, |_| true);
    for b in s.requests(x) {
        s.block(x, b, b.len);
    }
    assert!(s
        .seen
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::FileComplete { .. })));
    // Both ends hold the whole file: nothing will ever cross the connection again.
    assert!(s
        .seen
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::PeerLost { .. })));
}

#[test]
fn a_stalled_request_is_cancelled_and_asked_of_another_peer() {
    let mut s = Swarm::new(2, 1024, 1024, 1024);
    let x = s.holder(2, |_| true);
    let a = one(s.requests(x));
    let y = s.holder(3, |_| true);
    let b = one(s.requests(y));
    // x never answers; y does, and keeps answering pings.
    s.block(y, b, b.len);
    s.now += Duration::from_secs(5);
    s.p.handle_timeout(s.now);
    s.drain();
    assert!(
        s.sent(x).contains(&Message::Cancel(a)),
        "x's request is cancelled"
    );
    assert_eq!(one(s.requests(y)), a, "and asked of y instead");
    s.p.check_invariants();
}

#[test]
fn when_the_owner_dies_a_duplicate_source_resyncs_at_the_frontier() {
    // One chunk of two blocks; one block in flight per connection.
    let mut s = Swarm::new(1, 2048, 1024, 1024);
    let x = s.holder(2, |_| true);
    let first = one(s.requests(x));
    assert_eq!(first.offset, 0);
    // Every chunk is in flight: y joins as a duplicate source from the frontier (0).
    let y = s.holder(3, |_| true);
    let dup = one(s.requests(y));
    assert_eq!(dup, first);
    // x's block moves the frontier to 1024 (y's copy of it is now useless), then x dies.
    s.block(x, first, first.len);
    assert_eq!(one(s.requests(x)).offset, 1024);
    s.p.handle_closed(s.now, x);
    s.drain();
    // y drops its stale request and asks from the frontier.
    let sent = s.sent(y);
    assert!(sent.contains(&Message::Cancel(dup)), "{sent:?}");
    let next = sent
        .iter()
        .find_map(|m| match m {
            Message::Request(b) => Some(*b),
            _ => None,
        })
        .expect("a new request");
    assert_eq!((next.offset, next.len), (1024, 1024));
    s.block(y, next, next.len);
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn storage_holds_what_was_verified() {
    let mut s = Swarm::new(2, 1024, 1024, 4096);
    let x = s.holder(2, |_| true);
    for b in s.requests(x) {
        s.block(x, b, b.len);
    }
    let data = StorageKey {
        slot: 0,
        region: Region::Data,
    };
    let mut buf = vec![0u8; 2048];
    assert_eq!(s.store.read(data, 0, &mut buf).unwrap(), 2048);
    assert_eq!(buf, s.data);
    assert_eq!(s.store.verified.len(), 2, "both chunks journalled");
    assert_eq!(s.store.completed, vec![0]);
}
