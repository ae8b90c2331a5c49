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
//! 2. Then drain, in this order, until each returns `None`:
//!    [`Tracker::poll_transmit`] (frames to send, each possibly followed by bytes from storage),
//!    [`Tracker::poll_action`] (close a connection, discard stored hashes) and
//!    [`Tracker::poll_event`] (what happened, for logs).
//! 3. Sleep until [`Tracker::poll_timeout`] or the next socket event, whichever is first.
//!
//! `handle_recv` may consume less than it was given: the connection's reply queue is full
//! because its remote is not reading. Keep the rest, stop reading that socket, and offer the
//! rest again after draining `poll_transmit`. That is the backpressure that keeps every queue
//! here bounded.
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

use core::fmt;
use core::net::SocketAddr;

use heapless::Deque;

use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::auth::{self, Nonce, Side, SwarmKey};
use crate::bitmap::ChunkBitmap;
use crate::conn::{self, ConnId, EventQueue, HasLink, Link, Phase, Slots, TableFull, Wire};
use crate::io::{Action, Drain, Output, Outputs};
pub use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::{FileIdHasher, ManifestHeader, Name, HASH_LEN, MAX_CHUNKS};
use crate::storage::{Region, StorageKey, StorageSend, StorageWrite};
use crate::time::{Duration, Instant};
use crate::wire::{
    encode_frame, ChunkRange, FileEntry, FileId, FrameError, Hello, HolderItem, Message, NodeId,
    PeerEntry, PublishRefusal, Refusal, MAX_RANGES, PROTOCOL_VERSION,
};

/// A tracker sized for a Linux host: 256 connections, 128 files, 1024 holdings, 8192 chunks
/// per file. 1.4 MiB; keep it on the heap or the main thread's stack.
pub type HostTracker = Tracker<256, 128, 1024, 256>;

/// A tracker small enough for a microcontroller: 16 connections, 8 files, 32 holdings, 1024
/// chunks per file.
pub type SmallTracker = Tracker<16, 8, 32, 32>;

/// Replies queued per connection before the tracker stops reading from it.
const REPLY_QUEUE: usize = 8;
/// Events kept for the adapter between drains; older ones are kept, newer ones counted lost.
const EVENT_QUEUE: usize = 32;

/// Settings for a [`Tracker`].
#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    /// The tracker's own node id, sent in its `Hello`.
    pub node: NodeId,
    /// How often each connection is pinged. Default 5 s.
    pub ping_interval: Duration,
    /// Pings in a row a connection may leave unanswered before it is dropped. Default 3.
    pub max_missed_pings: u8,
    /// How long a new connection has to send its `Hello` (and, with a swarm key, its proof).
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Most registered peers (at most the connection count). Default: no limit but the table.
    pub max_peers: usize,
    /// Most connections from one IP address. One host opening (or registering) connection after
    /// connection would otherwise fill the tables and lock honest peers out. Default 64.
    pub max_conns_per_ip: usize,
    /// The swarm key, if this swarm uses one: a connection must prove it before anything else
    /// (see [`crate::auth`]). Default `None`.
    pub swarm_key: Option<SwarmKey>,
    /// Seed for the handshake nonces. With a swarm key it must come from an entropy source.
    /// Default: derived from the node id.
    pub rng_seed: u64,
}

impl TrackerConfig {
    /// Defaults with the given node id.
    pub fn new(node: NodeId) -> Self {
        TrackerConfig {
            node,
            ping_interval: Duration::from_secs(5),
            max_missed_pings: 3,
            handshake_timeout: Duration::from_secs(10),
            max_peers: usize::MAX,
            max_conns_per_ip: 64,
            swarm_key: None,
            rng_seed: u64::from_le_bytes([
                node.0[8], node.0[9], node.0[10], node.0[11], node.0[12], node.0[13], node.0[14],
                node.0[15],
            ]),
        }
    }
}

/// Why a peer left the active list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeaveReason {
    /// It said `Leave`.
    Left,
    /// Its connection closed.
    Disconnected,
    /// It stopped answering pings.
    TimedOut,
    /// It broke the protocol and was disconnected.
    Misbehaved,
}

