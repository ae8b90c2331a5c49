//! Every tracker rule, driven through the public sans-IO API: fake connections, an in-memory
//! hash store, and time that moves only when a test moves it.

use std::collections::HashMap;
use std::net::SocketAddr;

use proto_core::auth::{Side, SwarmKey};
use proto_core::conn::ConnId;
use proto_core::io::Action;
use proto_core::manifest::ManifestHeader;
use proto_core::node::Node;
use proto_core::storage::{Region, StorageKey};
use proto_core::testing::{self, Frames, MemStore};
use proto_core::time::{Duration, Instant};
use proto_core::tracker::{
    LeaveReason, Offence, SmallTrackerMemory, Table, Tracker, TrackerConfig, TrackerEvent,
    TrackerMemory, FRAME_BUF_LEN,
};
use proto_core::wire::{
    encode_frame, ChunkRange, FileEntry, FileId, FrameError, Hello, Message, NodeId, PeerEntry,
    PublishRefusal, Refusal, PROTOCOL_VERSION,
};

type T = Tracker<'static>;

/// A tracker in fixed memory (the device path): 8 connections, 4 files, 16 holdings, up to
/// 128 chunks per file.
fn fixed(config: TrackerConfig) -> T {
    let memory: &'static mut TrackerMemory<8, 4, 16, 4> = Box::leak(Box::default());
    Tracker::with_memory(config, Instant::ZERO, memory)
}

/// What a fake remote received: messages, each with the body bytes that followed it.
#[derive(Default)]
struct Remote {
    got: Vec<(Message, Vec<u8>)>,
    closed: bool,
}

struct Net {
    t: T,
    now: Instant,
    store: MemStore,
    frames: Frames,
    remotes: HashMap<ConnId, Remote>,
    events: Vec<TrackerEvent>,
    timeout: Instant,
    /// Feed input to the tracker this many bytes at a time (exercises every split).
    piece: usize,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn node(n: u8) -> NodeId {
    NodeId([n; 16])
}

fn hashes(slot: u16) -> StorageKey {
    StorageKey {
        slot,
        region: Region::Hashes,
    }
}

impl Net {
    fn new() -> Self {
        Self::with(TrackerConfig::new(node(0xee)))
    }

    fn with(config: TrackerConfig) -> Self {
        Net {
            t: fixed(config),
            now: Instant::ZERO,
            store: MemStore::default(),
            frames: Frames::default(),
            remotes: HashMap::new(),
            events: Vec::new(),
            timeout: Instant::ZERO,
            piece: usize::MAX,
        }
    }

    fn connect(&mut self, from: &str) -> ConnId {
        let a = self.t.handle_accept(self.now, addr(from)).unwrap();
        if let Some(gone) = a.evicted {
            // The adapter closes an evicted connection's socket at once.
            self.remotes.get_mut(&gone).unwrap().closed = true;
        }
        self.remotes.insert(a.conn, Remote::default());
        a.conn
    }

    /// Sends raw bytes from the remote side, honouring backpressure, then drains.
    fn send_raw(&mut self, c: ConnId, bytes: &[u8]) {
        let mut rest = bytes;
        let mut stuck = 0;
        while !rest.is_empty() {
            let piece = &rest[..rest.len().min(self.piece)];
            let (n, _) =
                self.t
                    .recv_stored(self.now, c, piece, &mut self.store, &mut |_, e| match e {});
            rest = &rest[n..];
            if n == 0 {
                stuck += 1;
                assert!(stuck < 1000, "tracker never takes the input");
            }
            self.drain();
        }
    }

    fn send(&mut self, c: ConnId, msg: &Message) {
        self.send_with_body(c, msg, &[]);
    }

    fn send_with_body(&mut self, c: ConnId, msg: &Message, body: &[u8]) {
        let mut bytes = testing::frame(msg);
        bytes.extend_from_slice(body);
        self.send_raw(c, &bytes);
    }

    fn drain(&mut self) {
        let d = testing::drain(&mut self.t, self.now, &mut self.store);
        self.timeout = d.timeout;
        for (conn, bytes) in d.sent {
            let got = self.frames.push(conn, &bytes);
            let remote = self
                .remotes
                .get_mut(&conn)
                .expect("transmit to unknown conn");
            assert!(!remote.closed, "transmit after close");
            remote.got.extend(got);
        }
        for a in d.actions {
            match a {
                Action::Close(c) => self.remotes.get_mut(&c).unwrap().closed = true,
                other => panic!("a tracker asked for {other:?}"),
            }
        }
        self.events.extend(d.events);
    }

