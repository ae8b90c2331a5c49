//! The peer: shares files, fetches them from several peers at once, verifies every chunk and
//! serves what it holds.
//!
//! # Driving it
//!
//! Same contract as the [tracker](crate::tracker) (see [`crate::io`]): after every `handle_*`
//! call (and every command such as [`Peer::share`] or [`Peer::fetch`]), call
//! [`Peer::poll_output`] until it returns `Timeout`; then sleep until that instant or the next
//! socket event. [`Node::poll_stored`](crate::node::Node::poll_stored) does the storage part.
//!
//! `handle_recv` may take only part of its input: it stops while the replies or events it
//! has queued need draining first (backpressure, so its queues stay small and nothing is
//! dropped). Drain, then offer the rest again.
//!
//! - [`Action::Connect`]: open a TCP connection, then report [`Peer::handle_connected`] or
//!   [`Peer::handle_closed`].
//! - [`Action::ReadHash`]: read the stored hash of a chunk and hand it to
//!   [`Peer::handle_hash`]. The core keeps no chunk hashes in RAM.
//! - [`Action::HashBlock`] (only with [`BlockCheck::Deferred`]): hash a block just written,
//!   on any thread, and hand the digest to [`Peer::handle_block_hash`].
//! - `handle_recv` may return a [`StorageWrite`]: chunk payload or manifest hashes to store at
//!   once, straight from the adapter's receive buffer. Payload is written before it is verified;
//!   a chunk counts as held only after [`PeerEvent::ChunkVerified`], which is when storage
//!   records it durably ([`Storage::chunk_verified`](crate::storage::Storage::chunk_verified)).
//! - [`Transmit::then`] asks for bytes from storage right after a frame (block payload, hashes).
//!
//! # Where things are
//!
//! This file keeps the public surface and the entry points; each concern is a file:
//! `config` and `event` (what the peer is told and tells), `conns` (per-connection state
//! and the one teardown path), `handshake`, `tracker_session`, `files` (the file table and
//! manifest intake), `candidates` (whom to dial, strikes and bans), `recv` (the receive path),
//! `verify` (the frontier rule and the check of every block), `partial` (serving a chunk
//! before it is whole), `sched` (the scheduler), `send` (what goes out next),
//! `exchange` (peer exchange), `timers` and `invariants`.
//!
//! # How a download goes
//!
//! [`Peer::fetch`] asks the tracker for the manifest, streams its hashes to storage while
//! checking them against the file id, then locates holders and connects to several. Each
//! connection is for one file: it opens with a [`Message::Bitfield`] both ways, and `Have`s
//! follow as chunks are verified, so availability keeps flowing when the tracker is gone. The
//! scheduler (see `sched.rs` for its rules) asks each connection for blocks of
//! chunks it holds, rarest first.
//!
//! Bytes of a chunk are taken strictly in order at its *frontier* (see `verify.rs`), so no
//! chunk is ever buffered and any source may continue a chunk where another stopped. A chunk
//! whose hash does not match is discarded and fetched again; its sender gets a strike, and
//! [`PeerConfig::ban_after`] strikes ban it.
//!
//! # Memory
//!
//! Connections, files and chunks in flight are capacities in [`PeerConfig`]; the memory behind
//! them is the adapter's to give (see the tracker's docs and `table.rs` for why `managed`):
//! [`Peer::new`] (feature `alloc`) starts with empty heap tables that grow on demand up to
//! those limits; [`Peer::with_memory`] runs in a [`PeerMemory`] the adapter owns and allocates
//! nothing. `W`, the bitmap words per file (at most `32 * W` chunks), stays a type parameter:
//! every file and connection keeps its chunk bitmap inline. Files are found by id through an
//! index (O(log n)), so a peer sharing a thousand files does no per-message walk over them;
//! publishes wait in a per-file flag and go out as the tracker connection has room.
//!
//! In fixed memory, [`Peer::ram_bytes`] is the exact size (the peer and its memory); RAM grows
//! with file size only through `W` (one bit per chunk per file and per connection).
//!
//! | memory | C | F | W | A | B | bytes |
//! |---|---|---|---|---|---|---|
//! | [`SmallPeerMemory`] | 4 | 1 | 32 (1024 chunks) | 4 | 8 (128 KiB chunks) | 24,152 |
//! | `PeerMemory<64, 16, 256, 128, 16>` (the old `HostPeer`) | 64 | 16 | 256 (8192 chunks) | 128 | 16 (256 KiB chunks) | 428,704 |
//!
//! On the heap ([`HostPeer`]: `W` = 256) a file costs about 2.5 KiB (two 1 KiB bitmaps, its
//! header and have log) and a connection about 2 KiB: `bench/share-many.sh` shares 1,000
//! files in a process of 8.4 MiB.
//!
//! Per connection: a 512-byte frame buffer, the remote's chunk bitmap (`4 * W` bytes), and
//! bounded queues of requests (32), blocks to serve (16) and control frames (16); queued blocks
//! are 12 bytes, without the file id (a connection is about one file). Events wait in a queue
//! of 16. Per chunk in flight: a SHA-256 state, who supplied the block being taken, and the
//! chunk's leaves (32 bytes per 16 KiB block: `B` × 32 bytes; 256 bytes per chunk on the
//! device, whose flash chunks are 128 KiB). No payload is ever held: it streams from the
//! receive buffer to storage, and chunk roots are read from storage one at a time as chunks
//! start.
//!
//! A test checks both fixed figures (x86_64; a 32-bit target is a little smaller).

