//! A peer (downloading and seeding) driven by an arbitrary sequence of tracker messages, peer
//! connections and their messages (blocks with true or garbage payload among them), closes,
//! time and commands, around one small known file.
//!
//! Invariants beyond "no panic":
//! - every chunk the peer reports verified matches its hash in the bytes it wrote for it;
//! - every write lands inside the file, and every request it sends is inside the manifest;
//! - everything it sends decodes as frames;
//! - with a swarm key (chosen by the input), a connection whose remote has not sent a good proof
//!   gets nothing from the peer but its Hello, its own proof (opener) and a refusal;
//! - after every step, `Peer::check_invariants` (counters match tables, chunks in flight,
//!   candidates and the tracker session point at what exists).
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto_core::auth::{Side, SwarmKey};
use proto_core::conn::ConnId;
use proto_core::io::Action;
use proto_core::manifest::{ChunkHash, ManifestHeader};
use proto_core::node::Node;
use proto_core::peer::{BlockCheck, Peer, PeerConfig, PeerEvent, PeerMemory};
use proto_core::storage::Region;
use proto_core::storage::{Storage, StorageKey};
use proto_core::testing::{self, frame, Frames, MemStore};
use proto_core::time::{Duration, Instant};
use proto_core::wire::{
    BlockRef, ChunkRange, FileId, Hello, HolderItem, Message, NodeId, PeerEntry, RejectReason,
    MAX_EXCHANGE, PROTOCOL_VERSION,
};

const KEY: SwarmKey = SwarmKey([0x4b; 32]);
/// The port every tracker listens on here; the peer's connections to it are tracker ones.
const TRACKER_PORT: u16 = 7070;
/// The nonce the fuzzer's tracker and peers put in every Hello.
const THEIR_NONCE: [u8; 16] = [0x33; 16];

struct Known {
    data: Vec<u8>,
    header: ManifestHeader,
    id: FileId,
    hashes: Vec<u8>,
    leaves: Vec<u8>,
}

/// The known file's chunk size: two 16 KiB blocks, so blocks are checked inside a chunk.
const CHUNK: u32 = 32 * 1024;
/// Bytes asked for in one request: one block.
const REQUEST: u32 = 16 * 1024;