    /// Moves time forward, firing every timeout on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.drain();
        loop {
            let next = self.timeout;
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            self.t.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn take(&mut self, c: ConnId) -> Vec<Message> {
        std::mem::take(&mut self.remotes.get_mut(&c).unwrap().got)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    }

    fn take_with_bodies(&mut self, c: ConnId) -> Vec<(Message, Vec<u8>)> {
        std::mem::take(&mut self.remotes.get_mut(&c).unwrap().got)
    }

    fn closed(&self, c: ConnId) -> bool {
        self.remotes[&c].closed
    }

    fn hello(&mut self, c: ConnId, n: u8, port: u16) {
        let h = Hello {
            version: PROTOCOL_VERSION,
            node: node(n),
            listen_port: port,
            nonce: [n; 16],
        };
        self.send(c, &Message::Hello(h));
    }

    /// A registered peer: connects from `from`, says hello as node `n` listening on `port`.
    fn peer(&mut self, from: &str, n: u8, port: u16) -> ConnId {
        let c = self.connect(from);
        self.hello(c, n, port);
        self.send(c, &Message::Register);
        let got = &self.remotes[&c].got;
        assert!(matches!(got[1].0, Message::Registered { .. }), "{got:?}");
        c
    }

    /// Answers every ping a remote received since the last take.
    fn answer_pings(&mut self, c: ConnId) {
        for m in self.take(c) {
            if let Message::Ping(n) = m {
                self.send(c, &Message::Pong(n));
            }
        }
    }

    fn list(&mut self, c: ConnId) -> Vec<FileEntry> {
        self.take(c);
        self.send(c, &Message::ListFiles);
        let got = self.take(c);
        let (end, items) = got.split_last().unwrap();
        let items: Vec<FileEntry> = items
            .iter()
            .map(|m| match m {
                Message::FileItem(e) => e.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            end,
            &Message::FileListEnd {
                count: items.len() as u16
            }
        );
        items
    }

    /// Locate answer as (peer, ranges) per holder, joined across `more` items.
    fn locate(&mut self, c: ConnId, file: FileId) -> Option<Vec<(PeerEntry, Vec<ChunkRange>)>> {
        self.take(c);
        self.send(c, &Message::Locate { file });
        let mut out: Vec<(PeerEntry, Vec<ChunkRange>)> = Vec::new();
        let mut continuing = false;
        for m in self.take(c) {
            match m {
                Message::NotFound { file: f } if f == file => return None,
                Message::HolderItem(h) => {
                    assert_eq!(h.file, file);
                    if continuing {
                        let last = out.last_mut().unwrap();
                        assert_eq!(last.0, h.peer);
                        last.1.extend(h.ranges.iter().copied());
                    } else {
                        out.push((h.peer, h.ranges.to_vec()));
                    }
                    continuing = h.more;
                }
                Message::LocateEnd { file: f, holders } => {
                    assert_eq!((f, holders as usize), (file, out.len()));
                    return Some(out);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no LocateEnd");
    }

    /// Asks `c`'s tracker for the peer list; checks nothing was pushed unasked before.
    fn peer_list(&mut self, c: ConnId) -> Vec<PeerEntry> {
        assert!(
            !self
                .take(c)
                .iter()
                .any(|m| matches!(m, Message::PeerListItem(_) | Message::PeerListEnd { .. })),
            "a peer list is sent only when asked for"
        );
        self.send(c, &Message::ListPeers);
        let mut list = Vec::new();
        for m in self.take(c) {
            match m {
                Message::PeerListItem(p) => list.push(p),
                Message::PeerListEnd { count } => {
                    assert_eq!(count as usize, list.len());
                    return list;
                }
                _ => {}
            }
        }
        panic!("no peer list end")
    }
}

/// A file of `len` bytes in 1 KiB chunks: header, id, hash body.
fn file(name: &str, len: usize, seed: u8) -> (ManifestHeader, FileId, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let m = proto_core::testing::manifest_of(name, &data, 1024);
    (m.header, m.id, m.hashes)
}

fn publish(net: &mut Net, c: ConnId, f: &(ManifestHeader, FileId, Vec<u8>)) -> Message {
    net.take(c);
    let msg = Message::Publish {
        file: f.1,
        header: f.0.clone(),
    };
    net.send_with_body(c, &msg, &f.2);
    net.take(c)
        .into_iter()
        .find(|m| {
            matches!(
                m,
                Message::Published { .. } | Message::PublishRefused { .. }
            )
        })
        .expect("no answer to publish")
}

#[test]
fn registration_records_observed_ip_with_announced_port() {
    let mut net = Net::new();
    let c = net.connect("192.0.2.7:40000");
    net.hello(c, 1, 7001);
    let got = net.take(c);
    assert!(
        matches!(
            got[..],
            [Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: n,
                listen_port: 0,
                ..
            })] if n == node(0xee)
        ),
        "{got:?}"
    );
    net.send(c, &Message::Register);
    let got = net.take(c);
    assert_eq!(
        got[0],
        Message::Registered {
            addr: addr("192.0.2.7:7001")
        }
    );
    assert_eq!(
        net.events,
        vec![TrackerEvent::PeerJoined {
            node: node(1),
            addr: addr("192.0.2.7:7001")
        }]
    );
    assert_eq!(net.t.peer_count(), 1);
}

#[test]
fn duplicate_node_and_duplicate_address_are_refused_and_closed() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:5000", 1, 7000);
    let dup_node = net.connect("10.0.0.2:5000");
    net.hello(dup_node, 1, 7000);
    net.send(dup_node, &Message::Register);
    assert_eq!(
        net.take(dup_node)[1],
        Message::Refused(Refusal::DuplicateNode)
    );
    assert!(net.closed(dup_node));

    let dup_addr = net.connect("10.0.0.1:5001");
    net.hello(dup_addr, 2, 7000);
    net.send(dup_addr, &Message::Register);
    assert_eq!(
        net.take(dup_addr)[1],
        Message::Refused(Refusal::DuplicateAddress)
    );
    assert!(net.closed(dup_addr));
    assert!(!net.closed(a));
    assert_eq!(net.t.peer_count(), 1);
    // Same IP, another port is a different peer.
    net.peer("10.0.0.1:5002", 3, 7001);
    assert_eq!(net.t.peer_count(), 2);
}

#[test]
fn full_peer_table_is_refused_and_full_connection_table_is_an_error() {
    let mut config = TrackerConfig::new(node(0xee));
    config.max_peers = 2;
    let mut net = Net::with(config);
    net.peer("10.0.0.1:1", 1, 7000);
    net.peer("10.0.0.2:1", 2, 7000);
    let c = net.connect("10.0.0.3:1");
    net.hello(c, 3, 7000);
    net.send(c, &Message::Register);
    assert_eq!(net.take(c)[1], Message::Refused(Refusal::TrackerFull));
    assert!(net.closed(c));
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Refused {
            reason: Refusal::TrackerFull,
            ..
        }
    )));