mod candidates;
mod config;
mod conns;
mod event;
mod exchange;
mod files;
mod handshake;
mod invariants;
mod memory;
mod partial;
mod rate;
mod recv;
mod sched;
mod seeding;
mod send;
mod timers;
mod tracker_session;
mod verify;

pub use config::{BlockCheck, CommandError, PeerConfig, Trackers, MAX_TRACKERS};
pub use memory::{PeerMemory, SmallPeerMemory};

pub use event::{FetchFailure, Offence, PeerEvent, Progress};
use memory::Parts;

use candidates::{Candidate, Source};
use conns::{take_at, Blk, Conn, Ctl, End, Req, Role, Sink};
use files::{held_bytes, File, HaveCursor, HaveLog, ManifestState};
use timers::Timer;
use tracker_session::{bit, Queries, TrackerSession};
use verify::{Active, Leaves};

use core::net::SocketAddr;

use heapless::{Deque, Vec};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use sha2::{Digest, Sha256};

use crate::auth::{self, Side};
use crate::bitmap::ChunkBitmap;
use crate::conn::{
    self, Accepted, ConnId, EventQueue, HasLink, Link, Phase, PingTurn, Slot, Slots, TableFull,
    Wire,
};
use crate::io::{Action, BlockTicket, Drain, Output, Outputs};
pub use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::{merkle_root, ChunkHash, FileIdHasher, Leaf, ManifestHeader, HASH_LEN};
use crate::storage::{Region, StorageKey, StorageWrite};
use crate::table::{capacity, vacancy};
use crate::time::{Duration, Instant};
use crate::wire::{
    BlockRef, ChunkRange, FileId, FrameError, Message, NodeId, PeerEntry, Refusal, RejectReason,
    MAX_RANGES, PROTOCOL_VERSION,
};
use managed::{ManagedMap, ManagedSlice};

use rate::{RateMeter, TokenBucket};

/// A peer for a Linux host: files of up to 8192 chunks; its tables live on the heap
/// ([`Peer::new`]) and grow to the limits in its [`PeerConfig`].
pub type HostPeer = Peer<'static, 256>;

/// A peer small enough for a microcontroller: files of up to 1024 chunks, its tables in a
/// [`SmallPeerMemory`] (4 connections, 1 file, 4 chunks in flight).
pub type SmallPeer<'a> = Peer<'a, 32>;

const CTL_QUEUE: usize = 16;
const REQ_QUEUE: usize = 32;
const SERVE_QUEUE: usize = 16;
/// Chunks a remote is fetching that a connection remembers (see `Conn::partial`).
const PARTIALS: usize = 8;
const EVENT_QUEUE: usize = 16;
/// The most events one message can cause (a block that completes a chunk and the file, a
/// remote that misbehaves and is banned and lost, ...). `handle_recv` stops reading while fewer
/// than this many places are free, so no event is ever dropped by a peer whose adapter drains.
const EVENT_ROOM: usize = 8;
const HAVE_LOG: usize = 64;
const REPUTATION: usize = 16;
/// How long a connection that answered "busy" gets no requests.
const BUSY_PAUSE: Duration = Duration::from_millis(300);
/// The first retry of a candidate that dropped an established connection (doubling with each
/// failure, as the 1 s of a failed connect does). At 500 peers a downloader whose first
/// connections were all evicted by full tables waited 2 s, then 4, for each: the last one
/// finished 0.17 s after the 99th percentile; with this, the swarm's last peer came 0.27 s
/// sooner (BENCHMARKS.md, "Dropped connections").
const DROPPED_RETRY: Duration = Duration::from_millis(125);
/// An upload slot is given up after this long with nothing to serve.
const SLOT_IDLE: Duration = Duration::from_secs(1);
/// Failed dials after which a candidate that is only an address (no tracker said it) is
/// forgotten.
const HINT_TRIES: u8 = 2;
/// The first delay between holder lookups (and manifest requests) of a new fetch.
const FIRST_LOCATE_DELAY: Duration = Duration::from_millis(100);

