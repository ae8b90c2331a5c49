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
//! This file keeps the surface, the entry points and the message dispatch; `register` the
//! handshake's end and the active list, `event` the config and events, `conns` the connections and their one lifecycle
//! (closing, freeing, eviction), `publish` the file table and holdings, `answers` what is
//! sent, `memory` the tables' memory, `invariants` what must always hold.
//!
//! # Rules
//!
//! - A peer registers after its `Hello`; a second registration of the same node id or the same
//!   address, or one past `max_peers`, is refused with a [`Refusal`] and the connection closed.
//! - One IP address holds at most [`TrackerConfig::max_conns_per_ip`] connections, so a single
//!   host cannot fill the tables with fake peers and lock honest ones out.
//! - A full connection table makes room for a newcomer: the connection longest in its
//!   handshake goes first, then the one that finished it longest ago without registering
//!   ([`Accepted::evicted`]). A registered peer is never evicted: with every slot registered,
//!   the newcomer is refused. A handshake has [`TrackerConfig::handshake_timeout`] (5 s).
//! - The address recorded for a peer is the IP its connection came from with the listen port it
//!   announced, never an address it claims.
//! - Every [`TrackerConfig::ping_interval`] each connection that finished its handshake is
//!   pinged; one that leaves [`TrackerConfig::max_missed_pings`] pings in a row unanswered is
//!   dropped. A connection that sends no `Hello` within the handshake timeout is closed.
//! - The peer list is sent only to whoever asks ([`Message::ListPeers`]); nothing is pushed
//!   when a peer joins or leaves, so a join costs O(log n), not a list to every peer (which
//!   was O(N²) bytes for a swarm of N).
//! - A locate answer names at most [`TrackerConfig::locate_holders`] holders, starting one
//!   further along the file's holders with every locate, so askers spread over the swarm.
//! - A publish whose file id is already listed adds the publisher as a holder. Files are told
//!   apart by id alone: different files may have the same name.
//! - A file stays listed while at least one online peer holds all of its chunks; when the last
//!   complete holder goes, the file is delisted and its stored hashes discarded.
//!
//! # Memory
//!
//! Every table is bounded by a capacity in [`TrackerConfig`] and lives in memory the adapter
//! gives (see the `table` module): [`Tracker::new`] (feature `alloc`) starts with empty heap
//! tables that grow on demand up to those limits; [`Tracker::with_memory`] runs in a
//! [`TrackerMemory`] the adapter owns, and allocates nothing. Lookups by connection, file id,
//! node id, address and (file, holder) are O(1) or O(log n); nothing per message walks all
//! peers or files.
//!
//! What a tracker costs, measured on x86_64 (`bench/tracker-load.sh` gives the RSS of a whole
//! process):
//!
//! - per connection: one slot (about 1 KiB: a 512-byte frame buffer, an 8-entry reply queue,
//!   a publish in progress) and, once registered, its entries in the node and address indexes;
//! - per holding (a peer and a file it holds chunks of): `max_chunks / 8` bytes of bitmap (1 KiB
//!   at the default 8,192 chunks) and two index entries;
//! - per file: its header (name, size, chunk size) and an index entry;
//! - per event waiting for the adapter: about 350 bytes (a file name), up to
//!   [`TrackerConfig::max_events`] on the heap, `C` in fixed memory.
//!
//! | fixed memory | C | F | H | W | bytes |
//! |---|---|---|---|---|---|
//! | [`SmallTrackerMemory`] | 16 | 8 | 32 | 32 (1024 chunks) | 37,168 |
//!
//! That is [`Tracker::ram_bytes`], the tracker with its memory; a test checks it (x86_64).
//! It was 41,408 when the tables were sized at compile time: the indexes added about 3.4 KB,
//! and an event queue sized to the connections (16 instead of 32 events) saved 5.5 KB.
//!
//! Chunk hashes are never in RAM: they go to storage as they arrive and are sent from storage.

mod answers;
mod conns;
mod event;
mod invariants;
mod memory;
mod publish;
mod register;
mod view;

