//! Test helpers shared by every harness that drives a node by hand: proto-core's own tests,
//! the fuzz targets, adapter-smoltcp's host tests and the simulator. Behind the `testing`
//! feature (which needs `std`); never in a node a user runs.
//!
//! - [`MemStore`]: the storage contract in memory, with the journal kept as lists.
//! - [`Frames`]: decodes what a node transmits, per connection, into messages and bodies.
//! - [`drain`]: one whole drain of a node, carried out on a store and collected.
//! - [`Pair`]: two nodes joined by an in-memory connection, stepped until both are quiet
//!   (quinn-proto's `Pair`, for a tracker and a peer or two peers).

// A harness that meets output a node must never produce should stop the test right there.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::vec::Vec;

use crate::conn::ConnId;
use crate::io::{Action, Output, FRAME_BUF_LEN};
use crate::manifest::{Built, ManifestBuilder, ManifestHeader};
use crate::node::Node;
use crate::storage::{Region, Storage, StorageKey};
use crate::time::{Duration, Instant};
use crate::wire::{encode_frame, FileId, FrameDecoder, Item, Message};

/// Storage in memory: every region a growing byte vector; the journal as lists.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    regions: BTreeMap<(u16, u8), Vec<u8>>,
    /// Manifests journalled, in order.
    pub manifests: Vec<(u16, FileId, ManifestHeader)>,
    /// Chunks journalled as verified, in order.
    pub verified: Vec<(u16, u32)>,
    /// Slots journalled as complete.
    pub completed: Vec<u16>,
    /// Keys discarded, in order.
    pub discarded: Vec<StorageKey>,
    /// Writes made.
    pub writes: usize,
    /// Bytes written, in all.
    pub written: u64,
}

fn region_key(key: StorageKey) -> (u16, u8) {
    let region = match key.region {
        Region::Hashes => 0,
        Region::Leaves => 1,
        Region::Data => 2,
    };
    (key.slot, region)
}

impl MemStore {
    /// The bytes stored under `key`.
    pub fn bytes(&self, key: StorageKey) -> &[u8] {
        self.regions
            .get(&region_key(key))
            .map_or(&[], Vec::as_slice)
    }

    /// Puts `bytes` under `key` (a file to share, its hashes).
    pub fn set(&mut self, key: StorageKey, bytes: &[u8]) {
        self.regions.insert(region_key(key), bytes.to_vec());
    }

    /// How many regions hold bytes.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region holds bytes.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// `len` bytes at `offset` of `key` (fewer at the end).
    pub fn read_vec(&self, key: StorageKey, offset: u64, len: u64) -> Vec<u8> {
        let b = self.bytes(key);
        let start = (offset as usize).min(b.len());
        let end = (offset.saturating_add(len) as usize).min(b.len());
        b[start..end].to_vec()
    }
}

impl Storage for MemStore {
    type Error = Infallible;

    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), Infallible> {
        self.writes += 1;
        self.written += data.len() as u64;
        let v = self.regions.entry(region_key(key)).or_default();
        let end = offset as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> Result<usize, Infallible> {
        let got = self.read_vec(key, offset, buf.len() as u64);
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }

    fn discard(&mut self, key: StorageKey) {
        self.discarded.push(key);
        self.regions.remove(&region_key(key));
    }

    fn manifest_received(
        &mut self,
        slot: u16,
        file: FileId,
        header: &ManifestHeader,
    ) -> Result<(), Infallible> {
        self.manifests.push((slot, file, header.clone()));
        Ok(())
    }

    fn chunk_verified(&mut self, slot: u16, chunk: u32) -> Result<(), Infallible> {
        self.verified.push((slot, chunk));
        Ok(())
    }

    fn file_complete(&mut self, slot: u16) -> Result<(), Infallible> {
        self.completed.push(slot);
        Ok(())
    }
}

/// A file's manifest, built from its bytes, with what a store keeps of it.
#[derive(Clone, Debug)]
pub struct TestManifest {
    /// The header.
    pub header: ManifestHeader,
    /// The file id.
    pub id: FileId,
    /// The chunk roots, as stored under [`Region::Hashes`].
    pub hashes: Vec<u8>,
    /// The leaves, as stored under [`Region::Leaves`].
    pub leaves: Vec<u8>,
}