// ---- internal state -------------------------------------------------------------------------

/// The peer state machine; see the [module docs](self).
///
/// `W` bitmap words per file (at most `32 * W` chunks): the one size fixed at compile time,
/// since every file and connection keeps its chunk bitmap inline. Connections, files and
/// chunks in flight are run-time capacities ([`PeerConfig::max_conns`],
/// [`PeerConfig::max_files`], [`PeerConfig::max_active`]) over memory the adapter gives.
pub struct Peer<'a, const W: usize> {
    config: PeerConfig,
    now: Instant,
    rng: Xoshiro256PlusPlus,
    conns: Slots<Conn<W>, ManagedSlice<'a, Slot<Conn<W>>>>,
    /// Indexed by storage slot.
    files: ManagedSlice<'a, Option<File<W>>>,
    /// Files by id.
    by_id: ManagedMap<'a, FileId, u16>,
    active: ManagedSlice<'a, Option<Active>>,
    /// The leaves of the chunks in flight: `max_chunk_blocks` places for each.
    leaves: ManagedSlice<'a, Leaf>,
    candidates: ManagedSlice<'a, Option<Candidate>>,
    /// What a super-seeder has offered each connection, by connection index (see `seeding`).
    #[cfg(feature = "alloc")]
    offers: alloc::vec::Vec<seeding::Offer>,
    /// The (file slot, node) pairs served a block: a peer that reconnects is counted once in
    /// `peers_served`. Without a heap each connection served counts.
    #[cfg(feature = "alloc")]
    served: alloc::collections::BTreeSet<(u16, NodeId)>,
    /// (node, listen address, strikes): strikes at `ban_after` mean banned.
    reputation: Deque<(NodeId, SocketAddr, u8), REPUTATION>,
    events: EventQueue<PeerEvent, EVENT_QUEUE>,
    /// Each tracker's connection and what it has told us, in the config's order.
    sessions: [TrackerSession; MAX_TRACKERS],
    /// The configured trackers' places, best first for this peer (see `wanted_trackers`).
    tracker_order: Vec<u8, MAX_TRACKERS>,
    /// The user's queries to the trackers and their answers.
    queries: Queries<'a>,
    next_ping: Instant,
    ping_nonce: u32,
    upload: Option<TokenBucket>,
    /// The download limit's bucket: block requests wait for its tokens.
    download: Option<TokenBucket>,
    slots_used: usize,
    leaving: bool,
    /// Files whose stored hashes are to be discarded (each flagged `discard_hashes`).
    discards: u16,
    /// Files to publish to each tracker (each flagged in `publish_pending`).
    publishes: [u16; MAX_TRACKERS],
    /// Chunks that failed their hash lately, and a node that sent them.
    recent_bad: Deque<(u16, u32, NodeId), 8>,
    /// The last epoch given to a chunk in flight (see `verify`'s `Active::epoch`).
    epochs: u32,
    /// The header of the manifest whose hashes are streaming in, until they are checked.
    pending_header: Option<(u16, ManifestHeader)>,
    /// Addresses that may still be taken from peer exchange (see `exchange`).
    hint_budget: u16,
    /// Where `poll_output` stands.
    drain: Drain,
}

impl<'a, const W: usize> Peer<'a, W> {
    /// The most chunks a file may have on this peer.
    pub const MAX_FILE_CHUNKS: u32 = ChunkBitmap::<W>::MAX_FILE_CHUNKS;

