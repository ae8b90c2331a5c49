//! The tracker driven by an arbitrary sequence of connections, messages (valid ones, so the
//! fuzzer gets past the decoder), raw bytes, closes, time and storage failures.
//!
//! Invariants beyond "no panic": every byte the tracker sends decodes as frames; every body it
//! sends from storage is hashes it stored and did not discard; memory is the fixed struct; with
//! a swarm key (chosen by the input), a connection that has not sent a good proof gets nothing
//! but the tracker's Hello and a refusal.
#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto_core::auth::{Side, SwarmKey};
use proto_core::conn::ConnId;
use proto_core::io::{Action, Output, FRAME_BUF_LEN};
use proto_core::manifest::{FileIdHasher, ManifestHeader};
use proto_core::node::Node;
use proto_core::storage::Storage;
use proto_core::storage::{Region, StorageKey};
use proto_core::testing::{self, Frames, MemStore};
use proto_core::time::{Duration, Instant};
use proto_core::tracker::{Tracker, TrackerConfig, TrackerMemory};
use proto_core::wire::{
    encode_frame, ChunkRange, FileId, Hello, Message, NodeId, PROTOCOL_VERSION,
};

const KEY: SwarmKey = SwarmKey([0x4b; 32]);
/// The nonce in every Hello the fuzzer sends.
const OUR_NONCE: [u8; 16] = [0x33; 16];

#[derive(Arbitrary, Debug)]
enum Op {
    Accept { ip: u8 },
    Raw { conn: u8, bytes: Vec<u8> },
    Msg { conn: u8, msg: M },
    Closed { conn: u8 },
    Advance { ms: u16 },
    Blocked { conn: u8, on: bool },
    StorageFailed { slot: u8 },
}

#[derive(Arbitrary, Debug)]
enum M {
    Hello {
        good_version: bool,
        node: u8,
        port: u16,
    },
    Register,
    Ping(u32),
    Pong(u32),
    Report {
        nonce: u32,
        uploaded: u64,
        downloaded: u64,
    },
    Leave,
    Abandon {
        f: u8,
    },
    Publish {
        true_id: bool,
        size: u16,
        chunk_log: u8,
        name: u8,
        seed: u8,
    },
    ListFiles,
    Locate {
        f: u8,
    },
    GetManifest {
        f: u8,
    },
    Have {
        f: u8,
        ranges: Vec<(u16, u16)>,
    },
    PeerOnly(u8),
    /// A swarm-key proof, made right (with the tracker's nonce) or not.
    Auth {
        good: bool,
    },
    ListPeers,
}

struct Net<'a> {
    t: Tracker<'a>,
    now: Instant,
    conns: Vec<ConnId>,
    frames: Frames,
    /// The tracker's storage (proto-core's shared memory store).
    store: MemStore,
    ids: Vec<FileId>,
    keyed: bool,
    /// The tracker's nonce per connection, from its Hello.
    nonces: HashMap<ConnId, [u8; 16]>,
    /// Connections on which the fuzzer sent a good proof.
    proven: HashSet<ConnId>,
}

impl Net<'_> {
    fn conn(&self, i: u8) -> Option<ConnId> {
        (!self.conns.is_empty()).then(|| self.conns[i as usize % self.conns.len()])
    }

    fn feed(&mut self, c: ConnId, bytes: &[u8]) {
        testing::offer(bytes, |rest| {
            let never = &mut |_, e| match e {};
            let (n, _) = self
                .t
                .recv_stored(self.now, c, rest, &mut self.store, never);
            self.drain();
            n
        });
        for slot in 0..3 {
            let data = StorageKey {
                slot,
                region: Region::Data,
            };
            assert!(
                self.store.bytes(data).is_empty(),
                "a tracker stores hashes only"
            );
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; FRAME_BUF_LEN];
        loop {
            let tx = match self.t.poll_output(&mut buf) {
                Output::Transmit(tx) => tx,
                Output::Action(Action::Close(c)) => {
                    self.conns.retain(|x| *x != c);
                    continue;
                }
                Output::Action(Action::Discard(k)) => {
                    self.store.discard(k);
                    continue;
                }
                Output::Action(a) => panic!("a tracker asked for {a:?}"),
                Output::Event(_) => continue,
                Output::Timeout(_) => break,
            };
            let mut bytes = buf[..tx.len].to_vec();
            if let Some(s) = tx.then {
                let body = self.store.read_vec(s.key, s.offset, s.len);
                assert_eq!(
                    body.len() as u64,
                    s.len,
                    "sends only hashes it stored and did not discard"
                );
                bytes.extend_from_slice(&body);
            }
            for (m, _) in self.frames.push(tx.conn, &bytes) {
                if let Message::Hello(h) = &m {
                    self.nonces.insert(tx.conn, h.nonce);
                }
                if self.keyed && !self.proven.contains(&tx.conn) {
                    assert!(
                        matches!(&m, Message::Hello(_) | Message::Refused(_)),
                        "sent {m:?} to a connection that has not proved the swarm key"
                    );
                }
            }
        }
    }
}

