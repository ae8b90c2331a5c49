//! A hostile node for the simulator: it speaks the wire by hand, with no core behind it, and
//! does one kind of harm to the tracker and to every honest peer it can reach.
//!
//! Each [`Attack`] is a thing a buggy or malicious node could do; the scenarios in
//! `tests/tests/hostile.rs` check that the swarm shrugs it off: downloads complete with correct
//! bytes, honest peers keep being served, and no node's buffers grow past their bounds.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use proto_core::conn::ConnId;
use proto_core::io::Action;
use proto_core::io::FRAME_BUF_LEN;
use proto_core::manifest::ManifestHeader;
use proto_core::time::{Duration, Instant};
use proto_core::wire::{
    encode_frame, BlockRef, ChunkRange, FileId, FrameDecoder, Hello, Item, Message, NodeId,
    MAX_EXCHANGE, PROTOCOL_VERSION,
};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// What the hostile node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Connects to the tracker and every peer and sends a frame whose length prefix claims
    /// 4 GiB, again and again.
    OversizedFrames,
    /// Connects to every peer as a fetcher of the file and floods it with block requests,
    /// thousands a second.
    RequestFlood,
    /// Tells the tracker it holds every chunk; peers that connect get a full bitfield, then
    /// garbage for requests in even chunks and silence for those in odd ones.
    FalseAvailability,
    /// Connects to every peer and sends blocks nobody asked for, with garbage payload.
    UnsolicitedBlocks,
    /// Publishes a manifest under the file's id whose hashes do not match it, and pushes the
    /// same wrong manifest to every peer.
    WrongManifest,
    /// Registers this many fake peers with the tracker (one connection each, distinct node ids,
    /// listen ports where nothing listens), all claiming the whole file.
    FakePeers(usize),
    /// Has no swarm key: tries to register, list, fetch the manifest, and talk to every peer.
    NoKey,
    /// Connects to every peer as a fetcher of the file and lies in peer exchange: thousands
    /// of addresses where nothing listens, every round, on every connection.
    LiesInExchange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Tracker,
    /// A connection we opened to a peer.
    ToPeer,
    /// A peer connected to us.
    FromPeer,
}

struct Conn {
    role: Role,
    /// Where we connected to (unspecified for a connection we accepted).
    addr: SocketAddr,
    decoder: FrameDecoder,
}

/// The hostile node's state. The simulator drives it like a core: `handle_*` in, then
/// [`Hostile::poll`] until empty.
pub struct Hostile {
    attack: Attack,
    file: FileId,
    header: ManifestHeader,
    tracker: SocketAddr,
    targets: Vec<SocketAddr>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u16,
    out: VecDeque<(ConnId, Vec<u8>)>,
    actions: VecDeque<Action>,
    next_round: Instant,
    rng: Xoshiro256PlusPlus,
    /// Every message the honest side sent us, with the role of its connection.
    pub received: Vec<Message>,
    /// Connections opened (or attempted).
    pub connections: u64,
    /// Bytes of block payload received (what the honest side spent on us).
    pub block_bytes: u64,
    /// Addresses told in exchange (all of them false).
    pub lies: u64,
}

/// How often the attack is renewed (reconnects, another burst).
const ROUND: Duration = Duration::from_millis(500);
/// Requests per connection per round in a flood.
const FLOOD: usize = 2000;
/// Unsolicited blocks per connection per round.
const PUSHED_BLOCKS: usize = 64;
/// Exchange messages (each full of false addresses) per connection per round.
const LIE_MESSAGES: usize = 32;

impl Hostile {
    /// A hostile node that knows the file (id, header) and where the tracker and the honest
    /// peers listen.
    pub fn new(
        attack: Attack,
        file: FileId,
        header: ManifestHeader,
        tracker: SocketAddr,
        targets: Vec<SocketAddr>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut h = Hostile {
            attack,
            file,
            header,
            tracker,
            targets,
            conns: BTreeMap::new(),
            next_conn: 0,
            out: VecDeque::new(),
            actions: VecDeque::new(),
            next_round: now,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            received: Vec::new(),
            connections: 0,
            block_bytes: 0,
            lies: 0,
        };
        h.handle_timeout(now);
        h
    }