    // Connection slots: 8. Two peers, the refused one was freed; fill the rest with
    // connections that say nothing: a newcomer still gets in, in place of the oldest of them.
    let idle: Vec<ConnId> = (0..6)
        .map(|i| {
            net.advance(Duration::from_millis(10));
            net.connect(&format!("10.0.1.{i}:1"))
        })
        .collect();
    let newcomer = net.connect("10.0.2.1:1");
    net.drain();
    assert!(net.closed(idle[0]), "the longest-idle stranger makes room");
    assert!(idle[1..].iter().all(|&c| !net.closed(c)));
    assert!(net
        .events
        .iter()
        .any(|e| *e == TrackerEvent::Overloaded(Table::Connections)));
    net.hello(newcomer, 9, 7000);
    net.send(newcomer, &Message::ListFiles);
    assert!(net
        .take(newcomer)
        .contains(&Message::FileListEnd { count: 0 }));
}

#[test]
fn an_eviction_from_the_newcomers_own_address_keeps_its_count() {
    // Fuzz-found: the newcomer's address count was read before the eviction, so evicting a
    // connection from the same address counted the newcomer twice.
    let mut config = TrackerConfig::new(node(0xee));
    config.max_conns_per_ip = 8;
    let mut net = Net::with(config);
    let first = net.connect("10.0.0.1:1");
    for port in 2..=4 {
        net.connect(&format!("10.0.0.1:{port}"));
    }
    for port in 1..=4 {
        net.connect(&format!("10.0.0.2:{port}"));
    }
    let again = net.connect("10.0.0.1:9");
    net.drain();
    assert!(net.closed(first));
    // The debug invariants (run on every input) check every count; the slot freed by a close
    // goes to the next one from that address too.
    net.t.handle_closed(net.now, again);
    net.connect("10.0.0.1:10");
    net.drain();
}

#[test]
fn a_full_table_evicts_strangers_oldest_first_but_never_a_registered_peer() {
    let mut config = TrackerConfig::new(node(0xee));
    config.max_conns_per_ip = 8;
    let mut net = Net::with(config);
    // 8 slots: 5 registered peers, 2 connections that finished the handshake without
    // registering (queries), 1 that never said hello.
    let peers: Vec<ConnId> = (1..=5)
        .map(|i| net.peer(&format!("10.0.0.{i}:1"), i, 7000))
        .collect();
    net.advance(Duration::from_millis(10));
    let q1 = net.connect("10.0.1.1:1");
    net.hello(q1, 21, 0);
    net.advance(Duration::from_millis(10));
    let q2 = net.connect("10.0.1.2:1");
    net.hello(q2, 22, 0);
    let silent = net.connect("10.0.1.3:1");
    // The silent one goes first, even though it came last: it has done least.
    let a = net.connect("10.0.2.1:1");
    net.drain();
    assert!(net.closed(silent) && !net.closed(q1) && !net.closed(q2));
    // Then the strangers, the longest-open first.
    let b = net.connect("10.0.2.2:1");
    net.drain();
    assert!(
        net.closed(a),
        "a newcomer that has not said hello yet goes before strangers"
    );
    let c = net.connect("10.0.2.3:1");
    net.hello(c, 31, 7001);
    net.send(c, &Message::Register);
    net.drain();
    assert!(net.closed(b) && !net.closed(q1));
    let d = net.connect("10.0.2.4:1");
    net.hello(d, 32, 7002);
    net.send(d, &Message::Register);
    let e = net.connect("10.0.2.5:1");
    net.hello(e, 33, 7003);
    net.send(e, &Message::Register);
    net.drain();
    assert!(
        net.closed(q1) && net.closed(q2),
        "strangers go, oldest first"
    );
    // Now every slot holds a registered peer: a newcomer is refused, nobody is evicted.
    assert_eq!(net.t.peer_count(), 8);
    assert!(net.t.handle_accept(net.now, addr("10.0.3.1:1")).is_err());
    assert!(peers.iter().chain([&c, &d, &e]).all(|&p| !net.closed(p)));
}

#[test]
fn one_host_cannot_fill_the_tables_with_fake_peers() {
    let mut config = TrackerConfig::new(node(0xee));
    config.max_conns_per_ip = 3;
    let mut net = Net::with(config);
    // A host registering fake peer after fake peer gets three, then is refused.
    for i in 0..3u8 {
        net.peer(
            &format!("10.6.6.6:{}", 1000 + u16::from(i)),
            100 + i,
            7000 + u16::from(i),
        );
    }
    assert!(net.t.handle_accept(net.now, addr("10.6.6.6:2000")).is_err());
    net.drain();
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, TrackerEvent::Overloaded(Table::ConnectionsPerIp))));
    // Honest peers elsewhere still get in and are served.
    let honest = net.peer("10.0.0.1:1", 1, 7000);
    net.take(honest);
    net.send(honest, &Message::Ping(9));
    assert_eq!(net.take(honest), vec![Message::Pong(9)]);
    assert_eq!(net.t.peer_count(), 4);
}

#[test]
fn version_mismatch_is_refused_with_the_supported_version() {
    let mut net = Net::new();
    let c = net.connect("10.0.0.1:1");
    let h = Hello {
        version: PROTOCOL_VERSION + 1,
        node: node(1),
        listen_port: 1,
        nonce: [0; 16],
    };
    net.send(c, &Message::Hello(h));
    assert_eq!(
        net.take(c),
        vec![Message::Refused(Refusal::VersionMismatch {
            supported: PROTOCOL_VERSION
        })]
    );
    assert!(net.closed(c));
}

#[test]
fn leave_removes_the_peer_pushes_the_list_and_closes() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    assert_eq!(net.peer_list(a).len(), 2);
    net.send(b, &Message::Leave);
    assert!(net.closed(b));
    assert_eq!(net.t.peer_count(), 1);
    let list = net.peer_list(a);
    assert_eq!(
        list,
        vec![PeerEntry {
            node: node(1),
            addr: addr("10.0.0.1:7000")
        }]
    );
    assert!(net.events.contains(&TrackerEvent::PeerLeft {
        node: node(2),
        addr: addr("10.0.0.2:7000"),
        reason: LeaveReason::Left
    }));
}

