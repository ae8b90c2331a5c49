//! The tracker: who is online, which files are listed, who holds which chunks.
//!
//! # Driving it
//!
//! A [`Tracker`] is a sans-IO state machine. The adapter owns sockets, a clock and storage for
//! chunk hashes; the tracker owns everything else. The contract:
//!
//! 1. Tell it what happened with a `handle_*` call: [`Tracker::handle_accept`],
//!    [`Tracker::handle_recv`], [`Tracker::handle_closed`], [`Tracker::handle_timeout`],
//!    [`Tracker::handle_send_blocked`] / [`Tracker::handle_send_ready`],
//!    [`Tracker::handle_storage_failed`].
//! 2. Then call [`Tracker::poll_output`] until it returns `Timeout`: frames to send (each
//!    possibly followed by bytes from storage), actions (close a connection, discard stored
//!    hashes) and events (what happened, for logs), in the order the core picks (see
//!    [`crate::io`]).
//! 3. Sleep until that instant or the next socket event, whichever is first.
//!
//! `handle_recv` may consume less than it was given: the connection's reply queue is full
//! because its remote is not reading. Keep the rest, stop reading that socket, and offer the
//! rest again after draining. That is the backpressure that keeps every queue here bounded.
//!
//! This file keeps the surface, the entry points, registration and the message dispatch;
//! `event` holds the config and events, `publish` the file table and holdings, `answers`
//! what is sent, `invariants` what must always hold.
//!
//! # Rules
//!
//! - A peer registers after its `Hello`; a second registration of the same node id or the same
//!   address, or one past `max_peers`, is refused with a [`Refusal`] and the connection closed.
//! - One IP address holds at most [`TrackerConfig::max_conns_per_ip`] connections, so a single
//!   host cannot fill the tables with fake peers and lock honest ones out.
//! - The address recorded for a peer is the IP its connection came from with the listen port it
//!   announced, never an address it claims.
//! - Every [`TrackerConfig::ping_interval`] each connection that finished its handshake is
//!   pinged; one that leaves [`TrackerConfig::max_missed_pings`] pings in a row unanswered is
//!   dropped. A connection that sends no `Hello` within the handshake timeout is closed.
//! - Every registered peer is sent the whole active peer list whenever it changes.
//! - A publish whose file id is already listed adds the publisher as a holder; a different file
//!   under a listed name is refused with [`PublishRefusal::NameTaken`].
//! - A file stays listed while at least one online peer holds all of its chunks; when the last
//!   complete holder goes, the file is delisted and its stored hashes discarded.
//!
//! # Memory
//!
//! Everything is in the struct; nothing grows. With the const parameters `C` connections, `F`
//! files, `H` holdings (one per peer and file it holds chunks of) and `W` bitmap words (at most
//! `32 * W` chunks per file), [`Tracker::ram_bytes`] is the exact size, on x86_64 and
//! thumbv7em alike up to alignment padding:
//!
//! | configuration | C | F | H | W | bytes |
//! |---|---|---|---|---|---|
//! | [`HostTracker`] | 256 | 128 | 1024 | 256 (8192 chunks) | 1,487,808 |
//! | [`SmallTracker`] | 16 | 8 | 32 | 32 (1024 chunks) | 41,408 |
//!
//! Most of it is per connection (a 512-byte frame buffer, an 8-entry reply queue and a
//! publish-in-progress) and per holding (`4 * W` bytes of bitmap). Chunk hashes are never in
//! RAM: they go to storage as they arrive and are sent from storage. A test checks both
//! figures (on x86_64).

mod answers;
mod event;
mod invariants;
mod publish;

pub use event::{LeaveReason, Offence, Table, TrackerConfig, TrackerEvent};

use answers::Reply;
use publish::{PublishRx, Target};

use core::fmt;
use core::net::SocketAddr;

use heapless::Deque;