pub use event::{LeaveReason, Offence, Table, TrackerConfig, TrackerEvent};
pub use memory::{SmallTrackerMemory, TrackerMemory};
pub use view::{FileView, HolderView, PeerView};

use memory::Parts;

use answers::Reply;
pub(crate) use conns::Conn;
use publish::{PublishRx, Target};

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use heapless::Deque;
use managed::{ManagedMap, ManagedSlice};

use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::auth::{self, Nonce, Side};
use crate::bitmap::{self, BitPool};
use crate::conn::{
    self, Accepted, ConnId, HasLink, Link, Phase, PingTurn, Slot, Slots, TableFull, Wire,
};
use crate::io::{Action, Drain, Output, Outputs};
pub use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::{FileIdHasher, ManifestHeader, MAX_BODY_LEN, MAX_CHUNKS};
use crate::storage::{Region, StorageKey, StorageSend, StorageWrite};
use crate::table::Ring;
use crate::time::Instant;
use crate::wire::{
    encode_frame, ChunkRange, FileEntry, FileId, FrameError, Hello, HolderItem, Message, NodeId,
    PeerEntry, PublishRefusal, Refusal, MAX_RANGES, PROTOCOL_VERSION,
};

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

pub(crate) enum FileState {
    /// A publish is receiving its hashes into this slot.
    Pending(ManifestHeader),
    Listed(Listed),
    /// Delisted or abandoned: report the discard through `poll_output`, then free.
    Discard,
}

/// A listed file.
pub(crate) struct Listed {
    file: FileId,
    header: ManifestHeader,
    /// Holders with every chunk; the file is delisted when this reaches 0.
    complete: u32,
    /// Holders of any chunk.
    holders: u32,
    /// Where the next locate answer starts among the holders (a connection index).
    locate_from: u16,
}

/// Who holds which chunks of a file: one per registered peer and file it holds chunks of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holding {
    /// The holder's connection generation (the index is in the key).
    generation: u16,
    /// Its bitmap in the tracker's `BitPool`.
    piece: u32,
    /// Chunks it holds, of `len`.
    count: u32,
    len: u32,
}

impl Holding {
    fn is_full(&self) -> bool {
        self.count == self.len
    }
}

/// Memory for a table of `T`.
type Mem<'a, T> = ManagedSlice<'a, Slot<T>>;

/// The tracker state machine; see the [module docs](self) for the contract and the rules.
pub struct Tracker<'a> {
    config: TrackerConfig,
    conns: Slots<Conn, Mem<'a, Conn>>,
    /// Indexed by storage slot: a file's hashes are stored under its index.
    files: Slots<FileState, Mem<'a, FileState>>,
    /// Listed files by id.
    by_id: ManagedMap<'a, FileId, u16>,
    /// Holdings by (file slot, connection index): a file's holders in order.
    holders: ManagedMap<'a, (u16, u16), Holding>,
    /// The same holdings by (connection index, file slot): what a peer holds.
    held: ManagedMap<'a, (u16, u16), ()>,
    /// The holdings' chunk bitmaps.
    bits: BitPool<'a>,
    /// Registered peers by node id and by recorded address (connection index).
    nodes: ManagedMap<'a, NodeId, u16>,
    addrs: ManagedMap<'a, SocketAddr, u16>,
    /// Open connections per remote IP address.
    per_ip: ManagedMap<'a, IpAddr, u16>,
    /// Connections in their handshake, by deadline.
    handshakes: ManagedMap<'a, (Instant, u16), ()>,
    /// Connections that may have a frame to send (connection index).
    ready: ManagedMap<'a, u16, ()>,
    /// Connections in `Phase::Closed`, whose close is still to be reported.
    closed: ManagedMap<'a, ConnId, ()>,
    /// Connections that finished the handshake without registering, by when they opened: the
    /// first to go when a newcomer finds the table full.
    strangers: ManagedMap<'a, (Instant, u16), ()>,
    /// Registered peers.
    registered: usize,
    /// Events kept for the adapter between drains; when full, newer ones are counted lost.
    events: Ring<'a, TrackerEvent>,
    events_lost: u32,
    /// Connections in `Phase::Closed` plus files in `FileState::Discard`.
    pending_actions: usize,
    next_ping: Instant,
    ping_nonce: u32,
    /// Handshake nonces.
    rng: Xoshiro256PlusPlus,
    /// Where `poll_output` stands.
    drain: Drain,
}