/// 5 chunks of 32 KiB, the last one short (one block and a bit).
fn known() -> &'static Known {
    static K: OnceLock<Known> = OnceLock::new();
    K.get_or_init(|| {
        let len = 4 * CHUNK + 20_000;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 13) as u8).collect();
        let m = proto_core::testing::manifest_of("k.bin", &data, CHUNK);
        Known {
            data,
            header: m.header,
            id: m.id,
            hashes: m.hashes,
            leaves: m.leaves,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Op {
    Fetch,
    Share,
    /// Complete the newest pending outgoing connection.
    Connected {
        ok: bool,
    },
    Accept {
        port: u8,
    },
    /// A message from the first tracker connection (or, with `second`, the last).
    FromTracker {
        second: bool,
        msg: T,
    },
    FromPeer {
        conn: u8,
        msg: P,
    },
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    Closed {
        conn: u8,
    },
    Advance {
        ms: u16,
    },
    Cancel,
    /// The user names a peer to join through.
    AddPeer {
        port: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum T {
    Hello,
    Registered,
    Ping(u32),
    PeerList(u8),
    Holder {
        port: u8,
        ranges: Vec<(u8, u8)>,
        more: bool,
    },
    LocateEnd,
    Manifest {
        corrupt: Option<u8>,
    },
    NotFound,
    Refused,
    Auth {
        good: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum P {
    Hello {
        node: u8,
        port: u16,
    },
    Bitfield {
        chunks: u8,
        bits: u8,
    },
    Have(Vec<(u8, u8)>),
    Request {
        chunk: u8,
        offset: u16,
        len: u16,
    },
    Block {
        chunk: u8,
        offset: u16,
        len: u16,
        garbage: Option<u8>,
    },
    Cancel {
        chunk: u8,
        offset: u16,
        len: u16,
    },
    Reject {
        chunk: u8,
        offset: u16,
        len: u16,
        busy: bool,
    },
    GetManifest,
    Ping(u32),
    /// A swarm-key proof, made right (with the peer's nonce and the right side) or not.
    Auth {
        good: bool,
    },
    GetLeaves {
        chunk: u8,
    },
    /// The remote says it is fetching a chunk and serves its blocks as it verifies them.
    Started {
        chunk: u8,
    },
    /// A chunk's leaves: the true ones (with one byte changed, if `corrupt`), or none.
    Leaves {
        chunk: u8,
        none: bool,
        corrupt: Option<u8>,
    },
    /// Peer exchange: addresses to try (bounded by the message).
    Peers(Vec<(u8, u16)>),
}

type Small<'a> = Peer<'a, 2>;

struct Net<'a> {
    p: Small<'a>,
    now: Instant,
    /// Connections the peer opened to a tracker (port 7070), oldest first.
    trackers: Vec<ConnId>,
    pending: Vec<ConnId>,
    conns: Vec<ConnId>,
    frames: Frames,
    /// The peer's storage (proto-core's shared memory store).
    store: MemStore,
    shared_slot: Option<u16>,
    keyed: bool,
    /// The peer's nonce per connection, from its Hello.
    nonces: HashMap<ConnId, [u8; 16]>,
    /// Connections the fuzzer accepted (the peer opened them).
    opened_by_peer: HashSet<ConnId>,
    /// Connections on which the fuzzer sent a good proof.
    proven: HashSet<ConnId>,
}

fn key(slot: u16, region: Region) -> StorageKey {
    StorageKey { slot, region }
}

impl Net<'_> {
    fn feed(&mut self, c: ConnId, bytes: &[u8]) {
        let k = known();
        testing::offer(bytes, |rest| {
            let never = &mut |_, e| match e {};
            let (n, _) = self
                .p
                .recv_stored(self.now, c, rest, &mut self.store, never);
            self.drain();
            n
        });
        for slot in 0..2 {
            assert!(
                self.store.bytes(key(slot, Region::Data)).len() as u64 <= k.header.size,
                "a write past the end of the file"
            );
        }
    }

    fn drain(&mut self) {
        let k = known();
        let d = testing::drain(&mut self.p, self.now, &mut self.store);
        // This harness drains after every input, as the contract asks: then the peer's own
        // backpressure (reading, digests) must keep every event, journal records included.
        assert_eq!(self.p.events_lost(), 0, "an event was dropped");
        let mut hashed = Vec::new();
        for a in d.actions {
            match a {
                Action::Connect { conn, addr } => {
                    self.opened_by_peer.insert(conn);
                    if addr.port() == TRACKER_PORT {
                        self.trackers.push(conn);
                    }
                    self.pending.push(conn);
                }
                Action::Close(c) => {
                    self.conns.retain(|x| *x != c);
                    self.pending.retain(|x| *x != c);
                    self.trackers.retain(|x| *x != c);
                }
                // Carried out on the store by testing::drain.
                Action::ReadHash { .. } | Action::Discard(_) => {}
                // With deferred checks: answered from the store, as a host's hashing thread
                // would (after this drain, so the peer takes bytes meanwhile).
                Action::HashBlock {
                    key,
                    offset,
                    len,
                    ticket,
                } => hashed.push((
                    key,
                    proto_core::node::hash_stored(&mut self.store, key, offset, len),
                    ticket,
                )),
            }
        }
        for (conn, bytes) in d.sent {
            for (m, _) in self.frames.push(conn, &bytes) {
                if let Message::Hello(h) = &m {
                    self.nonces.insert(conn, h.nonce);
                }
                if self.keyed && !self.proven.contains(&conn) {
                    let opener = self.opened_by_peer.contains(&conn);
                    assert!(
                        matches!(&m, Message::Hello(_) | Message::Refused(_))
                            || (opener && matches!(&m, Message::Auth { .. })),
                        "sent {m:?} to a remote that has not proved the swarm key"
                    );
                }
                if let Message::Request(b) = m {
                    assert!(
                        b.chunk < k.header.chunk_count(),
                        "request past the last chunk"
                    );
                    assert!(
                        b.len > 0 && b.offset + b.len <= k.header.chunk_len(b.chunk),
                        "request outside its chunk"
                    );
                }
            }
        }
        for e in d.events {
            if let PeerEvent::ChunkVerified { slot, chunk } = e {
                if Some(slot) == self.shared_slot {
                    continue;
                }
                let data = self.store.bytes(key(slot, Region::Data));
                let start = k.header.chunk_offset(chunk) as usize;
                let end = start + k.header.chunk_len(chunk) as usize;
                let got = data
                    .get(start..end)
                    .map(|d| ChunkHash::of(d, k.header.chunk_size))
                    .unwrap_or_default();
                let i = chunk as usize * 32;
                assert_eq!(
                    &got.0[..],
                    &k.hashes[i..i + 32],
                    "chunk {chunk} reported verified with bytes that do not match"
                );
            }
        }
        // Each answer is an input: drained before the next, as the contract says.
        for (key, digest, ticket) in hashed {
            match digest {
                Ok(Some(d)) => {
                    while !self.p.handle_block_hash(self.now, ticket, d) {
                        self.drain();
                    }
                }
                Ok(None) | Err(_) => self.p.handle_storage_failed(self.now, key),
            }
            self.drain();
        }
    }
}

impl Net<'_> {
    /// The fuzzer's proof on `c`: right, or made with the wrong side (a reflection).
    fn auth(&mut self, c: ConnId, good: bool) -> Message {
        let ours = self.nonces.get(&c).copied().unwrap_or_default();
        // We are the acceptor where the peer opened the connection.
        let side = if self.opened_by_peer.contains(&c) {
            Side::Acceptor
        } else {
            Side::Opener
        };
        let side = if good { side } else { side.other() };
        if good {
            self.proven.insert(c);
        }
        Message::Auth {
            proof: KEY.prove(side, &THEIR_NONCE, &ours),
        }
    }
}

/// A block ref near what the peer asks for: whole blocks at block offsets mostly, and
/// lengths and offsets that straddle or leave the chunk.
fn block(chunk: u8, offset: u16, len: u16) -> BlockRef {
    BlockRef {
        file: known().id,
        chunk: u32::from(chunk % 6),
        offset: [0, REQUEST, CHUNK, 1000][usize::from(offset % 4)],
        len: [REQUEST, 3616, 0, REQUEST + 1, 1000][usize::from(len % 5)],
    }
}

fn ranges(v: Vec<(u8, u8)>) -> heapless::Vec<ChunkRange, 32> {
    v.into_iter()
        .take(32)
        .map(|(a, b)| ChunkRange {
            start: u32::from(a % 7),
            end: u32::from(b % 7),
        })
        .collect()
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (keyed, ops) = input;
    let k = known();
    let mut config = PeerConfig::new(
        NodeId([1; 16]),
        7000,
        Some(([10, 0, 0, 1], TRACKER_PORT).into()),
    );
    // A second tracker on a quarter of the inputs, and on half of those only one of the two
    // at a time (the other standing in while it is down).
    if ops.len() % 8 >= 6 {
        config.trackers.push(([10, 0, 0, 2], TRACKER_PORT).into());
        config.trackers_per_peer = 1 + (ops.len() % 16 >= 8) as u8;
    }
    config.ban_after = 3;
    config.swarm_key = keyed.then_some(KEY);
    // Both kinds of memory with the same small limits, so the tables fill: fixed arrays (a
    // device's) for inputs of an even number of steps, heap tables grown on demand for odd.
    config.block_len = REQUEST;
    if ops.len() % 4 >= 2 {
        config.block_check = BlockCheck::Deferred;
    }
    let mut memory = Box::new(PeerMemory::<4, 2, 2, 4, 2>::new());
    let p = if ops.len() % 2 == 0 {
        Peer::with_memory(config, Instant::ZERO, &mut memory)
    } else {
        config.max_conns = 4;
        config.max_files = 2;
        config.max_active = 4;
        Peer::new(config, Instant::ZERO)
    };
    let mut net = Net {
        p,
        now: Instant::ZERO,
        trackers: Vec::new(),
        pending: Vec::new(),
        conns: Vec::new(),
        frames: Frames::default(),
        store: MemStore::default(),
        shared_slot: None,
        keyed,
        nonces: HashMap::new(),
        opened_by_peer: HashSet::new(),
        proven: HashSet::new(),
    };
    net.drain();
    for op in ops.into_iter().take(200) {
        match op {
            Op::Fetch => {
                let _ = net.p.fetch(net.now, k.id);
                net.drain();
            }
            Op::Share => {
                if let Ok(s) = net.p.share(net.now, k.id, k.header.clone()) {
                    net.shared_slot = Some(s);
                    net.store.set(key(s, Region::Hashes), &k.hashes);
                    net.store.set(key(s, Region::Leaves), &k.leaves);
                    net.store.set(key(s, Region::Data), &k.data);
                }
                net.drain();
            }
            Op::Connected { ok } => {
                if let Some(c) = net.pending.pop() {
                    if ok {
                        net.p.handle_connected(net.now, c);
                        net.conns.push(c);
                    } else {
                        net.p.handle_closed(net.now, c);
                        net.trackers.retain(|x| *x != c);
                    }
                    net.drain();
                }
            }
            Op::Accept { port } => {
                if let Ok(c) = net
                    .p
                    .handle_accept(net.now, ([10, 0, 0, 9], u16::from(port) + 1000).into())
                {
                    if let Some(gone) = c.evicted {
                        net.conns.retain(|&k| k != gone);
                    }
                    net.conns.push(c.conn);
                }
            }
            Op::FromTracker { second, msg: t } => {
                let open: Vec<ConnId> = net
                    .trackers
                    .iter()
                    .copied()
                    .filter(|t| net.conns.contains(t))
                    .collect();
                let Some(&c) = (if second { open.last() } else { open.first() }) else {
                    continue;
                };
                let (m, body) = match t {
                    T::Hello => (
                        Message::Hello(Hello {
                            version: PROTOCOL_VERSION,
                            node: NodeId([0xee; 16]),
                            listen_port: 0,
                            nonce: THEIR_NONCE,
                        }),
                        vec![],
                    ),
                    T::Registered => (
                        Message::Registered {
                            addr: ([10, 0, 0, 2], 7000).into(),
                        },
                        vec![],
                    ),
                    T::Ping(n) => (Message::Ping(n), vec![]),
                    T::PeerList(n) => (
                        Message::PeerListEnd {
                            count: u16::from(n % 2),
                        },
                        vec![],
                    ),
                    T::Holder {
                        port,
                        ranges: r,
                        more,
                    } => (
                        Message::HolderItem(HolderItem {
                            file: k.id,
                            peer: PeerEntry {
                                node: NodeId([port; 16]),
                                addr: ([10, 0, 0, 3], u16::from(port) + 2000).into(),
                            },
                            ranges: ranges(r),
                            more,
                        }),
                        vec![],
                    ),
                    T::LocateEnd => (
                        Message::LocateEnd {
                            file: k.id,
                            holders: 1,
                        },
                        vec![],
                    ),
                    T::Manifest { corrupt } => {
                        let mut body = k.hashes.clone();
                        if let Some(x) = corrupt {
                            let i = x as usize % body.len();
                            body[i] ^= 0x55;
                        }
                        (
                            Message::Manifest {
                                file: k.id,
                                header: k.header.clone(),
                            },
                            body,
                        )
                    }
                    T::NotFound => (Message::NotFound { file: k.id }, vec![]),
                    T::Refused => (
                        Message::Refused(proto_core::wire::Refusal::DuplicateNode),
                        vec![],
                    ),
                    T::Auth { good } => (net.auth(c, good), vec![]),
                };
                let mut bytes = frame(&m);
                bytes.extend_from_slice(&body);
                net.feed(c, &bytes);
            }
            Op::FromPeer { conn, msg } => {
                if net.conns.is_empty() {
                    continue;
                }
                let c = net.conns[conn as usize % net.conns.len()];
                if net.trackers.contains(&c) {
                    continue;
                }
                let (m, body) = match msg {
                    P::Hello { node, port } => (
                        Message::Hello(Hello {
                            version: PROTOCOL_VERSION,
                            node: NodeId([node % 4 + 2; 16]),
                            listen_port: port,
                            nonce: THEIR_NONCE,
                        }),
                        vec![],
                    ),
                    P::Bitfield { chunks, bits } => {
                        let chunks = u32::from(chunks % 7);
                        let body = vec![bits; chunks.div_ceil(8) as usize];
                        (Message::Bitfield { file: k.id, chunks }, body)
                    }
                    P::Have(r) => (
                        Message::Have {
                            file: k.id,
                            ranges: ranges(r),
                        },
                        vec![],
                    ),
                    P::Request { chunk, offset, len } => {
                        (Message::Request(block(chunk, offset, len)), vec![])
                    }
                    P::Block {
                        chunk,
                        offset,
                        len,
                        garbage,
                    } => {
                        let b = block(chunk, offset, len);
                        let start = (k.header.chunk_offset(b.chunk) + u64::from(b.offset)) as usize;
                        let body: Vec<u8> = match garbage {
                            Some(g) => vec![g; b.len as usize],
                            None => (0..b.len as usize)
                                .map(|i| k.data.get(start + i).copied().unwrap_or(0))
                                .collect(),
                        };
                        (Message::Block(b), body)
                    }
                    P::Cancel { chunk, offset, len } => {
                        (Message::Cancel(block(chunk, offset, len)), vec![])
                    }
                    P::Reject {
                        chunk,
                        offset,
                        len,
                        busy,
                    } => (
                        Message::Reject {
                            block: block(chunk, offset, len),
                            reason: if busy {
                                RejectReason::Busy
                            } else {
                                RejectReason::NotHeld
                            },
                        },
                        vec![],
                    ),
                    P::GetManifest => (Message::GetManifest { file: k.id }, vec![]),
                    P::Started { chunk } => (
                        Message::Started {
                            file: k.id,
                            chunk: u32::from(chunk % 6),
                        },
                        vec![],
                    ),
                    P::GetLeaves { chunk } => (
                        Message::GetLeaves {
                            file: k.id,
                            chunk: u32::from(chunk % 6),
                        },
                        vec![],
                    ),
                    P::Leaves {
                        chunk,
                        none,
                        corrupt,
                    } => {
                        let chunk = u32::from(chunk % 6);
                        let count = if none { 0 } else { k.header.blocks_in(chunk) };
                        let at = k.header.leaf_offset(chunk) as usize;
                        let mut body = k
                            .leaves
                            .get(at..at + 32 * count as usize)
                            .unwrap_or_default()
                            .to_vec();
                        if let Some(i) = corrupt.filter(|_| !body.is_empty()) {
                            let n = usize::from(i) % body.len();
                            body[n] ^= 1;
                        }
                        let count = body.len() as u32 / 32;
                        (
                            Message::Leaves {
                                file: k.id,
                                chunk,
                                count,
                            },
                            body,
                        )
                    }
                    P::Ping(n) => (Message::Ping(n), vec![]),
                    P::Auth { good } => (net.auth(c, good), vec![]),
                    P::Peers(addrs) => (
                        Message::Peers {
                            file: k.id,
                            addrs: addrs
                                .into_iter()
                                .take(MAX_EXCHANGE)
                                .map(|(h, port)| SocketAddr::from(([10, 0, 1, h], port)))
                                .collect(),
                        },
                        vec![],
                    ),
                };
                let mut bytes = frame(&m);
                bytes.extend_from_slice(&body);
                net.feed(c, &bytes);
            }
            Op::Raw { conn, bytes } => {
                if !net.conns.is_empty() {
                    let c = net.conns[conn as usize % net.conns.len()];
                    net.feed(c, &bytes);
                }
            }
            Op::Closed { conn } => {
                if !net.conns.is_empty() {
                    let c = net.conns.remove(conn as usize % net.conns.len());
                    net.p.handle_closed(net.now, c);
                    net.trackers.retain(|x| *x != c);
                    net.drain();
                }
            }
            Op::Advance { ms } => {
                net.now += Duration::from_millis(u64::from(ms) * 10);
                net.p.handle_timeout(net.now);
                net.drain();
            }
            Op::AddPeer { port } => {
                for slot in 0..2 {
                    let addr = SocketAddr::from(([10, 0, 2, 1], u16::from(port) + 1000));
                    let _ = net.p.add_peer(net.now, slot, addr);
                }
                net.drain();
            }
            Op::Cancel => {
                for slot in 0..2 {
                    let _ = net.p.cancel(net.now, slot);
                    net.store.discard(key(slot, Region::Hashes));
                    net.store.discard(key(slot, Region::Data));
                }
                net.shared_slot = None;
                net.drain();
            }
        }
        // Counters match their tables, cross-references hold (see check_invariants).
        net.p.check_invariants();
    }
});