/// Builds the manifest of `data` named `name` with chunks of `chunk` bytes.
pub fn manifest_of(name: &str, data: &[u8], chunk: u32) -> TestManifest {
    let header =
        ManifestHeader::new(name, data.len() as u64, chunk).expect("a valid test manifest");
    let mut b = ManifestBuilder::new(header);
    let (mut hashes, mut leaves) = (Vec::new(), Vec::new());
    b.update(data, |built| match built {
        Built::Leaf { leaf, .. } => leaves.extend_from_slice(&leaf),
        Built::Chunk { hash, .. } => hashes.extend_from_slice(&hash.0),
    })
    .expect("exactly the header's bytes");
    let (header, id) = b.finish().expect("exactly the header's bytes");
    TestManifest {
        header,
        id,
        hashes,
        leaves,
    }
}

impl MemStore {
    /// Stores what sharing `m` from `slot` needs: its hashes, its leaves, and `data`.
    pub fn put_shared(&mut self, slot: u16, m: &TestManifest, data: &[u8]) {
        let key = |region| StorageKey { slot, region };
        self.set(key(Region::Hashes), &m.hashes);
        self.set(key(Region::Leaves), &m.leaves);
        self.set(key(Region::Data), data);
    }
}

/// One frame encoded on its own, for a test to feed a node.
pub fn frame(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; FRAME_BUF_LEN];
    let n = encode_frame(m, &mut buf).expect("every message fits a frame buffer");
    buf[..n].to_vec()
}

/// Decodes the byte stream a node sends on each connection into messages, each with the body
/// that followed it (chunk hashes, block payload, a bitfield).
#[derive(Default)]
pub struct Frames {
    decoders: BTreeMap<ConnId, FrameDecoder>,
}

impl Frames {
    /// Decodes `bytes` sent on `conn`, continuing where its stream stopped.
    ///
    /// # Panics
    /// If the bytes do not decode: a node's output always does.
    pub fn push(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<(Message, Vec<u8>)> {
        let d = self
            .decoders
            .entry(conn)
            .or_insert_with(|| FrameDecoder::new(u64::MAX));
        let mut out: Vec<(Message, Vec<u8>)> = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (n, item) = d.decode(rest).expect("a node's output always decodes");
            rest = &rest[n..];
            match item {
                Some(Item::Message(m)) => out.push((m, Vec::new())),
                Some(Item::Body { data, .. }) => {
                    if let Some((_, body)) = out.last_mut() {
                        body.extend_from_slice(data);
                    }
                }
                None if n == 0 => break,
                None => {}
            }
        }
        out
    }
}

/// Everything one drain of a node handed out, with frames' bodies already read from storage.
pub struct Drained<E> {
    /// Bytes sent, per connection, in order (frames followed by their bodies).
    pub sent: Vec<(ConnId, Vec<u8>)>,
    /// Connects and closes asked for (storage actions are carried out on the store).
    pub actions: Vec<Action>,
    /// Events, in order.
    pub events: Vec<E>,
    /// When the node next needs `handle_timeout`.
    pub timeout: Instant,
}

/// Drains `node` until `Timeout`, carrying out storage actions and the journal on `store`.
pub fn drain<N: Node + ?Sized>(
    node: &mut N,
    now: Instant,
    store: &mut MemStore,
) -> Drained<N::Event> {
    let mut buf = [0u8; FRAME_BUF_LEN];
    let mut d = Drained {
        sent: Vec::new(),
        actions: Vec::new(),
        events: Vec::new(),
        timeout: now,
    };
    loop {
        match node.poll_stored(now, store, &mut buf, &mut |_, e| match e {}) {
            Output::Transmit(t) => {
                let mut bytes = buf[..t.len].to_vec();
                if let Some(s) = t.then {
                    bytes.extend(store.read_vec(s.key, s.offset, s.len));
                }
                d.sent.push((t.conn, bytes));
            }
            Output::Action(a) => d.actions.push(a),
            Output::Event(e) => d.events.push(e),
            Output::Timeout(at) => {
                d.timeout = at;
                return d;
            }
        }
    }
}

/// Offers `input` to `take` (which answers how many bytes it took) until it is all taken or
/// `take` takes nothing: the loop every harness wraps around `handle_recv`.
pub fn offer(input: &[u8], mut take: impl FnMut(&[u8]) -> usize) {
    let mut rest = input;
    while !rest.is_empty() {
        let n = take(rest);
        assert!(n <= rest.len(), "a node took more than it was offered");
        rest = &rest[n..];
        if n == 0 {
            break;
        }
    }
}

/// What a test saw a node hand out, gathered over drains: messages per connection, actions
/// and events.
pub struct Seen<E> {
    frames: Frames,
    /// Messages sent, per connection, not yet taken.
    pub got: BTreeMap<ConnId, Vec<Message>>,
    /// Every connect and close asked for.
    pub actions: Vec<Action>,
    /// Every event.
    pub events: Vec<E>,
}