fn frame(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; FRAME_BUF_LEN];
    let n = encode_frame(m, &mut buf).expect("valid messages encode");
    buf[..n].to_vec()
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (keyed, ops) = input;
    let mut config = TrackerConfig::new(NodeId([0xee; 16]));
    config.swarm_key = keyed.then_some(KEY);
    // Both kinds of memory, with the same small limits so the tables fill: fixed arrays (a
    // device's) for inputs of an even number of steps, heap tables grown on demand for odd.
    let mut memory = Box::new(TrackerMemory::<6, 3, 8, 2>::new());
    let t = if ops.len() % 2 == 0 {
        Tracker::with_memory(config, Instant::ZERO, &mut memory)
    } else {
        config.max_conns = 6;
        config.max_files = 3;
        config.max_holdings = 8;
        config.max_chunks = 64;
        config.max_events = 6;
        Tracker::new(config, Instant::ZERO)
    };
    let mut net = Net {
        t,
        now: Instant::ZERO,
        conns: Vec::new(),
        frames: Frames::default(),
        store: MemStore::default(),
        ids: Vec::new(),
        keyed,
        nonces: HashMap::new(),
        proven: HashSet::new(),
    };
    for op in ops.into_iter().take(200) {
        match op {
            Op::Accept { ip } => {
                if let Ok(c) = net
                    .t
                    .handle_accept(net.now, ([10, 0, 0, ip % 4], 5000).into())
                {
                    if let Some(gone) = c.evicted {
                        net.conns.retain(|&k| k != gone);
                    }
                    net.conns.push(c.conn);
                }
            }
            Op::Raw { conn, bytes } => {
                if let Some(c) = net.conn(conn) {
                    net.feed(c, &bytes);
                }
            }
            Op::Msg { conn, msg } => {
                let Some(c) = net.conn(conn) else { continue };
                let pick = |net: &Net, f: u8| {
                    net.ids
                        .get(f as usize % net.ids.len().max(1))
                        .copied()
                        .unwrap_or(FileId([f; 32]))
                };
                let (m, body) = match msg {
                    M::Hello {
                        good_version,
                        node,
                        port,
                    } => (
                        Message::Hello(Hello {
                            version: if good_version {
                                PROTOCOL_VERSION
                            } else {
                                PROTOCOL_VERSION + 1
                            },
                            node: NodeId([node % 8; 16]),
                            listen_port: port % 4,
                            nonce: OUR_NONCE,
                        }),
                        Vec::new(),
                    ),
                    M::Register => (Message::Register, Vec::new()),
                    M::Ping(n) => (Message::Ping(n), Vec::new()),
                    M::Pong(n) => (Message::Pong(n), Vec::new()),
                    M::Report {
                        nonce,
                        uploaded,
                        downloaded,
                    } => (
                        Message::Report {
                            nonce,
                            uploaded,
                            downloaded,
                        },
                        Vec::new(),
                    ),
                    M::Leave => (Message::Leave, Vec::new()),
                    M::Abandon { f } => (
                        Message::Abandon {
                            file: pick(&net, f),
                        },
                        Vec::new(),
                    ),
                    M::Publish {
                        true_id,
                        size,
                        chunk_log,
                        name,
                        seed,
                    } => {
                        let chunk = 1024u32 << (chunk_log % 3);
                        let Ok(header) = ManifestHeader::new(
                            &format!("f{}", name % 4),
                            u64::from(size) * 4,
                            chunk,
                        ) else {
                            continue;
                        };
                        let body: Vec<u8> = (0..header.hashes_len())
                            .map(|i| (i as u8).wrapping_mul(seed))
                            .collect();
                        let mut h = FileIdHasher::new(&header);
                        h.update(&body);
                        let id = if true_id {
                            h.finish().unwrap_or_default()
                        } else {
                            FileId([seed; 32])
                        };
                        if !net.ids.contains(&id) {
                            net.ids.push(id);
                        }
                        (Message::Publish { file: id, header }, body)
                    }
                    M::ListFiles => (Message::ListFiles, Vec::new()),
                    M::ListPeers => (Message::ListPeers, Vec::new()),
                    M::Locate { f } => (
                        Message::Locate {
                            file: pick(&net, f),
                        },
                        Vec::new(),
                    ),
                    M::GetManifest { f } => (
                        Message::GetManifest {
                            file: pick(&net, f),
                        },
                        Vec::new(),
                    ),
                    M::Have { f, ranges } => {
                        let ranges = ranges
                            .into_iter()
                            .take(32)
                            .map(|(a, b)| ChunkRange {
                                start: u32::from(a % 300),
                                end: u32::from(b % 300),
                            })
                            .collect();
                        (
                            Message::Have {
                                file: pick(&net, f),
                                ranges,
                            },
                            Vec::new(),
                        )
                    }
                    M::PeerOnly(n) => (
                        Message::PeerListEnd {
                            count: u16::from(n),
                        },
                        Vec::new(),
                    ),
                    M::Auth { good } => {
                        let theirs = net.nonces.get(&c).copied().unwrap_or_default();
                        // A bad proof is the tracker's own, reflected.
                        let side = if good { Side::Opener } else { Side::Acceptor };
                        if good {
                            net.proven.insert(c);
                        }
                        (
                            Message::Auth {
                                proof: KEY.prove(side, &OUR_NONCE, &theirs),
                            },
                            Vec::new(),
                        )
                    }
                };
                let mut bytes = frame(&m);
                bytes.extend_from_slice(&body);
                net.feed(c, &bytes);
            }
            Op::Closed { conn } => {
                if let Some(c) = net.conn(conn) {
                    net.t.handle_closed(net.now, c);
                    net.conns.retain(|x| *x != c);
                    net.drain();
                }
            }
            Op::Advance { ms } => {
                net.now += Duration::from_millis(u64::from(ms) * 10);
                net.t.handle_timeout(net.now);
                net.drain();
            }
            Op::Blocked { conn, on } => {
                if let Some(c) = net.conn(conn) {
                    if on {
                        net.t.handle_send_blocked(c);
                    } else {
                        net.t.handle_send_ready(c);
                    }
                    net.drain();
                }
            }
            Op::StorageFailed { slot } => {
                net.t.handle_storage_failed(StorageKey {
                    slot: u16::from(slot % 4),
                    region: Region::Hashes,
                });
                net.drain();
            }
        }
        // Counters match their tables, cross-references hold (see check_invariants).
        net.t.check_invariants();
    }
});