/// A protocol violation by a remote; the tracker disconnects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Offence {
    /// Its bytes did not decode.
    Frame(FrameError),
    /// It sent a message that is not allowed now (before `Hello`, or a tracker-only message).
    Unexpected,
    /// A chunk range outside the file.
    BadRange,
}

/// A table that was full when something needed a place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Table {
    /// The holdings table: a have-chunks update was not recorded.
    Holdings,
    /// One IP address reached its connection limit: a new connection from it was refused.
    ConnectionsPerIp,
}

/// What happened, for the adapter's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TrackerEvent {
    /// A peer registered.
    PeerJoined {
        /// Its node id.
        node: NodeId,
        /// The address recorded for it.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// A peer left the active list.
    PeerLeft {
        /// Its node id.
        node: NodeId,
        /// The address recorded for it.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
        /// Why.
        reason: LeaveReason,
    },
    /// A registration or a handshake was refused.
    Refused {
        /// The connection's remote address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        remote: SocketAddr,
        /// Why.
        reason: Refusal,
    },
    /// A file was published: listed for the first time (`first`) or given another holder.
    Published {
        /// The file id.
        file: FileId,
        /// Its name.
        name: Name,
        /// Its size in bytes.
        size: u64,
        /// The publisher's recorded address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        by: SocketAddr,
        /// True when the file was not listed before.
        first: bool,
    },
    /// A publish was refused.
    PublishRefused {
        /// The id the publish claimed.
        file: FileId,
        /// Why.
        reason: PublishRefusal,
    },
    /// A file was delisted: no online peer holds all of it any more.
    Delisted {
        /// The file id.
        file: FileId,
        /// Its name.
        name: Name,
    },
    /// A remote broke the protocol and was disconnected.
    Misbehaved {
        /// The connection's remote address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        remote: SocketAddr,
        /// What it did.
        offence: Offence,
    },
    /// A table was full; the request was answered or dropped as documented on [`Table`].
    Overloaded(Table),
}

/// A reply waiting in a connection's queue; rendered into a frame only when polled, so the
/// queue holds small descriptions instead of encoded bytes.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Hello(Nonce),
    /// Our swarm-key proof (the remote's checked out).
    Auth(auth::Proof),
    Ping(u32),
    Pong(u32),
    Registered(SocketAddr),
    Refused(Refusal),
    Published(FileId),
    PublishRefused(FileId, PublishRefusal),
    NotFound(FileId),
    /// The file list, from file slot `cursor` on, `count` items sent so far.
    Files {
        cursor: u16,
        count: u16,
    },
    /// A locate answer: from holding `cursor`, chunk `chunk` on; `holders` sent so far.
    Locate {
        file: FileId,
        slot: u16,
        cursor: u16,
        chunk: u32,
        holders: u16,
    },
    Manifest {
        file: FileId,
        slot: u16,
    },
}

/// Where a publish's body (the chunk hashes) goes.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// A new file: hashes are written to this pending slot.
    New(u16),
    /// Already listed in this slot: hashes are only checked.
    Known(u16),
    /// Refused before the body: it is read and dropped.
    Skip,
}

struct PublishRx {
    file: FileId,
    hasher: FileIdHasher,
    target: Target,
    offset: u64,
    storage_failed: bool,
}