    /// A peer whose tables live on the heap: empty at first, each grown on demand up to its
    /// limit in `config`. If a tracker is configured it connects to it at once.
    #[cfg(feature = "alloc")]
    pub fn new(config: PeerConfig, now: Instant) -> Self {
        Peer::build(config, now, Parts::heap())
    }

    /// A peer whose tables live in `memory`, which the adapter owns (a device's static
    /// memory): nothing is allocated, and each capacity is the smaller of `config`'s and the
    /// memory's. If a tracker is configured it connects to it at once.
    pub fn with_memory<const C: usize, const F: usize, const A: usize, const B: usize>(
        config: PeerConfig,
        now: Instant,
        memory: &'a mut PeerMemory<C, F, W, A, B>,
    ) -> Self {
        Peer::build(config, now, memory.parts())
    }

    fn build(config: PeerConfig, now: Instant, mut parts: Parts<'a, W>) -> Self {
        parts.by_id.clear();
        let max_active = capacity(&parts.active, config.max_active);
        // Fixed memory divides its leaves among the chunks in flight; the heap grows to the
        // config's figure as chunks start.
        let max_chunk_blocks = match &parts.leaves {
            ManagedSlice::Borrowed(l) => {
                let per = l.len() / usize::from(max_active.max(1));
                u16::try_from(per)
                    .unwrap_or(u16::MAX)
                    .min(config.max_chunk_blocks)
            }
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(_) => config.max_chunk_blocks,
        };
        // Super-seeding keeps its offers on the heap: a peer in fixed memory does not
        // super-seed (see `seeding`).
        #[cfg(feature = "alloc")]
        let super_seed = config.super_seed && matches!(parts.conns, ManagedSlice::Owned(_));
        #[cfg(not(feature = "alloc"))]
        let super_seed = false;
        let config = PeerConfig {
            max_files: capacity(&parts.files, config.max_files),
            max_active,
            max_chunk_blocks,
            super_seed,
            ..config
        };
        let mut peer = Peer {
            config,
            now,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            conns: Slots::over(parts.conns, usize::from(config.max_conns)),
            files: parts.files,
            by_id: parts.by_id,
            active: parts.active,
            leaves: parts.leaves,
            candidates: parts.candidates,
            #[cfg(feature = "alloc")]
            offers: alloc::vec::Vec::new(),
            #[cfg(feature = "alloc")]
            served: alloc::collections::BTreeSet::new(),
            reputation: Deque::new(),
            events: EventQueue::new(),
            sessions: [TrackerSession::new(now, config.reconnect_min); MAX_TRACKERS],
            tracker_order: config.trackers.ranked_for(&config.node),
            queries: Queries::new(parts.peer_list),
            next_ping: now + config.ping_interval,
            ping_nonce: 0,
            upload: config
                .upload_rate
                .map(|r| TokenBucket::new(r, u64::from(config.block_len).max(r / 4), now)),
            download: config
                .download_rate
                .map(|r| TokenBucket::new(r, u64::from(config.block_len).max(r / 4), now)),
            slots_used: 0,
            leaving: false,
            discards: 0,
            publishes: [0; MAX_TRACKERS],
            recent_bad: Deque::new(),
            epochs: 0,
            pending_header: None,
            drain: Drain::default(),
            hint_budget: exchange::BUDGET_MAX,
        };
        peer.files.iter_mut().for_each(|f| *f = None);
        peer.active.iter_mut().for_each(|a| *a = None);
        peer.candidates.iter_mut().for_each(|c| *c = None);
        // A candidate per connection: the smaller memory bounds both.
        let conns = peer
            .conns
            .limit()
            .min(capacity(&peer.candidates, u16::MAX).into());
        peer.config.max_conns = u16::try_from(conns).unwrap_or(u16::MAX);
        peer.connect_trackers(now);
        peer
    }

    /// Every input starts here: the time moves on, and the drain must hand out whatever the
    /// input queues.
    fn enter(&mut self, now: Instant) {
        // What the last input (and its drain) left behind.
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.now = now;
        self.drain.input();
    }

    /// The bytes of a peer in fixed memory: the peer itself and its [`PeerMemory`].
    pub const fn ram_bytes<const C: usize, const F: usize, const A: usize, const B: usize>() -> usize
    {
        core::mem::size_of::<Self>() + core::mem::size_of::<PeerMemory<C, F, W, A, B>>()
    }

    // ---- commands ----------------------------------------------------------------------