#[test]
fn peer_list_is_pushed_to_every_peer_on_each_change() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    let c = net.peer("10.0.0.3:1", 3, 7000);
    let nodes = |l: Vec<PeerEntry>| l.iter().map(|p| p.node).collect::<Vec<_>>();
    assert_eq!(nodes(net.peer_list(a)), vec![node(1), node(2), node(3)]);
    assert_eq!(nodes(net.peer_list(b)), vec![node(1), node(2), node(3)]);
    assert_eq!(nodes(net.peer_list(c)), vec![node(1), node(2), node(3)]);
    // The socket of b drops: the others hear at once.
    net.t.handle_closed(net.now, b);
    net.drain();
    assert_eq!(nodes(net.peer_list(a)), vec![node(1), node(3)]);
    assert_eq!(nodes(net.peer_list(c)), vec![node(1), node(3)]);
    // A query-only connection (no Register) neither appears nor receives pushes.
    let q = net.connect("10.0.0.9:1");
    net.hello(q, 9, 0);
    net.send(q, &Message::ListFiles);
    assert!(!net
        .take(q)
        .iter()
        .any(|m| matches!(m, Message::PeerListItem(_))));
    assert_eq!(net.t.peer_count(), 2);
}

#[test]
fn silent_peers_are_dropped_after_three_missed_pings_and_answering_ones_stay() {
    let mut net = Net::new();
    let live = net.peer("10.0.0.1:1", 1, 7000);
    let silent = net.peer("10.0.0.2:1", 2, 7000);
    // Rounds at 5, 10, 15 s: the silent peer has missed three pings but is still listed.
    for _ in 0..3 {
        net.advance(Duration::from_secs(5));
        net.answer_pings(live);
    }
    assert_eq!(net.t.peer_count(), 2);
    let pings = net
        .take(silent)
        .iter()
        .filter(|m| matches!(m, Message::Ping(_)))
        .count();
    assert_eq!(pings, 3);
    // The fourth round finds three unanswered pings: dropped, and the live peer is told.
    net.advance(Duration::from_secs(5));
    assert!(net.closed(silent));
    assert!(!net.closed(live));
    assert_eq!(net.t.peer_count(), 1);
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::PeerLeft { reason: LeaveReason::TimedOut, node: n, .. } if *n == node(2)
    )));
    assert_eq!(net.peer_list(live).len(), 1);
    // The live peer keeps answering and stays for a long time.
    for _ in 0..20 {
        net.advance(Duration::from_secs(5));
        net.answer_pings(live);
    }
    assert!(!net.closed(live));
}

#[test]
fn ping_interval_and_miss_count_are_configurable() {
    let mut config = TrackerConfig::new(node(0xee));
    config.ping_interval = Duration::from_secs(1);
    config.max_missed_pings = 1;
    let mut net = Net::with(config);
    let p = net.peer("10.0.0.1:1", 1, 7000);
    net.advance(Duration::from_secs(1));
    assert!(!net.closed(p));
    net.advance(Duration::from_secs(1));
    assert!(net.closed(p));
}

#[test]
fn tracker_answers_pings_from_peers() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    net.take(p);
    net.send(p, &Message::Ping(77));
    assert_eq!(net.take(p), vec![Message::Pong(77)]);
}

#[test]
fn reports_keep_a_peer_alive_and_give_the_operator_its_rates_and_holdings() {
    let mut net = Net::new();
    let seed = net.peer("10.0.0.1:1", 1, 7000);
    let leech = net.peer("10.0.0.2:1", 2, 7002);
    let f = file("a.bin", 100 * 1024, 1);
    publish(&mut net, seed, &f);
    let r = |start, end| ChunkRange { start, end };
    let ranges = heapless::Vec::from_slice(&[r(0, 30)]).unwrap();
    net.send(leech, &Message::Have { file: f.1, ranges });
    // Four ping rounds, 5 s apart: the seed reports 10 MB more served each round, the leech
    // as much more fetched; both answer with reports alone, and neither is dropped.
    for round in 1..=4u64 {
        net.advance(Duration::from_secs(5));
        for (c, up, down) in [
            (seed, round * 10_000_000, 0),
            (leech, 7, round * 10_000_000),
        ] {
            for m in net.take(c) {
                if let Message::Ping(nonce) = m {
                    let report = Message::Report {
                        nonce,
                        uploaded: up,
                        downloaded: down,
                    };
                    net.send(c, &report);
                }
            }
        }
    }
    assert!(!net.closed(seed) && !net.closed(leech));
    let peers: Vec<_> = net.t.peers().collect();
    assert_eq!(peers.len(), 2);
    let s = peers.iter().find(|p| p.node == node(1)).unwrap();
    assert_eq!(s.addr, addr("10.0.0.1:7000"));
    assert_eq!(
        (s.uploaded, s.upload_rate, s.download_rate),
        (40_000_000, 2_000_000, 0)
    );
    assert_eq!(s.files, 1);
    let l = peers.iter().find(|p| p.node == node(2)).unwrap();
    assert_eq!(
        (l.downloaded, l.download_rate, l.upload_rate),
        (40_000_000, 2_000_000, 0)
    );
    let files: Vec<_> = net.t.files().collect();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].file, files[0].holders, files[0].complete),
        (f.1, 2, 1)
    );
    assert_eq!(files[0].header.name.as_str(), "a.bin");
    let mut holders: Vec<_> = net
        .t
        .holders(&f.1)
        .map(|h| (h.peer.node, h.chunks, h.of))
        .collect();
    holders.sort();
    assert_eq!(holders, vec![(node(1), 100, 100), (node(2), 30, 100)]);
    assert_eq!(
        net.t.holders(&FileId([9; 32])).count(),
        0,
        "not listed: no holders"
    );
}