use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::auth::{self, Nonce, Side};
use crate::bitmap::ChunkBitmap;
use crate::conn::{self, ConnId, EventQueue, HasLink, Link, Phase, Slots, TableFull, Wire};
use crate::io::{Action, Drain, Output, Outputs};
pub use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::{FileIdHasher, ManifestHeader, HASH_LEN, MAX_CHUNKS};
use crate::storage::{Region, StorageKey, StorageSend, StorageWrite};
use crate::time::Instant;
use crate::wire::{
    encode_frame, ChunkRange, FileEntry, FileId, FrameError, Hello, HolderItem, Message, PeerEntry,
    PublishRefusal, Refusal, MAX_RANGES, PROTOCOL_VERSION,
};

/// A tracker sized for a Linux host: 256 connections, 128 files, 1024 holdings, 8192 chunks
/// per file. 1.4 MiB; keep it on the heap or the main thread's stack.
pub type HostTracker = Tracker<256, 128, 1024, 256>;

/// A tracker small enough for a microcontroller: 16 connections, 8 files, 32 holdings, 1024
/// chunks per file.
pub type SmallTracker = Tracker<16, 8, 32, 32>;

/// The tracker's timers, a table indexed by kind as the peer's (see `peer/timers.rs`): each
/// kind's deadline and expiry are written side by side in `deadline` and `expire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A connection's handshake did not finish in time: it is closed.
    Handshake,
    /// Every open connection is pinged; silent ones are dropped.
    Ping,
}

impl Timer {
    /// Every kind, in the order their expiries run.
    const ALL: [Timer; 2] = [Timer::Handshake, Timer::Ping];
}

/// Replies queued per connection before the tracker stops reading from it.
const REPLY_QUEUE: usize = 8;
/// Events kept for the adapter between drains; older ones are kept, newer ones counted lost.
const EVENT_QUEUE: usize = 32;

pub(crate) struct Conn {
    link: Link,
    /// The recorded address, once registered.
    registered: Option<SocketAddr>,
    replies: Deque<Reply, REPLY_QUEUE>,
    /// The peer list changed since it was last pushed (registered peers only).
    push_dirty: bool,
    /// A push in progress: next connection slot to look at, items sent.
    push: Option<(u16, u16)>,
    publish: Option<PublishRx>,
}

impl HasLink for Conn {
    fn link(&self) -> &Link {
        &self.link
    }
    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Conn {
    fn has_output(&self) -> bool {
        !self.replies.is_empty() || self.push.is_some() || self.push_dirty
    }
}

#[derive(Clone, Debug)]
enum FileState {
    Free,
    /// A publish is receiving its hashes into this slot.
    Pending(ManifestHeader),
    Listed(FileId, ManifestHeader),
    /// Delisted or abandoned: report the discard through `poll_output`, then free.
    Discard,
}

struct Holding<const W: usize> {
    conn: ConnId,
    slot: u16,
    chunks: ChunkBitmap<W>,
}

/// The tracker state machine; see the [module docs](self) for the contract and the rules.
///
/// `C` connections, `F` files, `H` holdings (peer × file pairs), `W` words of chunk bitmap per
/// holding (at most `32 * W` chunks per file).
pub struct Tracker<const C: usize, const F: usize, const H: usize, const W: usize> {
    config: TrackerConfig,
    conns: Slots<Conn, C>,
    files: [FileState; F],
    holdings: [Option<Holding<W>>; H],
    events: EventQueue<TrackerEvent, EVENT_QUEUE>,
    /// Connections in `Phase::Closed` plus files in `FileState::Discard`.
    pending_actions: usize,
    next_ping: Instant,
    ping_nonce: u32,
    /// Handshake nonces.
    rng: Xoshiro256PlusPlus,
    /// Where `poll_output` stands.
    drain: Drain,
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Tracker<C, F, H, W> {
    /// The most chunks a file may have on this tracker.
    pub const MAX_FILE_CHUNKS: u32 = ChunkBitmap::<W>::MAX_FILE_CHUNKS;

    /// A tracker with no connections and no files; the first ping round is one interval out.
    pub fn new(config: TrackerConfig, now: Instant) -> Self {
        Tracker {
            config,
            conns: Slots::new(),
            files: core::array::from_fn(|_| FileState::Free),
            holdings: core::array::from_fn(|_| None),
            events: EventQueue::new(),
            pending_actions: 0,
            next_ping: now + config.ping_interval,
            ping_nonce: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            drain: Drain::default(),
        }
    }

    /// Every input starts here: the drain must hand out whatever the input queues.
    fn enter(&mut self) {
        // What the last input (and its drain) left behind.
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.drain.input();
    }

    /// The exact RAM this tracker type occupies, in bytes.
    pub const fn ram_bytes() -> usize {
        core::mem::size_of::<Self>()
    }

    /// Events that did not fit the queue because the adapter did not drain it.
    pub fn events_lost(&self) -> u32 {
        self.events.lost()
    }

    /// Registered peers right now.
    pub fn peer_count(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| c.registered.is_some())
            .count()
    }