impl<'a> Tracker<'a> {
    /// A tracker whose tables live on the heap: empty at first, each grown on demand up to its
    /// limit in `config`. The first ping round is one interval out.
    #[cfg(feature = "alloc")]
    pub fn new(config: TrackerConfig, now: Instant) -> Self {
        Tracker::build(config, now, Parts::heap())
    }

    /// A tracker whose tables live in `memory`, which the adapter owns (a device's static
    /// memory): nothing is allocated, and each capacity is the smaller of `config`'s and the
    /// memory's. The first ping round is one interval out.
    pub fn with_memory<const C: usize, const F: usize, const H: usize, const W: usize>(
        mut config: TrackerConfig,
        now: Instant,
        memory: &'a mut TrackerMemory<C, F, H, W>,
    ) -> Self {
        config.max_chunks = config.max_chunks.min((W as u32).saturating_mul(32));
        Tracker::build(config, now, memory.parts())
    }

    fn build(config: TrackerConfig, now: Instant, mut parts: Parts<'a>) -> Self {
        // Memory passed in may hold an earlier tracker's entries: start empty.
        parts.by_id.clear();
        parts.holders.clear();
        parts.held.clear();
        parts.nodes.clear();
        parts.addrs.clear();
        parts.per_ip.clear();
        parts.handshakes.clear();
        parts.ready.clear();
        parts.closed.clear();
        parts.strangers.clear();
        let max_chunks = config.max_chunks.min(MAX_CHUNKS);
        let stride = max_chunks.div_ceil(32) as usize;
        Tracker {
            conns: Slots::over(parts.conns, config.max_conns),
            files: Slots::over(parts.files, config.max_files),
            by_id: parts.by_id,
            holders: parts.holders,
            held: parts.held,
            bits: BitPool::new(parts.words, stride, config.max_holdings),
            nodes: parts.nodes,
            addrs: parts.addrs,
            per_ip: parts.per_ip,
            handshakes: parts.handshakes,
            ready: parts.ready,
            closed: parts.closed,
            strangers: parts.strangers,
            registered: 0,
            events: Ring::new(parts.events, config.max_events),
            events_lost: 0,
            pending_actions: 0,
            next_ping: now + config.ping_interval,
            ping_nonce: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            drain: Drain::default(),
            config: TrackerConfig {
                max_chunks,
                ..config
            },
        }
    }

    /// The most chunks a file may have on this tracker.
    pub fn max_file_chunks(&self) -> u32 {
        self.config.max_chunks
    }

    /// The most peers this tracker will register: its `max_peers`, or fewer if its
    /// connection table is smaller.
    pub fn peer_capacity(&self) -> usize {
        self.config.max_peers.min(self.conns.limit())
    }

    /// Every input starts here: the drain must hand out whatever the input queues.
    fn enter(&mut self) {
        // What the last input (and its drain) left behind.
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.drain.input();
    }

    /// The bytes of a tracker in fixed memory: the tracker itself and its [`TrackerMemory`].
    pub const fn ram_bytes<const C: usize, const F: usize, const H: usize, const W: usize>() -> usize
    {
        core::mem::size_of::<Self>() + core::mem::size_of::<TrackerMemory<C, F, H, W>>()
    }

    /// Events that did not fit the queue because the adapter did not drain it.
    pub fn events_lost(&self) -> u32 {
        self.events_lost
    }

    /// Registered peers right now.
    pub fn peer_count(&self) -> usize {
        self.registered
    }

    /// Files listed right now.
    pub fn file_count(&self) -> usize {
        self.by_id.len()
    }