#[test]
fn an_abandoned_file_loses_that_holder_at_once_and_its_last_complete_holder_delists_it() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    let f = file("a.bin", 100 * 1024, 1);
    publish(&mut net, a, &f);
    publish(&mut net, b, &f);
    assert_eq!(net.locate(a, f.1).unwrap().len(), 2);
    net.send(b, &Message::Abandon { file: f.1 });
    let holders = net.locate(a, f.1).unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].0.node, node(1));
    assert!(!net.closed(b), "abandoning a file is no reason to leave");
    // A file it does not list, or one b no longer holds: nothing happens.
    net.send(b, &Message::Abandon { file: f.1 });
    net.send(
        b,
        &Message::Abandon {
            file: FileId([7; 32]),
        },
    );
    assert_eq!(net.t.file_count(), 1);
    net.send(a, &Message::Abandon { file: f.1 });
    assert_eq!(net.t.file_count(), 0);
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, TrackerEvent::Delisted { file, .. } if *file == f.1)));
    assert_eq!(net.t.peer_count(), 2);
}

#[test]
fn connection_without_hello_is_closed_after_the_handshake_timeout() {
    let mut net = Net::new();
    let c = net.connect("10.0.0.1:1");
    net.drain();
    assert_eq!(net.timeout, Instant::from_secs(5));
    net.advance(Duration::from_secs(4));
    assert!(!net.closed(c));
    net.advance(Duration::from_secs(1));
    assert!(net.closed(c));
}

#[test]
fn messages_before_hello_and_garbage_are_misbehaviour() {
    let mut net = Net::new();
    let c = net.connect("10.0.0.1:1");
    net.send(c, &Message::ListFiles);
    assert!(net.closed(c));
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Misbehaved {
            offence: Offence::Unexpected,
            ..
        }
    )));

    let c = net.connect("10.0.0.1:2");
    net.send_raw(c, &[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    assert!(net.closed(c));
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Misbehaved {
            offence: Offence::Frame(FrameError::Malformed),
            ..
        }
    )));

    // A length prefix over the limit closes before any of the frame is buffered.
    let c = net.connect("10.0.0.1:3");
    net.hello(c, 1, 1);
    net.send_raw(c, &u32::MAX.to_le_bytes());
    assert!(net.closed(c));
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Misbehaved {
            offence: Offence::Frame(FrameError::TooLong),
            ..
        }
    )));

    // A tracker-to-peer message sent to the tracker.
    let p = net.peer("10.0.0.2:1", 2, 7000);
    net.send(p, &Message::PeerListEnd { count: 0 });
    assert!(net.closed(p));
    assert_eq!(net.t.peer_count(), 0);
}

#[test]
fn publish_lists_the_file_and_serves_its_manifest_by_id() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    let f = file("a.bin", 5000, 1);
    assert_eq!(publish(&mut net, p, &f), Message::Published { file: f.1 });
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Published {
            first: true,
            size: 5000,
            ..
        }
    )));
    let list = net.list(p);
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0],
        FileEntry {
            file: f.1,
            name: "a.bin".try_into().unwrap(),
            size: 5000,
            chunk_size: 1024,
            chunks: 5,
            holders: 1,
            seeders: 1
        }
    );
    // Any connection (even unregistered) gets the manifest, hashes as the body.
    let q = net.connect("10.0.0.9:1");
    net.hello(q, 9, 0);
    net.take(q);
    net.send(q, &Message::GetManifest { file: f.1 });
    let got = net.take_with_bodies(q);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        Message::Manifest {
            file: f.1,
            header: f.0.clone()
        }
    );
    assert_eq!(got[0].1, f.2);
    // Unknown id.
    let other = FileId([9; 32]);
    net.send(q, &Message::GetManifest { file: other });
    assert_eq!(net.take(q), vec![Message::NotFound { file: other }]);
}

#[test]
fn publish_body_split_into_single_bytes_gives_the_same_result() {
    let mut net = Net::new();
    net.piece = 1;
    let p = net.peer("10.0.0.1:1", 1, 7000);
    let f = file("a.bin", 20 * 1024 + 5, 3);
    assert_eq!(publish(&mut net, p, &f), Message::Published { file: f.1 });
    assert_eq!(net.store.bytes(hashes(0)), f.2);
    assert_eq!(net.store.writes, f.2.len());
}

#[test]
fn second_publish_of_same_id_adds_a_holder_without_storing_again() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    let f = file("a.bin", 5000, 1);
    publish(&mut net, a, &f);
    let writes = net.store.writes;
    assert_eq!(publish(&mut net, b, &f), Message::Published { file: f.1 });
    assert_eq!(
        net.store.writes, writes,
        "a known file's hashes are checked, not stored again"
    );
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, TrackerEvent::Published { first: false, .. })));
    let list = net.list(a);
    assert_eq!((list.len(), list[0].holders, list[0].seeders), (1, 2, 2));
    assert_eq!(net.locate(a, f.1).unwrap().len(), 2);
}

#[test]
fn different_files_under_the_same_name_are_both_listed() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    let f1 = file("same.iso", 5000, 1);
    let f2 = file("same.iso", 5000, 2);
    publish(&mut net, a, &f1);
    assert_eq!(publish(&mut net, b, &f2), Message::Published { file: f2.1 });
    let list = net.list(a);
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|e| e.name.as_str() == "same.iso"));
    assert_ne!(list[0].file, list[1].file);
    assert_eq!(net.locate(a, f1.1).unwrap().len(), 1);
    assert_eq!(net.locate(a, f2.1).unwrap().len(), 1);
}

