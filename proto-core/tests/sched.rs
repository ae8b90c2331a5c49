//! The scheduler's rules, each checked directly: the test plays the remote holders of a small
//! file through `proto_core::testing`, and looks at the requests the peer sends each of them.
//! (The simulator measures the same rules across whole swarms.)

use proto_core::conn::ConnId;
use proto_core::io::{Action, BlockTicket};
use proto_core::manifest::ManifestHeader;
use proto_core::node::hash_stored;
use proto_core::peer::{BlockCheck, Peer, PeerConfig, PeerEvent};
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
    leaves: Vec<u8>,
    /// Leaves asked of a remote and not yet sent: they go right before its next block.
    leaves_asked: Vec<(ConnId, u32)>,
}

impl Swarm {
    /// A file of `chunks` chunks of `chunk` bytes, fetched `block` bytes at a time with at most
    /// `in_flight` bytes asked of one connection.
    fn new(chunks: u32, chunk: u32, block: u32, in_flight: u32) -> Self {
        Self::with(chunks, chunk, block, in_flight, |_| {})
    }

    /// Like `new`, with the peer's config changed by `tune`.
    fn with(
        chunks: u32,
        chunk: u32,
        block: u32,
        in_flight: u32,
        tune: impl FnOnce(&mut PeerConfig),
    ) -> Self {
        let len = (chunks * chunk) as usize;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let m = proto_core::testing::manifest_of("s.bin", &data, chunk);
        let (header, id) = (m.header.clone(), m.id);
        let mut c = PeerConfig::new(NodeId([1; 16]), 7000, None);
        c.block_len = block;
        c.max_in_flight = in_flight;
        tune(&mut c);
        let mut p = proto_core::testing::fixed_peer::<6, 1, 8, 8, 16>(c, Instant::ZERO);
        let slot = p.resume(Instant::ZERO, id, header.clone(), []).unwrap();
        let mut store = MemStore::default();
        store.put_shared(slot, &m, &[]);
        let mut s = Swarm {
            p,
            now: Instant::ZERO,
            store,
            seen: Seen::default(),
            id,
            header,
            data,
            leaves: m.leaves.clone(),
            leaves_asked: Vec::new(),
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
        let sent = self.seen.take(c);
        for m in &sent {
            if let Message::GetLeaves { chunk, .. } = m {
                self.leaves_asked.push((c, *chunk));
            }
        }
        sent
    }

    /// Remote `c` sends block `b` with the first `upto` bytes of its true payload.
    fn block(&mut self, c: ConnId, b: BlockRef, upto: u32) {
        let start = self.header.chunk_offset(b.chunk) as usize + b.offset as usize;
        let payload = self.data[start..start + upto.min(b.len) as usize].to_vec();
        self.send_block(c, b, &payload);
    }

    /// One 64 KiB chunk fetched 16 KiB at a time from a holder x, with a remote d that has
    /// nothing: x's first block has arrived (so its leaves are checked) and d heard of it.
    /// Returns x, the requests x has not answered, and d.
    fn started_from_one(&mut self) -> (ConnId, Vec<BlockRef>, ConnId) {
        let x = self.holder(2, |_| true);
        let mut pending = self.requests(x);
        let first = pending.remove(0);
        let d = self.holder(3, |_| false);
        self.sent(d);
        self.block(x, first, first.len);
        (x, pending, d)
    }

    /// x sends the block at `offset`, asked of it by now.
    fn answer_at(&mut self, x: ConnId, pending: &mut Vec<BlockRef>, offset: u32) {
        pending.extend(self.requests(x));
        let at = pending.iter().position(|r| r.offset == offset);
        let r = pending.remove(at.unwrap_or_else(|| panic!("{offset} asked of x: {pending:?}")));
        self.block(x, r, r.len);
    }

    /// Remote `c` answers every request the peer sends it, as they come (a pipeline holds a
    /// round trip's worth, so the next goes out as one comes back), until it asks no more;
    /// returns how many blocks it sent.
    fn serve_all(&mut self, c: ConnId) -> usize {
        let mut served = 0;
        loop {
            let asked = self.requests(c);
            if asked.is_empty() {
                return served;
            }
            for b in asked {
                self.block(c, b, b.len);
                served += 1;
            }
        }
    }

    /// Remote `c` sends block `b` whole, with the byte at `bad` (from the block's start)
    /// flipped.
    fn bad_block(&mut self, c: ConnId, b: BlockRef, bad: usize) {
        let start = self.header.chunk_offset(b.chunk) as usize + b.offset as usize;
        let mut payload = self.data[start..start + b.len as usize].to_vec();
        payload[bad] ^= 0x40;
        self.send_block(c, b, &payload);
    }

    /// Remote `c` sends block `b` with `payload` (its leaves first, if it was asked for them).
    fn send_block(&mut self, c: ConnId, b: BlockRef, payload: &[u8]) {
        let mut bytes = Vec::new();
        // A remote answers a GetLeaves before the blocks asked for after it.
        for m in self.seen.got.get(&c).into_iter().flatten() {
            if let Message::GetLeaves { chunk, .. } = m {
                self.leaves_asked.push((c, *chunk));
            }
        }
        if let Some(k) = self.leaves_asked.iter().position(|&a| a == (c, b.chunk)) {
            self.leaves_asked.remove(k);
            let count = self.header.blocks_in(b.chunk);
            bytes.extend(frame(&Message::Leaves {
                file: self.id,
                chunk: b.chunk,
                count,
            }));
            let at = self.header.leaf_offset(b.chunk) as usize;
            bytes.extend_from_slice(&self.leaves[at..at + 32 * count as usize]);
        }
        bytes.extend(frame(&Message::Block(b)));
        bytes.extend_from_slice(payload);
        self.feed(c, &bytes);
    }

    /// The digests the peer asked for so far ([`Action::HashBlock`]), computed from what
    /// storage holds, with their offsets and tickets.
    fn asked_digests(&mut self) -> Vec<(u64, BlockTicket, [u8; 32])> {
        let asked: Vec<Action> = self
            .seen
            .actions
            .extract_if(.., |a| matches!(a, Action::HashBlock { .. }))
            .collect();
        asked
            .into_iter()
            .filter_map(|a| match a {
                Action::HashBlock {
                    key,
                    offset,
                    len,
                    ticket,
                } => {
                    let digest = hash_stored(&mut self.store, key, offset, len)
                        .unwrap()
                        .expect("the block was written before it was asked about");
                    Some((offset, ticket, digest))
                }
                _ => None,
            })
            .collect()
    }

    /// Answers every digest asked so far, as a hashing thread would, draining after each;
    /// returns how many. `tamper` may change a digest first.
    fn answer_hashes(&mut self, mut tamper: impl FnMut(u64, &mut [u8; 32])) -> usize {
        let asked = self.asked_digests();
        for &(offset, ticket, mut digest) in &asked {
            tamper(offset, &mut digest);
            assert!(
                self.p.handle_block_hash(self.now, ticket, digest),
                "taken: nothing waits to be drained"
            );
            self.drain();
        }
        asked.len()
    }

    /// Whether the whole file was fetched.
    fn complete(&self) -> bool {
        self.seen
            .events
            .iter()
            .any(|e| matches!(e, PeerEvent::FileComplete { .. }))
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
    s.serve_all(x);
    assert!(s.complete());
    // Both ends hold the whole file: nothing will ever cross the connection again.
    assert!(s
        .seen
        .events
        .iter()
        .any(|e| matches!(e, PeerEvent::PeerLost { .. })));
}

#[test]
fn a_peer_that_finishes_keeps_a_remote_still_fetching_a_chunk_it_announced() {
    let mut s = Swarm::new(2, 1024, 1024, 2048);
    let x = s.holder(2, |_| true);
    // y holds chunk 1 and says it started chunk 0: its availability is full, but it still
    // fetches chunk 0 and may want it from us.
    let y = s.holder(3, |k| k == 1);
    s.feed(
        y,
        &frame(&Message::Started {
            file: s.id,
            chunk: 0,
        }),
    );
    s.serve_all(x);
    assert!(s.complete());
    let lost: Vec<_> = s
        .seen
        .events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::PeerLost { addr, .. } => Some(addr.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(lost, ["10.0.0.2:7002"], "only the seed x is dropped");
    s.p.check_invariants();
}

#[test]
fn a_chunk_that_lost_its_source_is_not_continued_from_a_remote_with_too_many_started() {
    // Chunks of two blocks; x holds chunk 0 only, y nothing yet.
    let mut s = Swarm::new(12, 2048, 1024, 2048);
    let x = s.holder(2, |k| k == 0);
    let y = s.holder(3, |_| false);
    s.sent(y);
    let first = one(s.requests(x));
    assert_eq!((first.chunk, first.offset), (0, 0));
    s.block(x, first, first.len);
    // x leaves with chunk 0 half here: only a remote holding it whole may continue it.
    s.p.handle_closed(s.now, x);
    s.drain();
    // y says it started chunks 0 to 9: more than a connection remembers, so chunk 0 is no
    // longer among those it is known to be fetching, and its offer could pass for a whole copy.
    let mut started = Vec::new();
    for chunk in 0..10 {
        started.extend(frame(&Message::Started { file: s.id, chunk }));
    }
    s.feed(y, &started);
    let asked = s.requests(y);
    assert!(!asked.is_empty(), "y is asked for the chunks it started");
    assert!(
        asked.iter().all(|b| b.chunk != 0),
        "chunk 0 is not continued from a peer that may be fetching it: {asked:?}"
    );
    s.p.check_invariants();
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
    s.serve_all(x);
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

/// Who was blamed for bad blocks or leaves, in order.
fn rejected_from(s: &Swarm) -> Vec<std::net::SocketAddr> {
    s.seen
        .events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::ChunkRejected { from, .. } => Some(*from),
            _ => None,
        })
        .collect()
}

#[test]
fn a_corrupt_block_costs_that_block_alone() {
    a_corrupt_block_costs_that_block(BlockCheck::Inline);
}

#[test]
fn hashed_elsewhere_a_corrupt_block_costs_that_block_and_late_digests_are_ignored() {
    a_corrupt_block_costs_that_block(BlockCheck::Deferred);
}

/// One 64 KiB chunk of four 16 KiB blocks, asked for in one 64 KiB request, whose third block
/// comes corrupt. With deferred checks the digests of the third and fourth blocks (asked before
/// the third's came back) are answered only after all four blocks were taken.
fn a_corrupt_block_costs_that_block(check: BlockCheck) {
    let deferred = check == BlockCheck::Deferred;
    let mut s = Swarm::with(1, 64 * 1024, 64 * 1024, 64 * 1024, |c| {
        c.block_check = check
    });
    let x = s.holder(2, |_| true);
    let sent = s.sent(x);
    assert!(
        sent.contains(&Message::GetLeaves {
            file: s.id,
            chunk: 0
        }),
        "the leaves are asked for with the first request: {sent:?}"
    );
    s.seen.got.insert(x, sent);
    let b = one(s.requests(x));
    assert_eq!((b.offset, b.len), (0, 64 * 1024));
    // y joins as an endgame duplicate from the start.
    let y = s.holder(3, |_| true);
    assert_eq!(one(s.requests(y)).offset, 0);
    // The third block (bytes 32 KiB..48 KiB) is corrupt.
    s.bad_block(x, b, 40_000);
    if deferred {
        assert!(
            rejected_from(&s).is_empty(),
            "nothing is known before the digests"
        );
        assert_eq!(s.answer_hashes(|_, _| {}), 4);
    }
    assert_eq!(rejected_from(&s), vec!["10.0.0.2:7002".parse().unwrap()]);
    assert!(!s.verified(0));
    // The two good blocks before it stay: the chunk goes on from 32 KiB, from the other
    // holder, and nothing before that is asked for again (deferred, the fourth block's
    // digest was for bytes no longer trusted).
    let again = s.requests(y);
    assert_eq!(
        again.iter().map(|r| (r.offset, r.len)).collect::<Vec<_>>(),
        [(32 * 1024, 32 * 1024)]
    );
    assert!(
        s.requests(x).is_empty(),
        "x sent the bad block: it is not asked again"
    );
    s.block(y, again[0], again[0].len);
    assert_eq!(s.answer_hashes(|_, _| {}), if deferred { 2 } else { 0 });
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn hashed_elsewhere_blocks_are_verified_when_their_digests_come_back() {
    // Two 64 KiB chunks of four blocks each, one 64 KiB request each; the blocks' digests
    // come from outside (a hashing thread on a host).
    let mut s = Swarm::with(2, 64 * 1024, 64 * 1024, 128 * 1024, |c| {
        c.block_check = BlockCheck::Deferred
    });
    let x = s.holder(2, |_| true);
    assert_eq!(s.serve_all(x), 2);
    // Every byte is taken and written, but nothing is verified before its digest.
    assert!(!s.verified(0) && !s.verified(1));
    s.p.check_invariants();
    assert_eq!(s.answer_hashes(|_, _| {}), 8, "each block asked about once");
    assert!(s.verified(0) && s.verified(1));
    assert_eq!(s.store.completed, vec![0]);
    s.p.check_invariants();
}

#[test]
fn hashed_elsewhere_digests_handed_in_a_burst_lose_no_event() {
    // Eight one-block chunks, all received before any digest comes back; then the digests
    // are handed one after another without draining, as a hashing thread's backlog would be.
    let mut s = Swarm::with(8, 16 * 1024, 16 * 1024, 128 * 1024, |c| {
        c.block_check = BlockCheck::Deferred
    });
    let x = s.holder(2, |_| true);
    loop {
        let reqs = s.requests(x);
        if reqs.is_empty() {
            break;
        }
        for b in reqs {
            s.block(x, b, b.len);
        }
    }
    let asked = s.asked_digests();
    assert_eq!(asked.len(), 8);
    let mut refused = 0;
    for (_, ticket, digest) in asked {
        while !s.p.handle_block_hash(s.now, ticket, digest) {
            refused += 1;
            s.drain();
        }
    }
    s.drain();
    assert!(
        refused > 0,
        "a burst fills the event queue: some digest waits for a drain"
    );
    for chunk in 0..8 {
        assert!(
            s.verified(chunk),
            "chunk {chunk} verified, its event not lost"
        );
    }
    assert!(s.complete());
    assert_eq!(s.store.completed, vec![0]);
    s.p.check_invariants();
}

#[test]
fn hashed_elsewhere_a_digest_handed_twice_is_ignored() {
    // One chunk of four blocks; the adapter answers the first block's digest a second time
    // after the second's: the verified mark must not go back, and the chunk completes.
    let mut s = Swarm::with(1, 64 * 1024, 64 * 1024, 64 * 1024, |c| {
        c.block_check = BlockCheck::Deferred
    });
    let x = s.holder(2, |_| true);
    let b = one(s.requests(x));
    s.block(x, b, b.len);
    let asked = s.asked_digests();
    assert_eq!(asked.len(), 4);
    let (_, first, first_digest) = asked[0];
    for (k, &(_, ticket, digest)) in asked.iter().enumerate() {
        assert!(s.p.handle_block_hash(s.now, ticket, digest));
        s.drain();
        if k == 1 {
            assert!(s.p.handle_block_hash(s.now, first, first_digest));
            s.drain();
            s.p.check_invariants();
        }
    }
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn hashed_elsewhere_a_wrong_digest_from_the_adapter_is_a_bad_block() {
    // The peer trusts nothing: a digest that does not match the leaf fails its block, even
    // when storage holds the right bytes.
    let mut s = Swarm::with(1, 32 * 1024, 32 * 1024, 32 * 1024, |c| {
        c.block_check = BlockCheck::Deferred
    });
    let x = s.holder(2, |_| true);
    let b = one(s.requests(x));
    let y = s.holder(3, |_| true);
    s.sent(y);
    s.block(x, b, b.len);
    s.answer_hashes(|offset, d| {
        if offset == 0 {
            d[0] ^= 1;
        }
    });
    assert_eq!(rejected_from(&s).len(), 1);
    assert!(!s.verified(0));
    s.p.check_invariants();
}

#[test]
fn on_flash_a_corrupt_block_restarts_its_chunk() {
    // Storage that cannot rewrite in place: the chunk starts over, from another holder.
    let mut s = Swarm::with(1, 64 * 1024, 64 * 1024, 64 * 1024, |c| {
        c.rewrite_blocks = false
    });
    let x = s.holder(2, |_| true);
    let b = one(s.requests(x));
    let y = s.holder(3, |_| true);
    let dup = one(s.requests(y));
    s.bad_block(x, b, 40_000);
    assert_eq!(rejected_from(&s).len(), 1);
    // y's copy from offset 0 is exactly what the restarted chunk needs.
    assert_eq!(dup.offset, 0);
    assert!(s.requests(y).is_empty() && s.requests(x).is_empty());
    s.block(y, dup, dup.len);
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn leaves_that_do_not_match_the_root_are_thrown_away_and_asked_elsewhere() {
    let mut s = Swarm::new(1, 64 * 1024, 64 * 1024, 64 * 1024);
    let x = s.holder(2, |_| true);
    let b = one(s.requests(x));
    let y = s.holder(3, |_| true);
    // y is an endgame duplicate; it asks for the leaves too, before its own request.
    let sent = s.sent(y);
    assert!(sent.contains(&Message::GetLeaves {
        file: s.id,
        chunk: 0
    }));
    s.seen.got.insert(y, sent);
    let dup = one(s.requests(y));
    // x answers with a wrong leaf, then its (true) block.
    s.leaves[40] ^= 1;
    s.block(x, b, b.len);
    s.leaves[40] ^= 1;
    assert_eq!(rejected_from(&s), vec!["10.0.0.2:7002".parse().unwrap()]);
    assert!(!s.verified(0), "no byte is taken against unchecked leaves");
    // y's leaves check out, and its copy completes the chunk.
    s.block(y, dup, dup.len);
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn blocks_of_an_unfinished_chunk_are_served_as_they_are_verified() {
    let mut s = Swarm::new(1, 64 * 1024, 16 * 1024, 16 * 1024);
    // The leaves check out with x's first block: d hears that the chunk is on its way.
    let (x, mut pending, d) = s.started_from_one();
    let told = s.sent(d);
    assert!(
        told.contains(&Message::Started {
            file: s.id,
            chunk: 0
        }),
        "{told:?}"
    );
    // d asks for the leaves and every block; what is verified goes at once, the rest waits.
    let block = |k: u32| BlockRef {
        file: s.id,
        chunk: 0,
        offset: k * 16 * 1024,
        len: 16 * 1024,
    };
    let mut asks = frame(&Message::GetLeaves {
        file: s.id,
        chunk: 0,
    });
    for k in 0..4 {
        asks.extend(frame(&Message::Request(block(k))));
    }
    s.feed(d, &asks);
    let served = s.sent(d);
    assert!(served.contains(&Message::Leaves {
        file: s.id,
        chunk: 0,
        count: 4
    }));
    let blocks = |m: &[Message]| {
        m.iter()
            .filter_map(|m| match m {
                Message::Block(b) => Some(b.offset / (16 * 1024)),
                Message::Reject { .. } => Some(99),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(blocks(&served), [0]);
    // Each block x delivers goes on to d.
    for k in 1..4 {
        s.answer_at(x, &mut pending, k * 16 * 1024);
        assert_eq!(blocks(&s.sent(d)), [k]);
    }
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn a_block_asked_whole_goes_out_a_verified_piece_at_a_time() {
    // d asks for all of the chunk in one request.
    let mut s = Swarm::new(1, 64 * 1024, 16 * 1024, 16 * 1024);
    let (x, mut pending, d) = s.started_from_one();
    s.sent(d);
    let whole = BlockRef {
        file: s.id,
        chunk: 0,
        offset: 0,
        len: 64 * 1024,
    };
    let mut asks = frame(&Message::GetLeaves {
        file: s.id,
        chunk: 0,
    });
    asks.extend(frame(&Message::Request(whole)));
    s.feed(d, &asks);
    let pieces = |m: &[Message]| {
        m.iter()
            .filter_map(|m| match m {
                Message::Block(b) => Some((b.offset / 1024, b.len / 1024)),
                Message::Reject { .. } => Some((999, 0)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // What is verified goes at once (the block waits no longer for the rest of itself).
    assert_eq!(pieces(&s.sent(d)), [(0, 16)]);
    for k in 1..4 {
        s.answer_at(x, &mut pending, k * 16 * 1024);
        assert_eq!(pieces(&s.sent(d)), [(k * 16, 16)]);
    }
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn a_request_answered_in_pieces_stays_asked_for_its_rest() {
    let mut s = Swarm::new(1, 64 * 1024, 64 * 1024, 64 * 1024);
    let x = s.holder(2, |_| true);
    let b = one(s.requests(x));
    assert_eq!(b.len, 64 * 1024);
    let piece = |offset: u32, len: u32| BlockRef { offset, len, ..b };
    // The first 16 KiB: taken, and the rest is not asked for again.
    s.block(x, piece(0, 16 * 1024), 16 * 1024);
    assert!(s.requests(x).is_empty());
    assert!(!s.verified(0));
    // A piece that ends inside a 16 KiB block answers nothing: it is not taken.
    s.block(x, piece(16 * 1024, 8 * 1024), 8 * 1024);
    assert!(!s.verified(0));
    // The rest, in one piece, completes the chunk.
    s.block(x, piece(16 * 1024, 48 * 1024), 48 * 1024);
    assert!(s.verified(0));
    s.p.check_invariants();
}

#[test]
fn a_source_of_a_chunk_is_not_served_that_chunk_before_it_is_whole() {
    // x and y both feed us chunk 0 (y as the endgame duplicate); were y to wait on us for the
    // same chunk, each would wait on the other.
    let mut s = Swarm::new(1, 64 * 1024, 16 * 1024, 16 * 1024);
    let x = s.holder(2, |_| true);
    let r = one(s.requests(x));
    let y = s.holder(3, |_| true);
    s.sent(y);
    s.block(x, r, r.len);
    let ask = BlockRef {
        file: s.id,
        chunk: 0,
        offset: 0,
        len: 16 * 1024,
    };
    s.feed(y, &frame(&Message::Request(ask)));
    let sent = s.sent(y);
    assert!(
        sent.contains(&Message::Reject {
            block: ask,
            reason: proto_core::wire::RejectReason::NotHeld
        }),
        "{sent:?}"
    );
}

/// An endgame duplicate is asked only of a connection far faster than the chunk's owner, or
/// for a chunk that has not moved for a stall timeout: an owner that keeps its connection
/// alive but never sends this chunk's blocks does not hold the chunk for ever.
#[test]
fn an_endgame_duplicate_waits_for_an_owner_that_is_not_slower_until_the_chunk_stops() {
    // One chunk of 16 blocks, two in flight per connection.
    let mut s = Swarm::new(1, 16 * 1024, 1024, 2048);
    let x = s.holder(2, |_| true);
    // x delivers 8 blocks over 320 ms: its rate is measured.
    let mut asked = s.requests(x);
    for _ in 0..8 {
        let b = asked.remove(0);
        s.now += Duration::from_millis(40);
        s.block(x, b, b.len);
        asked.extend(s.requests(x));
    }
    // y holds the chunk too, but nothing says it is faster: no duplicate.
    let y = s.holder(3, |_| true);
    assert!(s.requests(y).is_empty(), "no duplicate of a moving chunk");
    // x goes on answering pings, never the chunk's blocks.
    for k in 0..5 {
        s.now += Duration::from_secs(1);
        s.feed(x, &frame(&Message::Ping(k)));
        s.drain();
        if k < 4 {
            assert!(
                s.requests(y).is_empty(),
                "{k} s: the chunk has not stopped yet"
            );
        }
    }
    let dup = s.requests(y);
    assert!(
        dup.first().is_some_and(|b| b.offset == 8 * 1024),
        "after a stall timeout y duplicates from the frontier: {dup:?}"
    );
    s.p.check_invariants();
}