    /// Holdings (a peer and a file it holds chunks of) right now.
    pub fn holding_count(&self) -> usize {
        self.bits.used()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A connection from `remote` was accepted. `Err` means the table is full of registered
    /// peers, or full for that IP address ([`TrackerConfig::max_conns_per_ip`]): close the
    /// socket. A full table otherwise makes room by the admission rule (see
    /// [`Accepted::evicted`]).
    pub fn handle_accept(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<Accepted, TableFull> {
        self.enter();
        let from_ip = self.per_ip.get(&remote.ip()).copied().unwrap_or(0);
        if usize::from(from_ip) >= self.config.max_conns_per_ip {
            self.event(TrackerEvent::Overloaded(Table::ConnectionsPerIp));
            return Err(TableFull);
        }
        let deadline = now + self.config.handshake_timeout;
        let conn = Conn {
            link: Link::new(
                remote,
                Phase::Handshake { deadline },
                // Any body the wire allows is read (and skipped if refused), so a publisher
                // with a file too large for this tracker hears why instead of being cut off.
                MAX_BODY_LEN,
                auth::nonce(&mut self.rng),
                now,
            ),
            listed: false,
            opened: now,
            stranger: false,
            replies: Deque::new(),
            publish: None,
            reported: Default::default(),
        };
        let evicted = if self.conns.len() >= self.conns.limit() {
            // Full: make room by evicting a stranger, never a registered peer.
            Some(self.evict_for_newcomer()?)
        } else {
            None
        };
        let id = self.conns.insert(conn)?;
        let ix = id.index() as u16;
        // Counted again: an evicted connection may have come from the same address.
        let from_ip = self.per_ip.get(&remote.ip()).copied().unwrap_or(0);
        let indexed = self.per_ip.insert(remote.ip(), from_ip + 1).is_ok()
            && self.handshakes.insert((deadline, ix), ()).is_ok();
        if !indexed {
            // Index memory is sized with the table; this is for memory passed in too small.
            self.forget(id);
            self.conns.remove(id);
            return Err(TableFull);
        }
        Ok(Accepted { conn: id, evicted })
    }

    /// Bytes arrived on `conn`. See [`Recv`] for what to do with the answer.
    pub fn handle_recv<'i>(&mut self, now: Instant, conn: ConnId, input: &'i [u8]) -> Recv<'i> {
        self.enter();
        conn::recv(self, now, conn, input)
    }