struct Conn {
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
    /// Delisted or abandoned: report the discard through `poll_action`, then free.
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
    /// Where `poll_transmit` resumes its round-robin over connections.
    rr: usize,
    /// Handshake nonces.
    rng: Xoshiro256PlusPlus,
    /// Where `poll_output` stands.
    drain: Drain,
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Tracker<C, F, H, W> {
    /// The most chunks a file may have on this tracker.
    pub const MAX_FILE_CHUNKS: u32 = {
        let cap = ChunkBitmap::<W>::CAPACITY;
        if cap < MAX_CHUNKS {
            cap
        } else {
            MAX_CHUNKS
        }
    };

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
            rr: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            drain: Drain::default(),
        }
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
        self.drain.input();
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
        self.drain.input();
        conn::recv(self, now, conn, input)
    }

    /// The socket of `conn` closed (by the remote, or an error). The id is dead from now on.
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.drain.input();
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
        self.drain.input();
        if let Some(c) = self.conns.get_mut(conn) {
            c.link.blocked = true;
        }
    }

    /// The adapter can take output for `conn` again.
    pub fn handle_send_ready(&mut self, conn: ConnId) {
        self.drain.input();
        if let Some(c) = self.conns.get_mut(conn) {
            c.link.blocked = false;
        }
    }

    /// A [`StorageWrite`] for `key` failed; the publish it belongs to is refused at its end.
    pub fn handle_storage_failed(&mut self, key: StorageKey) {
        self.drain.input();
        for (_, c) in self.conns.iter_mut() {
            if let Some(rx) = &mut c.publish {
                if matches!(rx.target, Target::New(slot) if slot == key.slot) {
                    rx.storage_failed = true;
                }
            }
        }
    }

    /// Time passed; call when [`Tracker::poll_timeout`] is reached (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain.input();
        for id in self.conns.late_handshakes(now) {
            debug!("closing {:?}: handshake not finished in time", id);
            self.close_now(id);
        }
        if now < self.next_ping {
            return;
        }
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

    // ---- outputs ------------------------------------------------------------------------

    /// The next thing to do: a frame to send (encoded into `buf`), an action, an event, or
    /// `Timeout` when the drain is over. Call it after every input until `Timeout`; see
    /// [`crate::io`] for the contract.
    pub fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<TrackerEvent> {
        Drain::poll(self, buf)
    }

    /// When the tracker next needs [`Tracker::handle_timeout`].
    fn poll_timeout(&self) -> Instant {
        self.conns
            .iter()
            .filter_map(|(_, c)| match c.link.phase {
                Phase::Handshake { deadline } => Some(deadline),
                _ => None,
            })
            .fold(self.next_ping, Instant::min)
    }

    /// Encodes the next frame to send into `buf`.
    fn poll_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        conn::transmit(self, buf)
    }

    /// The next action, after `poll_transmit` is drained.
    fn poll_action(&mut self) -> Option<Action> {
        if self.pending_actions == 0 {
            return None;
        }
        let closed = self
            .conns
            .iter()
            .find(|(_, c)| c.link.phase == Phase::Closed)
            .map(|(id, _)| id);
        if let Some(id) = closed {
            self.conns.remove(id);
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

    /// The next event for the log.
    fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop()
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

    fn start_publish(&mut self, id: ConnId, file: FileId, header: ManifestHeader) {
        let registered = self.conns.get(id).is_some_and(|c| c.registered.is_some());
        let mut target = Target::Skip;
        let refusal = if !registered {
            Some(PublishRefusal::NotRegistered)
        } else if header.chunk_count() > Self::MAX_FILE_CHUNKS {
            Some(PublishRefusal::TooManyChunks {
                max: Self::MAX_FILE_CHUNKS,
            })
        } else if let Some(slot) = self.listed_slot(&file) {
            target = Target::Known(slot);
            None
        } else if let Some(slot) = self.files.iter().position(|f| matches!(f, FileState::Free)) {
            target = Target::New(slot as u16);
            self.files[slot] = FileState::Pending(header.clone());
            None
        } else {
            Some(PublishRefusal::TrackerFull)
        };
        if let Some(reason) = refusal {
            self.refuse_publish(id, file, reason);
        }
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        // The decoder has validated the header; the body (if any) follows.
        c.publish = Some(PublishRx {
            file,
            hasher: FileIdHasher::new(&header),
            target,
            offset: 0,
            storage_failed: false,
        });
        if header.chunk_count() == 0 {
            self.finish_publish(id);
        }
    }

    fn on_publish_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>> {
        let c = self.conns.get_mut(id)?;
        let rx = c.publish.as_mut()?;
        rx.hasher.update(data);
        let offset = rx.offset;
        rx.offset += data.len() as u64;
        let write = match rx.target {
            Target::New(slot) if !rx.storage_failed => Some(StorageWrite {
                key: hashes_key(slot),
                offset,
                data,
            }),
            _ => None,
        };
        if remaining == 0 {
            self.finish_publish(id);
        }
        write
    }

    fn finish_publish(&mut self, id: ConnId) {
        let Some(rx) = self.conns.get_mut(id).and_then(|c| c.publish.take()) else {
            return;
        };
        let computed = rx.hasher.finish();
        let slot = match rx.target {
            Target::Skip => return,
            Target::New(slot) | Target::Known(slot) => slot,
        };
        let refusal = if computed != Some(rx.file) {
            Some(PublishRefusal::IdMismatch)
        } else if rx.storage_failed {
            Some(PublishRefusal::StorageFailed)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.abandon_slot(rx.target);
            self.refuse_publish(id, rx.file, reason);
            return;
        }
        let (slot, first) = match rx.target {
            // Someone else finished publishing the same file first: join it.
            Target::New(_) if self.listed_slot(&rx.file).is_some() => {
                self.abandon_slot(rx.target);
                (self.listed_slot(&rx.file).unwrap_or(slot), false)
            }
            Target::New(slot) => {
                let FileState::Pending(header) = &self.files[slot as usize] else {
                    return;
                };
                let taken = self.files.iter().find_map(|f| match f {
                    FileState::Listed(other, h) if h.name == header.name => Some(*other),
                    _ => None,
                });
                if let Some(existing) = taken {
                    self.abandon_slot(rx.target);
                    self.refuse_publish(id, rx.file, PublishRefusal::NameTaken { existing });
                    return;
                }
                self.files[slot as usize] = FileState::Listed(rx.file, header.clone());
                (slot, true)
            }
            _ => (slot, false),
        };
        let FileState::Listed(_, header) = &self.files[slot as usize] else {
            return;
        };
        let (name, size, count) = (header.name.clone(), header.size, header.chunk_count());
        let Some(h) = self.holding_mut_or_insert(id, slot, count) else {
            // No room to record the holder: the publish cannot be honoured.
            self.event(TrackerEvent::Overloaded(Table::Holdings));
            self.refuse_publish(id, rx.file, PublishRefusal::TrackerFull);
            self.delist_if_incomplete(slot);
            return;
        };
        h.chunks.fill();
        // Only registered connections get this far (start_publish refuses the others).
        let Some(by) = self.conns.get(id).and_then(|c| c.registered) else {
            return;
        };
        self.reply(id, Reply::Published(rx.file));
        self.event(TrackerEvent::Published {
            file: rx.file,
            name,
            size,
            by,
            first,
        });
    }

    fn refuse_publish(&mut self, id: ConnId, file: FileId, reason: PublishRefusal) {
        self.reply(id, Reply::PublishRefused(file, reason));
        self.event(TrackerEvent::PublishRefused { file, reason });
    }

    /// A pending slot whose publish failed or was overtaken: its stored hashes are discarded.
    fn abandon_slot(&mut self, target: Target) {
        if let Target::New(slot) = target {
            if matches!(self.files[slot as usize], FileState::Pending(_)) {
                self.files[slot as usize] = FileState::Discard;
                self.pending_actions += 1;
            }
        }
    }

    fn abandon_publish(&mut self, id: ConnId) {
        if let Some(rx) = self.conns.get_mut(id).and_then(|c| c.publish.take()) {
            self.abandon_slot(rx.target);
        }
    }

    fn have(&mut self, id: ConnId, file: FileId, ranges: &[ChunkRange]) {
        let Some(slot) = self.listed_slot(&file) else {
            self.reply(id, Reply::NotFound(file));
            return;
        };
        let count = match &self.files[slot as usize] {
            FileState::Listed(_, header) => header.chunk_count(),
            _ => return,
        };
        if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        let Some(h) = self.holding_mut_or_insert(id, slot, count) else {
            self.event(TrackerEvent::Overloaded(Table::Holdings));
            return;
        };
        for r in ranges {
            h.chunks.set_range(*r);
        }
    }

    fn holding_mut_or_insert(
        &mut self,
        conn: ConnId,
        slot: u16,
        count: u32,
    ) -> Option<&mut Holding<W>> {
        let index = match self
            .holdings
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.conn == conn && h.slot == slot))
        {
            Some(i) => i,
            None => {
                let i = self.holdings.iter().position(Option::is_none)?;
                self.holdings[i] = Some(Holding {
                    conn,
                    slot,
                    chunks: ChunkBitmap::new(count).ok()?,
                });
                i
            }
        };
        self.holdings[index].as_mut()
    }

    fn delist_if_incomplete(&mut self, slot: u16) {
        let FileState::Listed(file, header) = &self.files[slot as usize] else {
            return;
        };
        let complete = self
            .holdings
            .iter()
            .flatten()
            .any(|h| h.slot == slot && h.chunks.is_full());
        if complete {
            return;
        }
        let (file, name) = (*file, header.name.clone());
        for h in self.holdings.iter_mut() {
            if h.as_ref().is_some_and(|h| h.slot == slot) {
                *h = None;
            }
        }
        self.files[slot as usize] = FileState::Discard;
        self.pending_actions += 1;
        self.event(TrackerEvent::Delisted { file, name });
    }

    fn listed_slot(&self, file: &FileId) -> Option<u16> {
        self.files
            .iter()
            .position(|f| matches!(f, FileState::Listed(id, _) if id == file))
            .map(|i| i as u16)
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
        self.abandon_publish(id);
        if let Some(c) = self.conns.get_mut(id) {
            if c.link.phase != Phase::Closed {
                c.link.phase = Phase::Closed;
                c.replies.clear();
                self.pending_actions += 1;
            }
        }
    }

    /// Close once the queued replies are sent.
    fn close_after_flush(&mut self, id: ConnId) {
        self.abandon_publish(id);
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.push = None;
        c.push_dirty = false;
        if c.replies.is_empty() {
            c.link.phase = Phase::Closed;
            self.pending_actions += 1;
        } else {
            c.link.phase = Phase::Closing;
        }
    }

    fn next_frame(&mut self, id: ConnId, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        let c = self.conns.get_mut(id)?;
        if c.link.blocked || c.link.phase == Phase::Closed || !c.has_output() {
            return None;
        }
        let (msg, then) = if let Some(reply) = c.replies.pop_front() {
            let (msg, next, then) = self.render(reply);
            if let Some(next) = next {
                // Put the rest of a stream back at the front; there is room, we just popped.
                let c = self.conns.get_mut(id)?;
                let _ = c.replies.push_front(next);
            }
            (msg, then)
        } else {
            if c.push.is_none() {
                c.push = Some((0, 0));
                c.push_dirty = false;
            }
            let (cursor, count) = c.push?;
            let next = (cursor as usize..C).find_map(|i| {
                let id = self.conns.id_at(i)?;
                let c = self.conns.get(id)?;
                let addr = c.registered?;
                Some((
                    i,
                    PeerEntry {
                        node: c.link.hello?.node,
                        addr,
                    },
                ))
            });
            let c = self.conns.get_mut(id)?;
            match next {
                Some((i, entry)) => {
                    c.push = Some((i as u16 + 1, count + 1));
                    (Message::PeerListItem(entry), None)
                }
                None => {
                    c.push = None;
                    (Message::PeerListEnd { count }, None)
                }
            }
        };
        let c = self.conns.get_mut(id)?;
        if c.link.phase == Phase::Closing && c.replies.is_empty() {
            c.link.phase = Phase::Closed;
            self.pending_actions += 1;
        }
        // Every message fits FRAME_BUF_LEN (checked by a test over the largest of each kind).
        let len = encode_frame(&msg, buf).ok()?;
        Some(Transmit {
            conn: id,
            len,
            then,
        })
    }

    /// The frame for `reply`, the rest of the stream it starts (if any), and bytes to send
    /// from storage after it.
    fn render(&self, reply: Reply) -> (Message, Option<Reply>, Option<StorageSend>) {
        let msg = match reply {
            Reply::Hello(nonce) => Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: self.config.node,
                listen_port: 0,
                nonce,
            }),
            Reply::Auth(proof) => Message::Auth { proof },
            Reply::Ping(n) => Message::Ping(n),
            Reply::Pong(n) => Message::Pong(n),
            Reply::Registered(addr) => Message::Registered { addr },
            Reply::Refused(r) => Message::Refused(r),
            Reply::Published(file) => Message::Published { file },
            Reply::PublishRefused(file, reason) => Message::PublishRefused { file, reason },
            Reply::NotFound(file) => Message::NotFound { file },
            Reply::Files { cursor, count } => {
                let next = (cursor as usize..F).find_map(|i| match &self.files[i] {
                    FileState::Listed(file, header) => Some((i, *file, header)),
                    _ => None,
                });
                let Some((i, file, header)) = next else {
                    return (Message::FileListEnd { count }, None, None);
                };
                let (mut holders, mut seeders) = (0u16, 0u16);
                for h in self
                    .holdings
                    .iter()
                    .flatten()
                    .filter(|h| h.slot == i as u16)
                {
                    holders += 1;
                    seeders += u16::from(h.chunks.is_full());
                }
                let entry = FileEntry {
                    file,
                    name: header.name.clone(),
                    size: header.size,
                    chunk_size: header.chunk_size,
                    chunks: header.chunk_count(),
                    holders,
                    seeders,
                };
                let next = Reply::Files {
                    cursor: i as u16 + 1,
                    count: count + 1,
                };
                return (Message::FileItem(entry), Some(next), None);
            }
            Reply::Locate {
                file,
                slot,
                cursor,
                chunk,
                holders,
            } => return self.render_locate(file, slot, cursor, chunk, holders),
            Reply::Manifest { file, slot } => match &self.files[slot as usize] {
                FileState::Listed(id, header) if *id == file => {
                    let then = StorageSend {
                        key: hashes_key(slot),
                        offset: 0,
                        len: header.hashes_len(),
                    };
                    let msg = Message::Manifest {
                        file,
                        header: header.clone(),
                    };
                    return (msg, None, (then.len > 0).then_some(then));
                }
                // Delisted between the request and now.
                _ => Message::NotFound { file },
            },
        };
        (msg, None, None)
    }

    fn render_locate(
        &self,
        file: FileId,
        slot: u16,
        cursor: u16,
        chunk: u32,
        holders: u16,
    ) -> (Message, Option<Reply>, Option<StorageSend>) {
        let end = Message::LocateEnd { file, holders };
        if !matches!(&self.files[slot as usize], FileState::Listed(id, _) if *id == file) {
            return (end, None, None);
        }
        let next = (cursor as usize..H).find_map(|i| {
            let h = self.holdings[i].as_ref().filter(|h| h.slot == slot)?;
            let c = self.conns.get(h.conn)?;
            Some((
                i,
                h,
                PeerEntry {
                    node: c.link.hello?.node,
                    addr: c.registered?,
                },
            ))
        });
        let Some((i, h, peer)) = next else {
            return (end, None, None);
        };
        let mut ranges = heapless::Vec::new();
        let mut from = chunk;
        let mut more = false;
        while let Some(r) = h.chunks.next_range(from) {
            if ranges.push(r).is_err() {
                more = true;
                break;
            }
            from = r.end;
        }
        let next = if more {
            Reply::Locate {
                file,
                slot,
                cursor: i as u16,
                chunk: from,
                holders,
            }
        } else {
            Reply::Locate {
                file,
                slot,
                cursor: i as u16 + 1,
                chunk: 0,
                holders: holders + 1,
            }
        };
        let item = HolderItem {
            file,
            peer,
            ranges,
            more,
        };
        (Message::HolderItem(item), Some(next), None)
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
        self.poll_transmit(buf)
    }
    fn next_action(&mut self) -> Option<Action> {
        self.poll_action()
    }
    fn next_event(&mut self) -> Option<TrackerEvent> {
        self.poll_event()
    }
    fn next_timeout(&self) -> Instant {
        self.poll_timeout()
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Wire for Tracker<C, F, H, W> {
    const CONNS: usize = C;
    fn link_mut(&mut self, id: ConnId) -> Option<&mut Link> {
        self.conns.get_mut(id).map(|c| &mut c.link)
    }
    fn id_at(&self, index: usize) -> Option<ConnId> {
        self.conns.id_at(index)
    }
    fn rr(&mut self) -> &mut usize {
        &mut self.rr
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