    /// Files listed right now.
    pub fn file_count(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f, FileState::Listed(..)))
            .count()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A connection from `remote` was accepted. `Err` means the table is full, or full for
    /// that IP address ([`TrackerConfig::max_conns_per_ip`]): close the socket.
    pub fn handle_accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull> {
        self.enter();
        let from_ip = self
            .conns
            .iter()
            .filter(|(_, c)| c.link.remote.ip() == remote.ip())
            .count();
        if from_ip >= self.config.max_conns_per_ip {
            self.event(TrackerEvent::Overloaded(Table::ConnectionsPerIp));
            return Err(TableFull);
        }
        let conn = Conn {
            link: Link::new(
                remote,
                Phase::Handshake {
                    deadline: now + self.config.handshake_timeout,
                },
                // Any body the wire allows is read (and skipped if refused), so a publisher
                // with a file too large for this tracker hears why instead of being cut off.
                MAX_CHUNKS as u64 * HASH_LEN as u64,
                auth::nonce(&mut self.rng),
                now,
            ),
            registered: None,
            replies: Deque::new(),
            push_dirty: false,
            push: None,
            publish: None,
        };
        self.conns.insert(conn)
    }

    /// Bytes arrived on `conn`. See [`Recv`] for what to do with the answer.
    pub fn handle_recv<'a>(&mut self, now: Instant, conn: ConnId, input: &'a [u8]) -> Recv<'a> {
        self.enter();
        conn::recv(self, now, conn, input)
    }

    /// The socket of `conn` closed (by the remote, or an error). The id is dead from now on.
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.enter();
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if c.link.phase == Phase::Closed {
            self.pending_actions -= 1;
        }
        self.unregister(conn, LeaveReason::Disconnected);
        self.abandon_publish(conn);
        self.conns.remove(conn);
    }

    /// The adapter cannot take more output for `conn` until [`Tracker::handle_send_ready`].
    pub fn handle_send_blocked(&mut self, conn: ConnId) {
        self.enter();
        self.conns.set_blocked(conn, true);
    }

    /// The adapter can take output for `conn` again.
    pub fn handle_send_ready(&mut self, conn: ConnId) {
        self.enter();
        self.conns.set_blocked(conn, false);
    }

    /// A [`StorageWrite`] for `key` failed; the publish it belongs to is refused at its end.
    pub fn handle_storage_failed(&mut self, key: StorageKey) {
        self.enter();
        for (_, c) in self.conns.iter_mut() {
            if let Some(rx) = &mut c.publish {
                if matches!(rx.target, Target::New(slot) if slot == key.slot) {
                    rx.storage_failed = true;
                }
            }
        }
    }

    /// Time passed; call at the instant `poll_output` ended its drain with (early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enter();
        for t in Timer::ALL {
            if self.deadline(t).is_some_and(|at| at <= now) {
                self.expire(t, now);
            }
        }
    }

    /// When `t` next expires, if it is armed.
    fn deadline(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::Handshake => self
                .conns
                .iter()
                .filter_map(|(_, c)| match c.link.phase {
                    Phase::Handshake { deadline } => Some(deadline),
                    _ => None,
                })
                .min(),
            Timer::Ping => Some(self.next_ping),
        }
    }

    /// What happens when `t` expires.
    fn expire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Handshake => {
                for id in self.conns.late_handshakes(now) {
                    debug!("closing {:?}: handshake not finished in time", id);
                    self.close_now(id);
                }
            }
            Timer::Ping => {
                self.next_ping = now + self.config.ping_interval;
                let max_missed = self.config.max_missed_pings;
                let dead = self
                    .conns
                    .ping_round(max_missed, &mut self.ping_nonce, |c, n| {
                        c.replies.push_back(Reply::Ping(n)).is_ok()
                    });
                for id in dead {
                    debug!("{:?} missed {} pings", id, max_missed);
                    self.unregister(id, LeaveReason::TimedOut);
                    self.close_now(id);
                }
            }
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next thing to do: a frame to send (encoded into `buf`), an action, an event, or
    /// `Timeout` when the drain is over. Call it after every input until `Timeout`; see
    /// [`crate::io`] for the contract.
    pub fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<TrackerEvent> {
        let out = Drain::poll(self, buf);
        #[cfg(debug_assertions)]
        if let Output::Timeout(_) = out {
            self.check_invariants();
        }
        out
    }

    // ---- message handling ---------------------------------------------------------------

    fn on_message(&mut self, id: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let registered = c.registered.is_some();
        // With a swarm key, a connection that sent its Hello stays in the handshake phase until
        // its proof checks out; nothing but that proof is taken from it meanwhile.
        let proving = c.link.hello.is_some() && matches!(c.link.phase, Phase::Handshake { .. });
        if proving {
            self.check_proof(id, msg);
            return;
        }
        match (c.link.hello.is_some(), msg) {
            (false, Message::Hello(hello)) => {
                if hello.version != PROTOCOL_VERSION {
                    let reason = Refusal::VersionMismatch {
                        supported: PROTOCOL_VERSION,
                    };
                    self.refuse(id, reason);
                } else {
                    c.link.hello = Some(hello);
                    let nonce = c.link.nonce;
                    if self.config.swarm_key.is_none() {
                        c.link.phase = Phase::Open;
                    }
                    self.reply(id, Reply::Hello(nonce));
                }
            }
            // A proof where no key is configured: the two ends disagree about the swarm.
            (true, Message::Auth { .. }) => self.refuse(id, Refusal::SwarmKey),
            (false, _) | (true, Message::Hello(_)) => self.misbehaved(id, Offence::Unexpected),
            (true, Message::Ping(n)) => self.reply(id, Reply::Pong(n)),
            (true, Message::Pong(_)) => c.link.missed_pings = 0,
            (true, Message::Register) if !registered => self.register(id),
            (true, Message::Leave) => {
                self.unregister(id, LeaveReason::Left);
                self.close_after_flush(id);
            }
            (true, Message::Publish { file, header }) => self.start_publish(id, file, header),
            (true, Message::ListFiles) => self.reply(
                id,
                Reply::Files {
                    cursor: 0,
                    count: 0,
                },
            ),
            (true, Message::Locate { file }) => {
                let reply = match self.listed_slot(&file) {
                    Some(slot) => Reply::Locate {
                        file,
                        slot,
                        cursor: 0,
                        chunk: 0,
                        holders: 0,
                    },
                    None => Reply::NotFound(file),
                };
                self.reply(id, reply);
            }
            (true, Message::GetManifest { file }) => {
                let reply = match self.listed_slot(&file) {
                    Some(slot) => Reply::Manifest { file, slot },
                    None => Reply::NotFound(file),
                };
                self.reply(id, reply);
            }
            (true, Message::Have { file, ranges }) if registered => self.have(id, file, &ranges),
            (true, Message::Have { .. }) => self.reply(id, Reply::Refused(Refusal::NotRegistered)),
            (true, _) => self.misbehaved(id, Offence::Unexpected),
        }
    }

    /// The handshake's last step with a swarm key: the opener's proof, or a refusal.
    fn check_proof(&mut self, id: ConnId, msg: Message) {
        let (Some(key), Some(c)) = (self.config.swarm_key, self.conns.get_mut(id)) else {
            return;
        };
        let Some(theirs) = c.link.hello.map(|h| h.nonce) else {
            return;
        };
        let ok = match msg {
            Message::Auth { proof } => key.verify(Side::Opener, &theirs, &c.link.nonce, &proof),
            _ => false,
        };
        if !ok {
            self.refuse(id, Refusal::SwarmKey);
            return;
        }
        c.link.phase = Phase::Open;
        let proof = key.prove(Side::Acceptor, &c.link.nonce, &theirs);
        self.reply(id, Reply::Auth(proof));
    }

    /// Answers `Refused(reason)`, reports it, and closes once that is sent.
    fn refuse(&mut self, id: ConnId, reason: Refusal) {
        let Some(remote) = self.conns.get(id).map(|c| c.link.remote) else {
            return;
        };
        self.reply(id, Reply::Refused(reason));
        self.event(TrackerEvent::Refused { remote, reason });
        // A registered peer refused now (a proof where no key is configured) broke the
        // protocol; anyone else was never on the list.
        self.unregister(id, LeaveReason::Misbehaved);
        self.close_after_flush(id);
    }

    fn register(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let remote = c.link.remote;
        let Some(hello) = c.link.hello else {
            return;
        };
        let addr = SocketAddr::new(remote.ip(), hello.listen_port);
        let mut count = 0;
        let mut refusal = None;
        for (_, other) in self.conns.iter() {
            let Some(other_addr) = other.registered else {
                continue;
            };
            count += 1;
            if other.link.hello.map(|h| h.node) == Some(hello.node) {
                refusal = Some(Refusal::DuplicateNode);
            } else if other_addr == addr && hello.listen_port != 0 {
                refusal = refusal.or(Some(Refusal::DuplicateAddress));
            }
        }
        if refusal.is_none() && count >= self.config.max_peers.min(C) {
            refusal = Some(Refusal::TrackerFull);
        }
        if let Some(reason) = refusal {
            self.reply(id, Reply::Refused(reason));
            self.event(TrackerEvent::Refused { remote, reason });
            self.close_after_flush(id);
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.registered = Some(addr);
        }
        self.reply(id, Reply::Registered(addr));
        self.event(TrackerEvent::PeerJoined {
            node: hello.node,
            addr,
        });
        self.peers_changed();
    }

    /// Removes `id` from the active list and drops what it held; no-op if not registered.
    fn unregister(&mut self, id: ConnId, reason: LeaveReason) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(addr) = c.registered.take() else {
            return;
        };
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        self.event(TrackerEvent::PeerLeft { node, addr, reason });
        for i in 0..H {
            let Some(h) = &self.holdings[i] else {
                continue;
            };
            if h.conn == id {
                let slot = h.slot;
                self.holdings[i] = None;
                self.delist_if_incomplete(slot);
            }
        }
        self.peers_changed();
    }

    fn peers_changed(&mut self) {
        for (_, c) in self.conns.iter_mut() {
            if c.registered.is_some() && c.link.phase == Phase::Open {
                c.push_dirty = true;
            }
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    fn reply(&mut self, id: ConnId, reply: Reply) {
        if let Some(c) = self.conns.get_mut(id) {
            // handle_recv stops reading a connection whose queue is full, and every message
            // queues at most one reply, so this only fails for tracker-initiated pings.
            if c.replies.push_back(reply).is_err() {
                warn!("reply queue of {:?} full", id);
            }
        }
    }

    fn event(&mut self, event: TrackerEvent) {
        self.events.push(event);
    }

    fn misbehaved(&mut self, id: ConnId, offence: Offence) {
        let Some(remote) = self.conns.get(id).map(|c| c.link.remote) else {
            return;
        };
        warn!("{:?} misbehaved: {:?}", id, offence);
        self.event(TrackerEvent::Misbehaved { remote, offence });
        self.unregister(id, LeaveReason::Misbehaved);
        self.close_now(id);
    }

    /// Close without sending anything more.
    fn close_now(&mut self, id: ConnId) {
        self.close(id, false);
    }

    /// Close once the queued replies are sent.
    fn close_after_flush(&mut self, id: ConnId) {
        self.close(id, true);
    }

    /// The one way the tracker ends a connection. A registered peer leaves the active list
    /// here if its closer did not already say why (and what it held goes with it), so no
    /// holding outlives its connection; a publish in progress is abandoned; a connection is
    /// counted for its `Close` action once.
    fn close(&mut self, id: ConnId, flush: bool) {
        self.unregister(id, LeaveReason::Disconnected);
        self.abandon_publish(id);
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        match c.link.phase {
            Phase::Closed => return,
            Phase::Closing if flush => return,
            _ => {}
        }
        c.push = None;
        c.push_dirty = false;
        if flush && !c.replies.is_empty() {
            c.link.phase = Phase::Closing;
        } else {
            c.link.phase = Phase::Closed;
            c.replies.clear();
            self.pending_actions += 1;
        }
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Outputs
    for Tracker<C, F, H, W>
{
    type Event = TrackerEvent;
    fn drain_state(&mut self) -> &mut Drain {
        &mut self.drain
    }
    fn next_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        conn::transmit(self, buf)
    }
    fn next_action(&mut self) -> Option<Action> {
        if self.pending_actions == 0 {
            return None;
        }
        if let Some(id) = self.conns.take_closed() {
            self.pending_actions -= 1;
            return Some(Action::Close(id));
        }
        let slot = self
            .files
            .iter()
            .position(|f| matches!(f, FileState::Discard))?;
        self.files[slot] = FileState::Free;
        self.pending_actions -= 1;
        Some(Action::Discard(hashes_key(slot as u16)))
    }
    fn next_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop()
    }
    fn next_timeout(&self) -> Instant {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.deadline(t))
            .fold(self.next_ping, Instant::min)
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Wire<C>
    for Tracker<C, F, H, W>
{
    type Conn = Conn;
    fn table(&self) -> &Slots<Conn, C> {
        &self.conns
    }
    fn table_mut(&mut self) -> &mut Slots<Conn, C> {
        &mut self.conns
    }
    fn next_frame(&mut self, id: ConnId, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        Tracker::next_frame(self, id, buf)
    }
    /// A connection whose reply queue is full is not read until its remote reads.
    fn may_read(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|c| !c.replies.is_full())
    }
    /// Only a `Pong` proves a connection alive to the tracker (see the ping rule).
    fn on_input(&mut self, _: ConnId, _: Instant) {}
    fn on_message(&mut self, id: ConnId, msg: Message) {
        Tracker::on_message(self, id, msg)
    }
    fn on_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>> {
        self.on_publish_body(id, data, remaining)
    }
    fn on_frame_error(&mut self, id: ConnId, e: FrameError) {
        self.misbehaved(id, Offence::Frame(e));
    }
}

fn hashes_key(slot: u16) -> StorageKey {
    StorageKey {
        slot,
        region: Region::Hashes,
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> fmt::Debug
    for Tracker<C, F, H, W>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("peers", &self.peer_count())
            .field("files", &self.file_count())
            .finish()
    }
}

// Capacity of MAX_RANGES must match what render_locate fills.
const _: () = assert!(MAX_RANGES > 0);