    /// Shares a whole file whose hashes the adapter has stored (under the returned slot's
    /// [`Region::Hashes`]) and whose data it serves (under [`Region::Data`]).
    pub fn share(
        &mut self,
        now: Instant,
        file: FileId,
        header: ManifestHeader,
    ) -> Result<u16, CommandError> {
        let count = header.chunk_count();
        let mut have = self.bitmap(count)?;
        have.fill();
        let slot = self.new_file(now, file, ManifestState::Known(header), false, have)?;
        self.after_command(now);
        Ok(slot)
    }

    /// Starts fetching `file` by id: the manifest comes from the tracker and is checked
    /// against the id before anything else happens.
    pub fn fetch(&mut self, now: Instant, file: FileId) -> Result<u16, CommandError> {
        let have = self.bitmap(0)?;
        let slot = self.new_file(now, file, ManifestState::Wanted { asked: None }, true, have)?;
        self.after_command(now);
        Ok(slot)
    }

    /// Resumes a fetch whose manifest (hashes stored under the returned slot) and verified
    /// chunks `have` survived a restart. A fetch with every chunk held is shared at once.
    pub fn resume(
        &mut self,
        now: Instant,
        file: FileId,
        header: ManifestHeader,
        have: impl IntoIterator<Item = u32>,
    ) -> Result<u16, CommandError> {
        let mut bits = self.bitmap(header.chunk_count())?;
        for c in have {
            bits.set(c);
        }
        let complete = bits.is_full();
        if let (false, Err(max)) = (complete, self.can_verify(&header)) {
            return Err(CommandError::ChunkTooLarge { max });
        }
        let slot = self.new_file(now, file, ManifestState::Known(header), !complete, bits)?;
        if let Some(f) = self.file_mut(slot) {
            f.bytes_done = held_bytes(f);
        }
        self.after_command(now);
        Ok(slot)
    }

    /// Adds `addr` as a peer to try for the fetch in `slot`, kept for as long as the fetch
    /// runs however often it fails: how a fetch joins a swarm through one peer it knows, with
    /// or without a tracker (the manifest, if still unknown, is asked of that peer, and peer
    /// exchange brings the rest of the swarm).
    pub fn add_peer(
        &mut self,
        now: Instant,
        slot: u16,
        addr: SocketAddr,
    ) -> Result<(), CommandError> {
        self.enter(now);
        if self.file(slot).is_none() {
            return Err(CommandError::NoSuchSlot);
        }
        self.add_candidate(slot, Source::User, addr);
        self.schedule();
        Ok(())
    }

    /// Stops sharing or fetching `slot`: its connections close and the slot is freed.
    pub fn cancel(&mut self, now: Instant, slot: u16) -> Result<(), CommandError> {
        self.enter(now);
        if self.file(slot).is_none() {
            return Err(CommandError::NoSuchSlot);
        }
        self.drop_file(slot);
        Ok(())
    }

    /// Asks the tracker for its file list; answers come as [`PeerEvent::FileListed`].
    pub fn list_files(&mut self, now: Instant) -> Result<(), CommandError> {
        self.enter(now);
        let t = self.tracker_open().ok_or(CommandError::NoTracker)?;
        self.queries.user_list = true;
        self.ctl(t, Ctl::ListFiles);
        Ok(())
    }

    /// Asks the tracker for the registered peers; [`PeerEvent::PeerList`] says when
    /// [`Peer::peers`] holds the answer.
    pub fn list_peers(&mut self, now: Instant) -> Result<(), CommandError> {
        self.enter(now);
        let t = self.tracker_open().ok_or(CommandError::NoTracker)?;
        self.queries.peer_list.iter_mut().for_each(|p| *p = None);
        self.queries.peer_list_len = 0;
        self.ctl(t, Ctl::ListPeers);
        Ok(())
    }

    /// Asks the tracker who holds `file`; answers come as [`PeerEvent::Holder`].
    pub fn locate(&mut self, now: Instant, file: FileId) -> Result<(), CommandError> {
        self.enter(now);
        let t = self.tracker_open().ok_or(CommandError::NoTracker)?;
        match self.slot_of(&file) {
            Some(slot) => {
                if let Some(f) = self.file_mut(slot) {
                    f.user_locate = true;
                }
            }
            None => self.queries.user_locates_untracked = Some(file),
        }
        self.ctl(t, Ctl::Locate(file));
        Ok(())
    }