    /// The socket of `conn` closed (by the remote, or an error). The id is dead from now on.
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.enter();
        self.drop_conn(conn);
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
        self.wake(conn);
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
            Timer::Handshake => self.handshakes.iter().next().map(|(&(at, _), _)| at),
            Timer::Ping => Some(self.next_ping),
        }
    }

    /// What happens when `t` expires.
    fn expire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Handshake => {
                while let Some(&(at, ix)) = self.handshakes.iter().next().map(|(k, _)| k) {
                    if at > now {
                        break;
                    }
                    self.handshakes.remove(&(at, ix));
                    if let Some(id) = self.conns.id_at(usize::from(ix)) {
                        debug!("closing {:?}: handshake not finished in time", id);
                        self.close_now(id);
                    }
                }
            }
            Timer::Ping => {
                self.next_ping = now + self.config.ping_interval;
                let max_missed = self.config.max_missed_pings;
                for i in 0..self.conns.capacity() {
                    match self.conns.ping_turn(i, max_missed, &mut self.ping_nonce) {
                        Some(PingTurn::Dead(id)) => {
                            debug!("{:?} missed {} pings", id, max_missed);
                            self.unregister(id, LeaveReason::TimedOut);
                            self.close_now(id);
                        }
                        Some(PingTurn::Ping(id, n)) => {
                            let queued = self
                                .conns
                                .get_mut(id)
                                .is_some_and(|c| c.replies.push_back(Reply::Ping(n)).is_ok());
                            if queued {
                                self.conns.pinged(id);
                                self.wake(id);
                            }
                        }
                        None => {}
                    }
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
        let registered = c.registered().is_some();
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
                        self.opened(id);
                    }
                    self.reply(id, Reply::Hello(nonce));
                }
            }
            // A proof where no key is configured: the two ends disagree about the swarm.
            (true, Message::Auth { .. }) => self.refuse(id, Refusal::SwarmKey),
            (false, _) | (true, Message::Hello(_)) => self.misbehaved(id, Offence::Unexpected),
            (true, Message::Ping(n)) => self.reply(id, Reply::Pong(n)),
            (true, Message::Pong(_)) => c.link.missed_pings = 0,
            (
                true,
                Message::Report {
                    uploaded,
                    downloaded,
                    ..
                },
            ) => self.on_report(id, uploaded, downloaded),
            (true, Message::Abandon { file }) => {
                if let (true, Some(slot)) = (registered, self.listed_slot(&file)) {
                    self.drop_holding(slot, id.index() as u16);
                    self.delist_if_incomplete(slot);
                }
            }
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
            (true, Message::ListPeers) => self.reply(
                id,
                Reply::Peers {
                    cursor: 0,
                    count: 0,
                },
            ),
            (true, Message::Locate { file }) => {
                let reply = match self.listed_slot(&file) {
                    Some(slot) => self.start_locate(file, slot),
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

    // ---- helpers ------------------------------------------------------------------------

    fn reply(&mut self, id: ConnId, reply: Reply) {
        if let Some(c) = self.conns.get_mut(id) {
            // handle_recv stops reading a connection whose queue is full, and every message
            // queues at most one reply, so this only fails for tracker-initiated pings.
            if c.replies.push_back(reply).is_err() {
                warn!("reply queue of {:?} full", id);
            }
            self.wake(id);
        }
    }

    fn event(&mut self, event: TrackerEvent) {
        if self.events.push(event).is_err() {
            self.events_lost = self.events_lost.saturating_add(1);
        }
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
}

impl Outputs for Tracker<'_> {
    type Event = TrackerEvent;
    fn drain_state(&mut self) -> &mut Drain {
        &mut self.drain
    }
    fn next_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        // Round robin over the connections that may have output, from just past the last
        // one served: O(log n) a frame however many connections are idle.
        loop {
            let from = self.conns.rr;
            let ix = self
                .ready
                .range(from..)
                .next()
                .or_else(|| self.ready.iter().next())
                .map(|(&ix, _)| ix)?;
            let frame = self
                .conns
                .id_at(usize::from(ix))
                .and_then(|id| self.next_frame(id, buf));
            match frame {
                Some(t) => {
                    self.conns.rr = ix.wrapping_add(1);
                    return Some(t);
                }
                None => {
                    self.ready.remove(&ix);
                }
            }
        }
    }
    fn next_action(&mut self) -> Option<Action> {
        if self.pending_actions == 0 {
            return None;
        }
        if let Some(id) = self.closed.iter().next().map(|(&id, _)| id) {
            self.closed.remove(&id);
            self.pending_actions -= 1;
            self.free(id);
            return Some(Action::Close(id));
        }
        let id = self
            .files
            .iter()
            .find(|(_, f)| matches!(f, FileState::Discard))
            .map(|(id, _)| id)?;
        self.files.remove(id);
        self.pending_actions -= 1;
        Some(Action::Discard(hashes_key(id.index() as u16)))
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

impl<'a> Wire for Tracker<'a> {
    type Conn = Conn;
    type Store = Mem<'a, Conn>;
    fn table(&self) -> &Slots<Conn, Self::Store> {
        &self.conns
    }
    fn table_mut(&mut self) -> &mut Slots<Conn, Self::Store> {
        &mut self.conns
    }
    fn next_frame(&mut self, id: ConnId, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        Tracker::next_frame(self, id, buf)
    }
    /// A connection whose reply queue is full is not read until its remote reads.
    fn may_read(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|c| !c.replies.is_full())
    }
    /// Only a `Pong` (or `Report`) proves a connection alive to the tracker (see the ping
    /// rule); the time of input is kept for what the next message records.
    fn on_input(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(id) {
            c.link.last_rx = now;
        }
    }
    fn on_message(&mut self, id: ConnId, msg: Message) {
        Tracker::on_message(self, id, msg)
    }
    fn on_body<'i>(
        &mut self,
        id: ConnId,
        data: &'i [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'i>> {
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

impl fmt::Debug for Tracker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("peers", &self.peer_count())
            .field("files", &self.file_count())
            .finish()
    }
}

// Capacity of MAX_RANGES must match what render_locate fills.
const _: () = assert!(MAX_RANGES > 0);