impl<E> Default for Seen<E> {
    fn default() -> Self {
        Seen {
            frames: Frames::default(),
            got: BTreeMap::new(),
            actions: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<E> Seen<E> {
    /// Adds what a drain handed out.
    pub fn add(&mut self, d: Drained<E>) {
        for (conn, bytes) in d.sent {
            let msgs = self.frames.push(conn, &bytes);
            self.got
                .entry(conn)
                .or_default()
                .extend(msgs.into_iter().map(|(m, _)| m));
        }
        self.actions.extend(d.actions);
        self.events.extend(d.events);
    }

    /// The messages sent on `conn` since last taken.
    pub fn take(&mut self, conn: ConnId) -> Vec<Message> {
        self.got.remove(&conn).unwrap_or_default()
    }
}

/// Feeds `input` to `node` on `conn` until it is all taken, storing what it asks to store and
/// draining between calls (a node may stop reading until its replies are out). Returns what
/// the drains handed out.
pub fn feed<N: Node + ?Sized>(
    node: &mut N,
    now: Instant,
    conn: ConnId,
    input: &[u8],
    store: &mut MemStore,
) -> Drained<N::Event> {
    let mut all = drain(node, now, store);
    let mut rest = input;
    let mut stuck = 0;
    while !rest.is_empty() && stuck < 2 {
        let (n, wrote) = node.recv_stored(now, conn, rest, store, &mut |_, e| match e {});
        rest = &rest[n..];
        stuck = if n > 0 || wrote { 0 } else { stuck + 1 };
        let d = drain(node, now, store);
        all.sent.extend(d.sent);
        all.actions.extend(d.actions);
        all.events.extend(d.events);
        all.timeout = d.timeout;
    }
    all
}

/// One side of a [`Pair`].
pub struct End<N: Node> {
    /// The node.
    pub node: N,
    /// Its storage.
    pub store: MemStore,
    /// The address others reach it at.
    pub addr: SocketAddr,
    /// Every event it handed out, in order.
    pub events: Vec<N::Event>,
    /// Every message it received, per connection, in order.
    pub received: Vec<(ConnId, Message)>,
    /// When it next needs `handle_timeout`.
    pub timeout: Instant,
    inbox: BTreeMap<ConnId, VecDeque<u8>>,
    frames: Frames,
}

impl<N: Node> End<N> {
    /// A side for `node` reachable at `addr`.
    pub fn new(node: N, addr: SocketAddr) -> Self {
        End {
            node,
            store: MemStore::default(),
            addr,
            events: Vec::new(),
            received: Vec::new(),
            timeout: Instant::ZERO,
            inbox: BTreeMap::new(),
            frames: Frames::default(),
        }
    }
}

/// Two nodes and the connections between them, in memory: a `Connect` to the other side's
/// address reaches it; a connect elsewhere is refused. Bytes arrive in order and at once; time moves only
/// when a test says so ([`Pair::advance`]).
pub struct Pair<A: Node, B: Node> {
    /// The dialling side.
    pub a: End<A>,
    /// The listening side.
    pub b: End<B>,
    /// The time both sides see.
    pub now: Instant,
    /// Open connections: `a`'s id and `b`'s id.
    links: Vec<[ConnId; 2]>,
    next_port: u16,
}

impl<A: Node, B: Node> Pair<A, B> {
    /// A pair at time zero, not yet stepped.
    pub fn new(a: End<A>, b: End<B>) -> Self {
        Pair {
            a,
            b,
            now: Instant::ZERO,
            links: Vec::new(),
            next_port: 40_000,
        }
    }

    /// Drains both sides and delivers what they send until neither has anything to do.
    pub fn step(&mut self) {
        for _ in 0..100_000 {
            let (now, links, port) = (self.now, &mut self.links, &mut self.next_port);
            let moved = drain_side(&mut self.a, &mut self.b, links, 0, now, port)
                | drain_side(&mut self.b, &mut self.a, links, 1, now, port)
                | self.deliver();
            if !moved {
                return;
            }
        }
        panic!("the pair never became quiet");
    }

    /// Moves time on by `d`, firing timers that are due on the way, and steps after each.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.step();
            let next = self.a.timeout.min(self.b.timeout);
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if self.a.timeout <= self.now {
                self.a.node.timeout(self.now);
            }
            if self.b.timeout <= self.now {
                self.b.node.timeout(self.now);
            }
        }
        self.now = until;
        self.step();
    }

    /// Closes the connection from `b`'s side, as a reset would: both nodes hear of it.
    pub fn cut(&mut self) {
        for [ca, cb] in std::mem::take(&mut self.links) {
            self.a.node.closed(self.now, ca);
            self.b.node.closed(self.now, cb);
        }
        self.step();
    }

    fn deliver(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for [ca, cb] in self.links.clone() {
            moved |= deliver_to(&mut self.b, now, cb);
            moved |= deliver_to(&mut self.a, now, ca);
        }
        moved
    }
}

/// Drains side `side` of the pair (`from`), sends what it sent to the other side (`to`), and
/// carries out its connects and closes. Returns whether it handed out anything.
fn drain_side<X: Node, Y: Node>(
    from: &mut End<X>,
    to: &mut End<Y>,
    links: &mut Vec<[ConnId; 2]>,
    side: usize,
    now: Instant,
    next_port: &mut u16,
) -> bool {
    let other = 1 - side;
    let d = drain(&mut from.node, now, &mut from.store);
    from.timeout = d.timeout;
    let moved = !(d.sent.is_empty() && d.actions.is_empty() && d.events.is_empty());
    for (conn, bytes) in d.sent {
        if let Some(l) = links.iter().find(|l| l[side] == conn) {
            to.inbox.entry(l[other]).or_default().extend(bytes);
        }
    }
    for action in d.actions {
        match action {
            Action::Connect { conn, addr } if addr == to.addr => {
                let remote = SocketAddr::new(from.addr.ip(), *next_port);
                *next_port += 1;
                match to.node.accept(now, remote) {
                    Ok(accepted) => {
                        if let Some(gone) = accepted.evicted {
                            // Its socket closes: the other end sees the close.
                            if let Some(at) = links.iter().position(|l| l[other] == gone) {
                                let l = links.remove(at);
                                from.node.closed(now, l[side]);
                            }
                        }
                        let mut l = [conn; 2];
                        l[other] = accepted.conn;
                        links.push(l);
                        from.node.connected(now, conn);
                    }
                    Err(_) => from.node.closed(now, conn),
                }
            }
            Action::Connect { conn, .. } => from.node.closed(now, conn),
            Action::Close(conn) => {
                if let Some(i) = links.iter().position(|l| l[side] == conn) {
                    let l = links.remove(i);
                    to.node.closed(now, l[other]);
                }
            }
            // `drain` carries out the storage actions on the side's store.
            Action::ReadHash { .. } | Action::Discard(_) => {}
            // Answered after the drain that asked, as a worker thread would answer later;
            // one refused waits for a drain of this side.
            Action::HashBlock {
                key,
                offset,
                len,
                ticket,
            } => match crate::node::hash_stored(&mut from.store, key, offset, len) {
                Ok(Some(digest)) => {
                    while !from.node.block_hash(now, ticket, digest) {
                        drain_side(from, to, links, side, now, next_port);
                    }
                }
                Ok(None) => from.node.storage_failed(now, key),
                Err(e) => match e {},
            },
        }
    }
    from.events.extend(d.events);
    moved
}

fn deliver_to<N: Node>(end: &mut End<N>, now: Instant, conn: ConnId) -> bool {
    let Some(inbox) = end.inbox.get_mut(&conn) else {
        return false;
    };
    if inbox.is_empty() {
        return false;
    }
    let bytes: Vec<u8> = inbox.iter().copied().collect();
    let (n, _) = end
        .node
        .recv_stored(now, conn, &bytes, &mut end.store, &mut |_, e| match e {});
    for (m, _) in end.frames.push(conn, &bytes[..n]) {
        end.received.push((conn, m));
    }
    if let Some(inbox) = end.inbox.get_mut(&conn) {
        inbox.drain(..n);
    }
    n > 0
}

/// A peer over fixed memory that lives as long as the test (the device's path: nothing is
/// allocated by the peer; the memory is leaked on purpose, once per peer).
pub fn fixed_peer<
    const C: usize,
    const F: usize,
    const W: usize,
    const A: usize,
    const B: usize,
>(
    config: crate::peer::PeerConfig,
    now: crate::time::Instant,
) -> crate::peer::Peer<'static, W> {
    let memory: &'static mut crate::peer::PeerMemory<C, F, W, A, B> = Box::leak(Box::default());
    crate::peer::Peer::with_memory(config, now, memory)
}

/// A ticket as the peer would write it into [`Action::HashBlock`], for adapters' tests of
/// their hashing.
pub fn ticket(slot: u16, chunk: u32, end: u32, epoch: u32) -> crate::io::BlockTicket {
    crate::io::BlockTicket {
        slot,
        chunk,
        end,
        epoch,
    }
}