    /// Leaves: tells the trackers, closes every connection, and stops reconnecting.
    pub fn leave(&mut self, now: Instant) {
        self.enter(now);
        self.leaving = true;
        for t in 0..MAX_TRACKERS {
            if let Some(tc) = self.tracker_conn(t) {
                self.ctl(tc, Ctl::Leave);
            }
        }
        for i in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(i) else {
                continue;
            };
            if self.tracker_of(id).is_some() {
                self.close_after_flush(id);
            } else {
                self.close_now(id);
            }
        }
    }

    // ---- queries -----------------------------------------------------------------------

    /// The peer list last asked for with [`Peer::list_peers`] (its first 1,024 entries on a
    /// host; as many as its memory has on a device).
    pub fn peers(&self) -> impl Iterator<Item = &PeerEntry> {
        self.queries.peer_list[..self.queries.peer_list_len]
            .iter()
            .flatten()
    }

    /// The address the first tracker we are registered with recorded for us.
    pub fn registered(&self) -> Option<SocketAddr> {
        self.sessions.iter().find_map(|s| s.registered)
    }

    /// The file id and (once known) header of `slot`.
    pub fn file_info(&self, slot: u16) -> Option<(FileId, Option<&ManifestHeader>)> {
        self.file(slot).map(|f| (f.id, f.header()))
    }

    /// Whether chunk `chunk` of `slot` is verified.
    pub fn has_chunk(&self, slot: u16, chunk: u32) -> bool {
        self.file(slot).is_some_and(|f| f.have.get(chunk))
    }

    /// Where the download in `slot` stands.
    pub fn progress(&self, slot: u16) -> Option<Progress> {
        let f = self.file(slot)?;
        let h = f.header();
        Some(Progress {
            slot,
            chunks_done: f.have.count(),
            chunks_total: h.map_or(0, |h| h.chunk_count()),
            bytes_done: f.bytes_done,
            bytes_total: h.map_or(0, |h| h.size),
            rate: f.rate.rate(self.now),
            peers: self.file_conns(slot) as u16,
            bytes_uploaded: f.bytes_uploaded,
            peers_served: f.peers_served,
        })
    }

    /// The first range of chunks of `slot`, at or after `from`, that are not held and that no
    /// connected peer holds. Call repeatedly (with `from = range.end`) for all of them.
    pub fn missing(&self, slot: u16, from: u32) -> Option<ChunkRange> {
        let f = self.file(slot)?;
        let count = f.header()?.chunk_count();
        let is_missing = |c: u32| !f.have.get(c) && !self.offered(slot, c);
        let start = (from..count).find(|&c| is_missing(c))?;
        let end = (start..count).find(|&c| !is_missing(c)).unwrap_or(count);
        Some(ChunkRange { start, end })
    }

    /// True once [`Peer::leave`] has finished: no connection is left.
    pub fn is_idle(&self) -> bool {
        self.conns.iter().next().is_none()
    }

    /// Events that did not fit the queue because the adapter did not drain it.
    pub fn events_lost(&self) -> u32 {
        self.events.lost()
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A peer connected to us from `remote`. `Err` means no room: close the socket. A full
    /// table makes room by the admission rule: the inbound connection that has done least
    /// goes, first one still in its handshake (the one closest to its deadline), then one that
    /// finished it and has not yet said which chunks it holds (the one silent longest). A
    /// connection carrying a transfer, one we opened, and the tracker's are never evicted for
    /// a stranger. One IP address holds at most [`PeerConfig::max_conns_per_ip`] slots.
    pub fn handle_accept(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<Accepted, TableFull> {
        self.enter(now);
        if self.leaving {
            return Err(TableFull);
        }
        let from_ip = self
            .conns
            .iter()
            .filter(|(_, c)| c.link.remote.ip() == remote.ip() && c.role.is_peer())
            .count();
        if from_ip >= usize::from(self.config.max_conns_per_ip) {
            return Err(TableFull);
        }
        // Keep a slot for each tracker connection.
        let used = self.conns.len()
            + self
                .wanted_trackers()
                .iter()
                .filter(|&&t| self.sessions[t].conn.is_none())
                .count();
        let evicted = if used >= usize::from(self.config.max_conns) {
            let victim = self.eviction_victim().ok_or(TableFull)?;
            debug!("{:?} evicted for a newcomer", victim);
            self.teardown(victim, End::Lost);
            Some(victim)
        } else {
            None
        };
        let phase = Phase::Handshake {
            deadline: now + self.config.ping_interval,
        };
        let conn = self.conns.insert(Conn::new(
            Role::Peer { outgoing: false },
            remote,
            phase,
            now,
            &mut self.rng,
        ))?;
        Ok(Accepted { conn, evicted })
    }

    /// The inbound connection that has done least, if any may be evicted (see
    /// [`Peer::handle_accept`]).
    fn eviction_victim(&self) -> Option<ConnId> {
        let inbound = || {
            self.conns
                .iter()
                .filter(|(_, c)| c.role == Role::Peer { outgoing: false })
        };
        let handshaking = inbound()
            .filter_map(|(id, c)| match c.link.phase {
                Phase::Handshake { deadline } => Some((deadline, id)),
                _ => None,
            })
            .min();
        let silent = || {
            inbound()
                .filter(|(_, c)| c.link.is_open() && !c.bitfield_in)
                .map(|(id, c)| (c.link.last_rx, id))
                .min()
        };
        handshaking.or_else(silent).map(|(_, id)| id)
    }

    /// An outgoing connection (from [`Action::Connect`]) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        self.enter(now);
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if !matches!(c.link.phase, Phase::Connecting { .. }) {
            return;
        }
        c.link.phase = Phase::Handshake {
            deadline: now + self.config.ping_interval,
        };
        c.link.last_rx = now;
        self.ctl(conn, Ctl::Hello);
        // Without a swarm key the first requests ride right behind the Hello; with one they wait
        // until the acceptor has proved the key too.
        if self.config.swarm_key.is_none() {
            self.greet(conn);
        }
        self.after_command(now);
    }

    /// The connection closed (or an outgoing connect failed). The id is dead from now on.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.enter(now);
        if self.conns.get(conn).is_none() {
            return;
        }
        self.forget_conn(conn);
        self.after_command(now);
    }

    /// Bytes arrived on `conn`. See [`Recv`] for what to do with the answer.
    pub fn handle_recv<'i>(&mut self, now: Instant, conn: ConnId, input: &'i [u8]) -> Recv<'i> {
        self.enter(now);
        let r = conn::recv(self, now, conn, input);
        self.schedule();
        r
    }

    /// The stored hash (merkle root) of `chunk` in `slot`, asked for by [`Action::ReadHash`].
    pub fn handle_hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash) {
        self.enter(now);
        if let Some(i) = self.active_index(slot, chunk) {
            if let Some(a) = self.active[i].as_mut() {
                a.expected = Some(hash);
            }
            self.check_leaves(i);
        }
        self.schedule();
    }

    /// The digest of the block asked for by [`Action::HashBlock`] with `ticket`. Returns
    /// false, changing nothing, while the events already queued leave no room for the ones
    /// this may cause (a chunk verified, the file complete): drain [`Peer::poll_output`], then
    /// hand it again. An answer given right when the action is handed out is always taken
    /// (the peer asks only while there is room).
    #[must_use = "a digest not taken must be handed again after draining"]
    pub fn handle_block_hash(
        &mut self,
        now: Instant,
        ticket: BlockTicket,
        digest: [u8; HASH_LEN],
    ) -> bool {
        if !self.event_room() {
            return false;
        }
        self.enter(now);
        if self.block_hashed(ticket, digest) {
            self.schedule();
        }
        true
    }

    /// A storage operation on `key` failed (disk full, flash error): the fetch is given up.
    pub fn handle_storage_failed(&mut self, now: Instant, key: StorageKey) {
        self.enter(now);
        if self.file(key.slot).is_some_and(|f| f.fetching) {
            self.fail_fetch(key.slot, FetchFailure::Storage);
        }
    }

    /// The adapter cannot take more output for `conn` until [`Peer::handle_send_ready`].
    pub fn handle_send_blocked(&mut self, conn: ConnId) {
        self.drain.input();
        self.conns.set_blocked(conn, true);
    }

    /// The adapter can take output for `conn` again.
    pub fn handle_send_ready(&mut self, conn: ConnId) {
        self.drain.input();
        self.conns.set_blocked(conn, false);
    }

    /// Time passed; call at the instant `poll_output` ended its drain with (early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enter(now);
        // Each kind is looked at after the ones before it ran: an expiry may arm or disarm
        // the next (a closed handshake leaves nothing to stall).
        for t in Timer::ALL {
            if self.deadline(t).is_some_and(|at| at <= now) {
                self.expire(t, now);
            }
        }
        self.schedule();
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next thing to do: a frame to send (encoded into `buf`), an action, an event, or
    /// `Timeout` when the drain is over. Call it after every input until `Timeout`; see
    /// [`crate::io`] for the contract.
    pub fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<PeerEvent> {
        let out = Drain::poll(self, buf);
        #[cfg(debug_assertions)]
        if let Output::Timeout(_) = out {
            self.check_invariants();
        }
        out
    }

    // ---- files -------------------------------------------------------------------------

    // ---- connections -------------------------------------------------------------------

    // ---- messages ----------------------------------------------------------------------

    fn event(&mut self, e: PeerEvent) {
        self.events.push(e);
    }

    /// Room in the event queue for what one more input may cause.
    fn event_room(&self) -> bool {
        self.events.len() + EVENT_ROOM <= EVENT_QUEUE
    }
}