#[test]
fn publish_refusals_not_registered_wrong_id_too_many_chunks_storage_failure() {
    let mut net = Net::new();
    let q = net.connect("10.0.0.9:1");
    net.hello(q, 9, 0);
    let f = file("a.bin", 5000, 1);
    assert_eq!(
        publish(&mut net, q, &f),
        Message::PublishRefused {
            file: f.1,
            reason: PublishRefusal::NotRegistered
        }
    );
    // The body of a refused publish is skipped: the connection stays in sync.
    net.send(q, &Message::Ping(5));
    assert_eq!(net.take(q), vec![Message::Pong(5)]);

    let p = net.peer("10.0.0.1:1", 1, 7000);
    let mut lying = f.clone();
    lying.1 = FileId([7; 32]);
    assert_eq!(
        publish(&mut net, p, &lying),
        Message::PublishRefused {
            file: lying.1,
            reason: PublishRefusal::IdMismatch
        }
    );
    let mut tampered = f.clone();
    tampered.2[0] ^= 1;
    assert_eq!(
        publish(&mut net, p, &tampered),
        Message::PublishRefused {
            file: f.1,
            reason: PublishRefusal::IdMismatch
        }
    );

    let big = file("big.bin", 129 * 1024, 1);
    assert_eq!(
        publish(&mut net, p, &big),
        Message::PublishRefused {
            file: big.1,
            reason: PublishRefusal::TooManyChunks { max: 128 }
        }
    );
    assert!(net.list(p).is_empty());

    // Storage reports a failed write: the publish is refused, not listed with missing hashes.
    net.take(p);
    let msg = Message::Publish {
        file: f.1,
        header: f.0.clone(),
    };
    let mut buf = vec![0u8; FRAME_BUF_LEN];
    let n = encode_frame(&msg, &mut buf).unwrap();
    net.send_raw(p, &buf[..n]);
    net.t.handle_storage_failed(StorageKey {
        slot: 0,
        region: Region::Hashes,
    });
    net.send_raw(p, &f.2);
    assert!(net.take(p).contains(&Message::PublishRefused {
        file: f.1,
        reason: PublishRefusal::StorageFailed
    }));
    assert!(net.list(p).is_empty());
    // Everything refused left nothing behind in storage.
    assert!(net.store.is_empty());
}

#[test]
fn full_file_table_refuses_new_files_but_accepts_known_ones() {
    let mut net = Net::new();
    let a = net.peer("10.0.0.1:1", 1, 7000);
    let b = net.peer("10.0.0.2:1", 2, 7000);
    let files: Vec<_> = (0..4).map(|i| file(&format!("f{i}"), 2000, i)).collect();
    for f in &files {
        assert_eq!(publish(&mut net, a, f), Message::Published { file: f.1 });
    }
    let extra = file("f4", 2000, 9);
    assert_eq!(
        publish(&mut net, b, &extra),
        Message::PublishRefused {
            file: extra.1,
            reason: PublishRefusal::TrackerFull
        }
    );
    assert_eq!(
        publish(&mut net, b, &files[0]),
        Message::Published { file: files[0].1 }
    );
}

#[test]
fn locate_answers_chunk_ranges_of_online_holders_and_have_updates_them() {
    let mut net = Net::new();
    let seed = net.peer("10.0.0.1:1", 1, 7000);
    let leech = net.peer("10.0.0.2:1", 2, 7002);
    let f = file("a.bin", 100 * 1024, 1);
    publish(&mut net, seed, &f);
    let r = |start, end| ChunkRange { start, end };
    // Batched, out-of-order have updates merge into ranges.
    let ranges = heapless::Vec::from_slice(&[r(10, 12), r(0, 3), r(12, 14), r(50, 51)]).unwrap();
    net.send(leech, &Message::Have { file: f.1, ranges });
    let loc = net.locate(leech, f.1).unwrap();
    assert_eq!(
        loc[0].0,
        PeerEntry {
            node: node(1),
            addr: addr("10.0.0.1:7000")
        }
    );
    assert_eq!(loc[0].1, vec![r(0, 100)]);
    assert_eq!(
        loc[1].0,
        PeerEntry {
            node: node(2),
            addr: addr("10.0.0.2:7002")
        }
    );
    assert_eq!(loc[1].1, vec![r(0, 3), r(10, 14), r(50, 51)]);
    let list = net.list(leech);
    assert_eq!((list[0].holders, list[0].seeders), (2, 1));
    // Not listed: NotFound.
    assert_eq!(net.locate(leech, FileId([3; 32])), None);
}

#[test]
fn fragmented_holdings_are_split_across_items_without_loss() {
    let mut net = Net::new();
    let seed = net.peer("10.0.0.1:1", 1, 7000);
    let leech = net.peer("10.0.0.2:1", 2, 7002);
    let f = file("a.bin", 128 * 1024, 1);
    publish(&mut net, seed, &f);
    // Every even chunk: 64 one-chunk ranges, more than one item holds.
    let evens: Vec<ChunkRange> = (0..64)
        .map(|i| ChunkRange {
            start: 2 * i,
            end: 2 * i + 1,
        })
        .collect();
    for batch in evens.chunks(16) {
        let ranges = heapless::Vec::from_slice(batch).unwrap();
        net.send(leech, &Message::Have { file: f.1, ranges });
    }
    let loc = net.locate(leech, f.1).unwrap();
    assert_eq!(loc.len(), 2);
    assert_eq!(loc[1].1, evens);
}

#[test]
fn have_rules_out_of_range_is_misbehaviour_unknown_file_is_not_found_unregistered_refused() {
    let mut net = Net::new();
    let seed = net.peer("10.0.0.1:1", 1, 7000);
    let f = file("a.bin", 5000, 1);
    publish(&mut net, seed, &f);
    let p = net.peer("10.0.0.2:1", 2, 7000);
    let unknown = FileId([4; 32]);
    let one = heapless::Vec::from_slice(&[ChunkRange { start: 0, end: 1 }]).unwrap();
    net.send(
        p,
        &Message::Have {
            file: unknown,
            ranges: one.clone(),
        },
    );
    assert_eq!(
        net.take(p).last(),
        Some(&Message::NotFound { file: unknown })
    );

    let q = net.connect("10.0.0.3:1");
    net.hello(q, 3, 0);
    net.send(
        q,
        &Message::Have {
            file: f.1,
            ranges: one,
        },
    );
    assert_eq!(
        net.take(q).last(),
        Some(&Message::Refused(Refusal::NotRegistered))
    );

    let bad = heapless::Vec::from_slice(&[ChunkRange { start: 4, end: 6 }]).unwrap();
    net.send(
        p,
        &Message::Have {
            file: f.1,
            ranges: bad,
        },
    );
    assert!(net.closed(p));
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Misbehaved {
            offence: Offence::BadRange,
            ..
        }
    )));
}