    fn chunks(&self) -> u32 {
        self.header.chunk_count()
    }

    fn open(&mut self, role: Role, addr: SocketAddr) {
        let conn = ConnId::from_parts(self.next_conn, 1);
        self.next_conn = self.next_conn.wrapping_add(1);
        self.conns.insert(
            conn,
            Conn {
                role,
                addr,
                decoder: FrameDecoder::new(u64::MAX),
            },
        );
        self.connections += 1;
        self.actions.push_back(Action::Connect { conn, addr });
    }

    fn send(&mut self, conn: ConnId, msg: &Message, body: &[u8]) {
        let mut buf = [0u8; FRAME_BUF_LEN];
        let Ok(n) = encode_frame(msg, &mut buf) else {
            return;
        };
        let mut bytes = buf[..n].to_vec();
        bytes.extend_from_slice(body);
        self.out.push_back((conn, bytes));
    }

    fn hello(&mut self, conn: ConnId, node: NodeId, listen_port: u16) {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node,
            listen_port,
            nonce,
        };
        self.send(conn, &Message::Hello(hello), &[]);
    }

    fn own_node(&self) -> NodeId {
        NodeId([0xbd; 16])
    }

    fn garbage(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.rng.fill_bytes(&mut v);
        v
    }

    fn full_bitfield(&self) -> Vec<u8> {
        let n = self.chunks();
        let mut body = vec![0xffu8; n.div_ceil(8) as usize];
        if !n.is_multiple_of(8) {
            if let Some(last) = body.last_mut() {
                *last = (1u8 << (n % 8)) - 1;
            }
        }
        body
    }

    fn random_block(&mut self) -> BlockRef {
        let chunk = (self.rng.next_u64() % u64::from(self.chunks())) as u32;
        let len = self.header.chunk_len(chunk).min(16 * 1024);
        BlockRef {
            file: self.file,
            chunk,
            offset: 0,
            len,
        }
    }

    fn has_role(&self, role: Role) -> usize {
        self.conns.values().filter(|c| c.role == role).count()
    }

    /// The attack's opening moves on a connection that just opened.
    pub fn handle_connected(&mut self, _now: Instant, conn: ConnId) {
        let Some(role) = self.conns.get(&conn).map(|c| c.role) else {
            return;
        };
        let file = self.file;
        let all = ChunkRange {
            start: 0,
            end: self.chunks(),
        };
        let mut have = heapless::Vec::new();
        let _ = have.push(all);
        match (self.attack, role) {
            (Attack::OversizedFrames, _) => {
                self.hello(conn, self.own_node(), 7000);
                let mut bytes = u32::MAX.to_le_bytes().to_vec();
                bytes.extend(self.garbage(1024));
                self.out.push_back((conn, bytes));
            }
            (Attack::FalseAvailability, Role::Tracker) => {
                self.hello(conn, self.own_node(), 7000);
                self.send(conn, &Message::Register, &[]);
            }
            (Attack::FakePeers(_), Role::Tracker) => {
                let mut node = [0u8; 16];
                self.rng.fill_bytes(&mut node);
                let port = 20_000 + (self.rng.next_u64() % 20_000) as u16;
                self.hello(conn, NodeId(node), port);
                self.send(conn, &Message::Register, &[]);
                self.send(conn, &Message::Have { file, ranges: have }, &[]);
            }
            (Attack::WrongManifest, role) => {
                self.hello(conn, self.own_node(), 7000);
                // The true header with hashes that are not the file's: the id cannot match.
                let header = self.header.clone();
                let hashes = self.garbage(header.hashes_len() as usize);
                if role == Role::Tracker {
                    self.send(conn, &Message::Register, &[]);
                    self.send(conn, &Message::Publish { file, header }, &hashes);
                } else {
                    self.send(conn, &Message::Manifest { file, header }, &hashes);
                }
            }
            (Attack::RequestFlood, Role::ToPeer) => {
                self.hello(conn, self.own_node(), 0);
                let body = vec![0u8; self.chunks().div_ceil(8) as usize];
                let chunks = self.chunks();
                self.send(conn, &Message::Bitfield { file, chunks }, &body);
                self.burst(conn);
            }
            (Attack::LiesInExchange, Role::ToPeer) => {
                self.hello(conn, self.own_node(), 0);
                let chunks = self.chunks();
                let body = vec![0u8; chunks.div_ceil(8) as usize];
                self.send(conn, &Message::Bitfield { file, chunks }, &body);
                self.burst(conn);
            }
            (Attack::UnsolicitedBlocks, Role::ToPeer) => {
                self.hello(conn, self.own_node(), 0);
                let body = self.full_bitfield();
                let chunks = self.chunks();
                self.send(conn, &Message::Bitfield { file, chunks }, &body);
                self.burst(conn);
            }
            (Attack::NoKey, role) => {
                self.hello(conn, self.own_node(), 7000);
                if role == Role::Tracker {
                    self.send(conn, &Message::Register, &[]);
                    self.send(conn, &Message::ListFiles, &[]);
                    self.send(conn, &Message::GetManifest { file }, &[]);
                } else {
                    let chunks = self.chunks();
                    let body = vec![0u8; chunks.div_ceil(8) as usize];
                    self.send(conn, &Message::Bitfield { file, chunks }, &body);
                    let b = self.random_block();
                    self.send(conn, &Message::Request(b), &[]);
                }
            }
            _ => {}
        }
    }

    /// One round of the attack's traffic on an open connection.
    fn burst(&mut self, conn: ConnId) {
        match self.attack {
            Attack::RequestFlood => {
                for _ in 0..FLOOD {
                    let b = self.random_block();
                    self.send(conn, &Message::Request(b), &[]);
                }
            }
            Attack::UnsolicitedBlocks => {
                for _ in 0..PUSHED_BLOCKS {
                    let b = self.random_block();
                    let payload = self.garbage(b.len as usize);
                    self.send(conn, &Message::Block(b), &payload);
                }
            }
            Attack::LiesInExchange => {
                for _ in 0..LIE_MESSAGES {
                    let addrs = (0..MAX_EXCHANGE)
                        .map(|_| {
                            let r = self.rng.next_u64();
                            let ip = [10, 200, (r >> 8) as u8, r as u8];
                            SocketAddr::from((ip, 1024 + (r >> 16) as u16 % 60_000))
                        })
                        .collect();
                    self.lies += MAX_EXCHANGE as u64;
                    let file = self.file;
                    self.send(conn, &Message::Peers { file, addrs }, &[]);
                }
            }
            Attack::FalseAvailability => {
                let mut ranges = heapless::Vec::new();
                let _ = ranges.push(ChunkRange {
                    start: 0,
                    end: self.chunks(),
                });
                self.send(
                    conn,
                    &Message::Have {
                        file: self.file,
                        ranges,
                    },
                    &[],
                );
            }
            _ => {}
        }
    }

    /// A peer connected to our listen port (only an attack that claims chunks takes it).
    pub fn handle_accept(&mut self, _now: Instant, _remote: SocketAddr) -> Option<ConnId> {
        if self.attack != Attack::FalseAvailability {
            return None;
        }
        let conn = ConnId::from_parts(self.next_conn, 1);
        self.next_conn = self.next_conn.wrapping_add(1);
        self.conns.insert(
            conn,
            Conn {
                role: Role::FromPeer,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                decoder: FrameDecoder::new(u64::MAX),
            },
        );
        Some(conn)
    }

    /// Bytes from the honest side: read whole, answered as the attack dictates.
    pub fn handle_recv(&mut self, _now: Instant, conn: ConnId, input: &[u8]) -> usize {
        let mut msgs = Vec::new();
        if let Some(c) = self.conns.get_mut(&conn) {
            let mut rest = input;
            while !rest.is_empty() {
                match c.decoder.decode(rest) {
                    Ok((n, item)) => {
                        rest = &rest[n..];
                        match item {
                            Some(Item::Message(m)) => msgs.push(m),
                            Some(Item::Body { data, .. }) => {
                                let block = matches!(msgs.last(), Some(Message::Block(_)));
                                if block {
                                    self.block_bytes += data.len() as u64;
                                }
                            }
                            None => {}
                        }
                        if n == 0 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        for m in msgs {
            self.received.push(m.clone());
            self.answer(conn, m);
        }
        input.len()
    }

    fn answer(&mut self, conn: ConnId, m: Message) {
        let Some(role) = self.conns.get(&conn).map(|c| c.role) else {
            return;
        };
        let file = self.file;
        match (m, role) {
            (Message::Ping(n), _) => self.send(conn, &Message::Pong(n), &[]),
            (Message::Registered { .. }, Role::Tracker)
                if self.attack == Attack::FalseAvailability =>
            {
                self.burst(conn)
            }
            (Message::Hello(_), Role::FromPeer) => self.hello(conn, self.own_node(), 7000),
            (Message::Bitfield { .. }, Role::FromPeer) => {
                let body = self.full_bitfield();
                let chunks = self.chunks();
                self.send(conn, &Message::Bitfield { file, chunks }, &body);
            }
            // Even chunks get garbage (blame that lands on us alone), odd chunks silence
            // (requests that must be noticed as stalled and sent elsewhere).
            (Message::Request(b), Role::FromPeer) if b.chunk.is_multiple_of(2) => {
                let payload = self.garbage(b.len as usize);
                self.send(conn, &Message::Block(b), &payload);
            }
            // Leaves as made up as the blocks.
            (Message::GetLeaves { chunk, .. }, Role::FromPeer) if chunk.is_multiple_of(2) => {
                let count = self.header.blocks_in(chunk);
                let body = self.garbage(count as usize * 32);
                self.send(conn, &Message::Leaves { file, chunk, count }, &body);
            }
            _ => {}
        }
    }

    /// The connection closed (or could not be made).
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Renews the attack: reconnects where connections were closed, sends the next burst.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_round {
            return;
        }
        self.next_round = now + ROUND;
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in open {
            self.burst(c);
        }
        let trackers = match self.attack {
            Attack::FakePeers(n) => n,
            Attack::RequestFlood | Attack::UnsolicitedBlocks | Attack::LiesInExchange => 0,
            _ => 1,
        };
        // Fake peers are opened once; the rest come back whenever they were thrown out.
        let fake = matches!(self.attack, Attack::FakePeers(_));
        if !fake || self.connections == 0 {
            for _ in self.has_role(Role::Tracker)..trackers {
                self.open(Role::Tracker, self.tracker);
            }
        }
        let peers = !matches!(
            self.attack,
            Attack::FalseAvailability | Attack::FakePeers(_)
        );
        if peers && self.has_role(Role::ToPeer) == 0 {
            for t in self.targets.clone() {
                self.open(Role::ToPeer, t);
            }
        } else if self.attack == Attack::LiesInExchange {
            // Back to every peer that dropped us (one without the manifest yet refuses).
            for t in self.targets.clone() {
                if !self.conns.values().any(|c| c.addr == t) {
                    self.open(Role::ToPeer, t);
                }
            }
        }
    }

    /// When the attack next wants [`Hostile::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.next_round
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The next connect or close.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}