impl<'a, const W: usize> Wire for Peer<'a, W> {
    type Conn = Conn<W>;
    type Store = ManagedSlice<'a, Slot<Conn<W>>>;
    fn table(&self) -> &Slots<Conn<W>, Self::Store> {
        &self.conns
    }
    fn table_mut(&mut self) -> &mut Slots<Conn<W>, Self::Store> {
        &mut self.conns
    }
    fn next_frame(&mut self, id: ConnId, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        Peer::next_frame(self, id, buf)
    }
    /// Room for the replies and events one more message may cause: its control queue, its
    /// serve queue and the event queue.
    fn may_read(&self, id: ConnId) -> bool {
        self.conns
            .get(id)
            .is_some_and(|c| c.ctl.len() + 1 < CTL_QUEUE && !c.serve.is_full() && self.event_room())
    }
    /// Any input shows the remote is alive: a peer busy sending blocks may answer a ping late.
    fn on_input(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(id) {
            c.link.last_rx = now;
            c.link.missed_pings = 0;
        }
    }
    fn on_message(&mut self, id: ConnId, msg: Message) {
        Peer::on_message(self, id, msg)
    }
    fn on_body<'i>(
        &mut self,
        id: ConnId,
        data: &'i [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'i>> {
        Peer::on_body(self, id, data, remaining)
    }
    fn body_room(&self, id: ConnId) -> usize {
        Peer::body_room(self, id)
    }
    fn on_frame_error(&mut self, id: ConnId, e: FrameError) {
        self.misbehaved(id, Offence::Frame(e));
    }
}