#[test]
fn file_is_delisted_when_no_online_peer_holds_all_of_it() {
    let mut net = Net::new();
    let s1 = net.peer("10.0.0.1:1", 1, 7000);
    let s2 = net.peer("10.0.0.2:1", 2, 7000);
    let partial = net.peer("10.0.0.3:1", 3, 7000);
    let f = file("a.bin", 10 * 1024, 1);
    publish(&mut net, s1, &f);
    publish(&mut net, s2, &f);
    let most = heapless::Vec::from_slice(&[ChunkRange { start: 0, end: 9 }]).unwrap();
    net.send(
        partial,
        &Message::Have {
            file: f.1,
            ranges: most,
        },
    );
    // One complete holder leaves: still listed.
    net.send(s1, &Message::Leave);
    assert_eq!(net.list(partial).len(), 1);
    assert!(net.store.discarded.is_empty());
    // The last complete holder times out; a partial holder alone does not keep it listed.
    net.t.handle_closed(net.now, s2);
    net.drain();
    assert!(net.list(partial).is_empty());
    assert_eq!(net.locate(partial, f.1), None);
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, TrackerEvent::Delisted { file, .. } if *file == f.1)));
    assert_eq!(
        net.store.discarded,
        vec![StorageKey {
            slot: 0,
            region: Region::Hashes
        }]
    );
    net.take(partial);
    net.send(partial, &Message::GetManifest { file: f.1 });
    assert_eq!(net.take(partial), vec![Message::NotFound { file: f.1 }]);
    // Publishing it again lists it again.
    assert_eq!(
        publish(&mut net, partial, &f),
        Message::Published { file: f.1 }
    );
    assert_eq!(net.list(partial).len(), 1);
}

#[test]
fn empty_file_publishes_with_no_body() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    let f = file("empty", 0, 0);
    assert_eq!(publish(&mut net, p, &f), Message::Published { file: f.1 });
    assert_eq!(net.list(p)[0].chunks, 0);
    assert_eq!(net.locate(p, f.1).unwrap().len(), 1);
}

#[test]
fn a_remote_that_does_not_read_is_not_read_either() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    net.take(p);
    let mut bytes = Vec::new();
    let mut buf = [0u8; FRAME_BUF_LEN];
    for i in 0..100 {
        let n = encode_frame(&Message::Ping(i), &mut buf).unwrap();
        bytes.extend_from_slice(&buf[..n]);
    }
    // Without draining, the tracker stops taking input once its reply queue is full.
    let r = net.t.handle_recv(net.now, p, &bytes);
    assert!(
        r.consumed < bytes.len() / 4,
        "consumed {} of {}",
        r.consumed,
        bytes.len()
    );
    // Draining and offering the rest again finishes the job, in order.
    net.drain();
    net.send_raw(p, &bytes[r.consumed..]);
    let pongs: Vec<_> = net.take(p);
    assert_eq!(pongs, (0..100).map(Message::Pong).collect::<Vec<_>>());
}

#[test]
fn blocked_connections_get_no_frames_until_ready() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    net.take(p);
    net.t.handle_send_blocked(p);
    net.send(p, &Message::Ping(1));
    assert!(net.take(p).is_empty());
    net.t.handle_send_ready(p);
    net.drain();
    assert_eq!(net.take(p), vec![Message::Pong(1)]);
}

#[test]
fn stale_connection_ids_are_ignored() {
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    net.t.handle_closed(net.now, p);
    net.drain();
    let q = net.peer("10.0.0.2:1", 2, 7000);
    assert_eq!(p.index(), q.index());
    // Bytes for the dead id do not reach the new connection.
    let mut buf = [0u8; FRAME_BUF_LEN];
    let n = encode_frame(&Message::Leave, &mut buf).unwrap();
    let r = net.t.handle_recv(net.now, p, &buf[..n]);
    assert_eq!(r.consumed, n);
    net.drain();
    assert_eq!(net.t.peer_count(), 1);
    assert!(!net.closed(q));
}

#[test]
fn worst_case_ram_matches_the_documented_figures() {
    // These numbers are quoted in the tracker module docs; update both together.
    let small = Tracker::ram_bytes::<16, 8, 32, 32>();
    assert_eq!(
        small,
        std::mem::size_of::<Tracker>() + std::mem::size_of::<SmallTrackerMemory>()
    );
    // Was 41,408 with compile-time tables: the indexes cost less than the events queue saves.
    assert_eq!(small, 37_168);
}

// ---- swarm key ------------------------------------------------------------------------------

const KEY: SwarmKey = SwarmKey([0x5e; 32]);

fn keyed() -> Net {
    let mut config = TrackerConfig::new(node(0xee));
    config.swarm_key = Some(KEY);
    Net::with(config)
}

/// The tracker's Hello nonce from what `c` received first.
fn tracker_nonce(got: &[Message]) -> [u8; 16] {
    match got.first() {
        Some(Message::Hello(h)) => h.nonce,
        other => panic!("expected the tracker's Hello first, got {other:?}"),
    }
}