impl<'a, const W: usize> Outputs for Peer<'a, W> {
    type Event = PeerEvent;
    fn drain_state(&mut self) -> &mut Drain {
        &mut self.drain
    }
    fn next_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        conn::transmit(self, buf)
    }
    fn next_action(&mut self) -> Option<Action> {
        for (id, c) in self.conns.iter_mut() {
            if c.link.phase == (Phase::Connecting { asked: false }) {
                c.link.phase = Phase::Connecting { asked: true };
                return Some(Action::Connect {
                    conn: id,
                    addr: c.link.remote,
                });
            }
        }
        if let Some(id) = self.conns.take_closed() {
            return Some(Action::Close(id));
        }
        for a in self.active.iter_mut().flatten() {
            if !a.hash_asked {
                a.hash_asked = true;
                return Some(Action::ReadHash {
                    key: key(a.slot, Region::Hashes),
                    chunk: a.chunk,
                });
            }
        }
        if let Some(check) = self.next_check() {
            return Some(check);
        }
        if self.discards > 0 {
            let (slot, f) = self
                .files
                .iter_mut()
                .enumerate()
                .find_map(|(i, f)| f.as_mut().filter(|f| f.discard_hashes).map(|f| (i, f)))?;
            f.discard_hashes = false;
            self.discards -= 1;
            return Some(Action::Discard(key(slot as u16, Region::Hashes)));
        }
        None
    }
    fn next_event(&mut self) -> Option<PeerEvent> {
        self.events.pop()
    }
    fn next_timeout(&self) -> Instant {
        // The ping timer is always armed, so there is always an earliest.
        let next = self.timers().earliest().unwrap_or(self.next_ping);
        next.max(self.now)
    }
}

fn key(slot: u16, region: Region) -> StorageKey {
    StorageKey { slot, region }
}