#[test]
fn with_a_swarm_key_a_proven_peer_registers_and_the_tracker_proves_itself() {
    let mut net = keyed();
    let c = net.connect("192.0.2.7:40000");
    net.hello(c, 1, 7001); // our nonce: [1; 16]
    let got = net.take(c);
    assert_eq!(got.len(), 1, "only the Hello before our proof: {got:?}");
    let theirs = tracker_nonce(&got);
    let ours = [1u8; 16];
    net.send(
        c,
        &Message::Auth {
            proof: KEY.prove(Side::Opener, &ours, &theirs),
        },
    );
    let got = net.take(c);
    let [Message::Auth { proof }] = got[..] else {
        panic!("expected the tracker's proof, got {got:?}");
    };
    assert!(KEY.verify(Side::Acceptor, &theirs, &ours, &proof));
    net.send(c, &Message::Register);
    assert!(matches!(net.take(c)[0], Message::Registered { .. }));
    assert_eq!(net.t.peer_count(), 1);
}

#[test]
fn with_a_swarm_key_a_node_without_it_gets_only_a_refusal() {
    let mut net = keyed();
    let c = net.connect("192.0.2.7:40000");
    // A node without the key pipelines its registration right behind its Hello.
    net.hello(c, 1, 7001);
    net.send(c, &Message::Register);
    net.send(c, &Message::ListFiles);
    let got = net.take(c);
    tracker_nonce(&got);
    assert_eq!(got[1..], [Message::Refused(Refusal::SwarmKey)]);
    assert!(net.closed(c));
    assert_eq!(net.t.peer_count(), 0);
    assert!(net.events.iter().any(|e| matches!(
        e,
        TrackerEvent::Refused {
            reason: Refusal::SwarmKey,
            ..
        }
    )));
}

#[test]
fn with_a_swarm_key_a_wrong_or_replayed_proof_is_refused() {
    let other = SwarmKey([0x5f; 32]);
    let forge = |kind: usize, theirs: [u8; 16]| match kind {
        // The right construction with another key.
        0 => other.prove(Side::Opener, &[1; 16], &theirs),
        // The right key, but the acceptor's side: a reflected proof.
        1 => KEY.prove(Side::Acceptor, &[1; 16], &theirs),
        // A proof made for another session's nonce (a replay).
        _ => KEY.prove(Side::Opener, &[1; 16], &[0; 16]),
    };
    for kind in 0..3 {
        let mut net = keyed();
        let c = net.connect("192.0.2.7:40000");
        net.hello(c, 1, 7001);
        let theirs = tracker_nonce(&net.take(c));
        net.send(
            c,
            &Message::Auth {
                proof: forge(kind, theirs),
            },
        );
        assert_eq!(net.take(c), [Message::Refused(Refusal::SwarmKey)]);
        assert!(net.closed(c));
    }
}

#[test]
fn each_connection_gets_a_fresh_nonce() {
    let mut net = keyed();
    let a = net.connect("192.0.2.7:40000");
    let b = net.connect("192.0.2.8:40000");
    net.hello(a, 1, 7001);
    net.hello(b, 2, 7001);
    assert_ne!(tracker_nonce(&net.take(a)), tracker_nonce(&net.take(b)));
}

#[test]
fn without_a_swarm_key_a_proof_is_refused() {
    let mut net = Net::new();
    let c = net.connect("192.0.2.7:40000");
    net.hello(c, 1, 7001);
    net.take(c);
    net.send(c, &Message::Auth { proof: [0; 32] });
    assert_eq!(net.take(c), [Message::Refused(Refusal::SwarmKey)]);
    assert!(net.closed(c));
}

#[test]
fn with_a_swarm_key_the_handshake_must_finish_in_time() {
    let mut net = keyed();
    let c = net.connect("192.0.2.7:40000");
    net.hello(c, 1, 7001);
    net.take(c);
    net.advance(Duration::from_secs(11));
    assert!(net.closed(c));
}

#[test]
fn a_registered_peer_refused_leaves_the_list_with_what_it_held() {
    // Found by the fuzz target's invariant check: a refusal used to free the connection
    // without unregistering it, so its holding outlived it and the file stayed listed.
    let mut net = Net::new();
    let p = net.peer("10.0.0.1:1", 1, 7000);
    let f = file("a.bin", 5000, 1);
    publish(&mut net, p, &f);
    assert_eq!(net.t.file_count(), 1);
    // A proof where no swarm key is configured: refused, and the peer is gone.
    net.send(p, &Message::Auth { proof: [0; 32] });
    assert!(net.closed(p));
    assert_eq!(net.t.peer_count(), 0);
    assert_eq!(
        net.t.file_count(),
        0,
        "its file had no other complete holder"
    );
    net.t.check_invariants();
}

#[test]
fn a_locate_names_at_most_locate_holders_starting_further_along_each_time() {
    let mut config = TrackerConfig::new(node(0xee));
    config.locate_holders = 2;
    let mut net = Net::with(config);
    let f = file("many.bin", 4096, 3);
    // Five holders: one publisher, four that hold some chunks.
    let holders: Vec<ConnId> = (1..=5)
        .map(|i| net.peer(&format!("10.0.0.{i}:1"), i, 7000))
        .collect();
    publish(&mut net, holders[0], &f);
    for &h in &holders[1..] {
        let mut ranges = heapless::Vec::new();
        ranges.push(ChunkRange { start: 0, end: 2 }).unwrap();
        net.send(h, &Message::Have { file: f.1, ranges });
    }
    let asker = net.peer("10.0.1.1:1", 9, 7000);
    let mut firsts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let answer = net.locate(asker, f.1).unwrap();
        assert_eq!(answer.len(), 2, "{answer:?}");
        firsts.push(answer[0].0.node);
        seen.extend(answer.iter().map(|(p, _)| p.node));
    }
    // Each answer starts one holder further along, so five asks see all five holders.
    assert_eq!(seen.len(), 5, "{firsts:?}");
    let distinct: std::collections::BTreeSet<_> = firsts.iter().collect();
    assert_eq!(distinct.len(), 5, "{firsts:?}");
}
