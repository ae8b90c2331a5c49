//! The peer: shares files, fetches them from several peers at once, verifies every chunk and
//! serves what it holds.
//!
//! # Driving it
//!
//! Same contract as the [tracker](crate::tracker): after every `handle_*` call (and every
//! command such as [`Peer::share`] or [`Peer::fetch`]), drain in this order until each returns
//! `None`: [`Peer::poll_transmit`], [`Peer::poll_action`], [`Peer::poll_event`]; then sleep
//! until [`Peer::poll_timeout`] or the next socket event.
//!
//! `handle_recv` may take only part of its input: it stops while the replies or events it
//! has queued need draining first (backpressure, so its queues stay small and nothing is
//! dropped). Drain, then offer the rest again.
//!
//! - [`Action::Connect`]: open a TCP connection, then report [`Peer::handle_connected`] or
//!   [`Peer::handle_closed`].
//! - [`Action::ReadHash`]: read the stored hash of a chunk and hand it to
//!   [`Peer::handle_hash`]. The core keeps no chunk hashes in RAM.
//! - `handle_recv` may return a [`StorageWrite`]: chunk payload or manifest hashes to store at
//!   once, straight from the adapter's receive buffer. Payload is written before it is verified;
//!   a chunk counts as held only after [`PeerEvent::ChunkVerified`], which is when the adapter
//!   should record it durably.
//! - [`Transmit::then`] asks for bytes from storage right after a frame (block payload, hashes).
//!
//! # How a download goes
//!
//! [`Peer::fetch`] asks the tracker for the manifest, streams its hashes to storage while
//! checking them against the file id, then locates holders and connects to several. Each
//! connection is for one file: it opens with a [`Message::Bitfield`] both ways, and `Have`s
//! follow as chunks are verified, so availability keeps flowing when the tracker is gone. The
//! scheduler (see [`sched`](self::sched) for its rules) asks each connection for blocks of
//! chunks it holds, rarest first.
//!
//! Bytes of a chunk are taken strictly in order at the chunk's *frontier*: the SHA-256 is
//! updated as they arrive and they go to storage at once, so no chunk is ever buffered. Any
//! connection that was asked for the block at the frontier may supply it; copies that arrive
//! later are dropped unwritten. That one rule makes a stalled connection's chunk continue
//! elsewhere from where it stopped, and makes endgame duplicates safe.
//!
//! A chunk whose hash does not match is discarded and fetched again; its sender gets a strike,
//! and [`PeerConfig::ban_after`] strikes ban it.
//!
//! # Memory
//!
//! Everything is in the struct. With `C` connections, `F` files, `W` bitmap words per file
//! (at most `32 * W` chunks) and `A` chunks in flight, [`Peer::ram_bytes`] is the exact size;
//! RAM grows with file size only through `W` (one bit per chunk per file and per connection).
//!
//! | configuration | C | F | W | A | bytes |
//! |---|---|---|---|---|---|
//! | [`SmallPeer`] | 4 | 1 | 32 (1024 chunks) | 4 | 22,440 |
//! | [`HostPeer`] | 64 | 16 | 256 (8192 chunks) | 128 | 361,104 |
//!
//! Per connection: a 512-byte frame buffer, the remote's chunk bitmap (`4 * W` bytes), and
//! bounded queues of requests (32), blocks to serve (16) and control frames (16); queued blocks
//! are 12 bytes, without the file id (a connection is about one file). Events wait in a queue
//! of 16. Per chunk in flight: a SHA-256 state and who supplied it. No chunk payload and no
//! chunk hash is ever held:
//! payload streams from the receive buffer to storage, and hashes are read from storage one
//! at a time as chunks start.
//!
//! A test checks both figures (x86_64; a 32-bit target is a little smaller).

mod rate;
mod sched;
mod send;

use core::net::SocketAddr;

use heapless::{Deque, Vec};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use sha2::{Digest, Sha256};

use crate::auth::{self, Nonce, Side, SwarmKey};
use crate::bitmap::ChunkBitmap;
use crate::conn::{round_robin, ConnId, Slots, TableFull};
use crate::io::{Action, Drain, Output, Outputs};
pub use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::{ChunkHash, FileIdHasher, ManifestHeader, HASH_LEN, MAX_CHUNKS};
use crate::storage::{Region, StorageKey, StorageWrite};
use crate::time::{Duration, Instant};
use crate::wire::{
    BlockRef, ChunkRange, FileEntry, FileId, FrameDecoder, FrameError, Hello, HolderItem, Item,
    Message, NodeId, PeerEntry, PublishRefusal, Refusal, RejectReason, MAX_RANGES,
    PROTOCOL_VERSION,
};

use rate::{RateMeter, TokenBucket};

/// A peer sized for a Linux host: 64 connections, 16 files of up to 8192 chunks, 128 chunks in
/// flight.
pub type HostPeer = Peer<64, 16, 256, 128>;

/// A peer small enough for a microcontroller: 4 connections, 1 file of up to 1024 chunks,
/// 4 chunks in flight.
pub type SmallPeer = Peer<4, 1, 32, 4>;

const CTL_QUEUE: usize = 16;
const REQ_QUEUE: usize = 32;
const SERVE_QUEUE: usize = 16;
const EVENT_QUEUE: usize = 16;
/// The most events one message can cause (a block that completes a chunk and the file, a
/// remote that misbehaves and is banned and lost, ...). `handle_recv` stops reading while fewer
/// than this many places are free, so no event is ever dropped by a peer whose adapter drains.
const EVENT_ROOM: usize = 8;
const HAVE_LOG: usize = 64;
const REPUTATION: usize = 16;
/// How long a connection that answered "busy" gets no requests.
const BUSY_PAUSE: Duration = Duration::from_millis(300);
/// An upload slot is given up after this long with nothing to serve.
const SLOT_IDLE: Duration = Duration::from_secs(1);
/// The first delay between holder lookups (and manifest requests) of a new fetch.
const FIRST_LOCATE_DELAY: Duration = Duration::from_millis(100);

/// Settings for a [`Peer`].
#[derive(Clone, Copy, Debug)]
pub struct PeerConfig {
    /// This peer's node id.
    pub node: NodeId,
    /// The port this peer accepts connections on (0: it accepts none).
    pub listen_port: u16,
    /// The tracker to connect to; `None` for a peer that only talks to peers it is given.
    pub tracker: Option<SocketAddr>,
    /// Register with the tracker (join the active peer list). A peer that only queries the
    /// tracker (list, locate) sets this to false. Default true.
    pub register: bool,
    /// Seed for the random choices (tie-breaks, jitter, handshake nonces); a simulation is
    /// reproducible by it. With a swarm key it must come from an entropy source.
    pub rng_seed: u64,
    /// The swarm key, if this swarm uses one: every connection (tracker and peers) must prove
    /// it before anything else is sent or taken (see [`crate::auth`]). Default `None`.
    pub swarm_key: Option<SwarmKey>,
    /// Bytes asked for in one block request. Default 64 KiB.
    pub block_len: u32,
    /// Connections served at once. Default 16.
    pub upload_slots: usize,
    /// Upload limit in bytes per second; `None` for no limit.
    pub upload_rate: Option<u64>,
    /// Connections this peer opens per file being fetched (others may connect to it on top).
    /// Default 8.
    pub max_conns_per_file: usize,
    /// Most bytes asked for and not yet received on one connection. Default 4 MiB.
    pub max_in_flight: u32,
    /// How often connections are pinged. Default 5 s.
    pub ping_interval: Duration,
    /// Pings in a row left unanswered before a connection is dropped. Default 3.
    pub max_missed_pings: u8,
    /// How long a connection may leave requests unanswered before its work moves elsewhere.
    /// Default 5 s.
    pub stall_timeout: Duration,
    /// How often holders are looked up again while fetching. Default 3 s.
    pub locate_interval: Duration,
    /// Give up a fetch that has been stuck this long (no manifest, or chunks no one holds).
    /// `None` (the default): wait for a holder for as long as it takes.
    pub fetch_deadline: Option<Duration>,
    /// Bad chunks from one peer before it is banned. Default 2.
    pub ban_after: u8,
    /// First delay before reconnecting to the tracker; doubled on each failure. Default 1 s.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts. Default 30 s.
    pub reconnect_max: Duration,
}

impl PeerConfig {
    /// Defaults for a peer with this node id, listen port and tracker.
    pub fn new(node: NodeId, listen_port: u16, tracker: Option<SocketAddr>) -> Self {
        PeerConfig {
            node,
            listen_port,
            tracker,
            register: true,
            rng_seed: u64::from_le_bytes([
                node.0[0], node.0[1], node.0[2], node.0[3], node.0[4], node.0[5], node.0[6],
                node.0[7],
            ]),
            swarm_key: None,
            block_len: 64 * 1024,
            upload_slots: 16,
            upload_rate: None,
            max_conns_per_file: 8,
            max_in_flight: 4 << 20,
            ping_interval: Duration::from_secs(5),
            max_missed_pings: 3,
            stall_timeout: Duration::from_secs(5),
            locate_interval: Duration::from_secs(3),
            fetch_deadline: None,
            ban_after: 2,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Where a download stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Progress {
    /// The file slot.
    pub slot: u16,
    /// Verified chunks.
    pub chunks_done: u32,
    /// All chunks.
    pub chunks_total: u32,
    /// Verified bytes.
    pub bytes_done: u64,
    /// The file size.
    pub bytes_total: u64,
    /// Download rate in bytes per second.
    pub rate: u64,
    /// Peer connections open for this file.
    pub peers: u16,
}

/// Why a fetch was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FetchFailure {
    /// No manifest for the id arrived before the deadline (the tracker does not know it).
    ManifestNotFound,
    /// Some chunks had no online holder until the deadline.
    Unavailable {
        /// How many chunks were missing.
        missing: u32,
    },
    /// The file has more chunks than this peer can track.
    TooManyChunks {
        /// The most this peer can track.
        max: u32,
    },
    /// Storage failed (disk full, flash error).
    Storage,
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandError {
    /// The file table is full.
    TooManyFiles,
    /// The file is already shared or being fetched, in this slot.
    AlreadyPresent(u16),
    /// The file has more chunks than this peer can track.
    TooManyChunks {
        /// The most this peer can track.
        max: u32,
    },
    /// The request needs the tracker and the peer is not connected to one.
    NoTracker,
    /// No such slot.
    NoSuchSlot,
}

impl core::fmt::Display for CommandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CommandError::TooManyFiles => f.write_str("too many files at once for this peer"),
            CommandError::AlreadyPresent(_) => {
                f.write_str("that file is already shared or being fetched")
            }
            CommandError::TooManyChunks { max } => write!(
                f,
                "the file has more than {max} chunks; share it with a larger chunk size"
            ),
            CommandError::NoTracker => f.write_str("not connected to a tracker"),
            CommandError::NoSuchSlot => f.write_str("no such file slot"),
        }
    }
}

impl core::error::Error for CommandError {}

/// What happened, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PeerEvent {
    /// Registered with the tracker, which recorded this address for us.
    Registered {
        /// The recorded address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// The tracker answered our hello: queries ([`Peer::list_files`], [`Peer::locate`]) can
    /// be sent now.
    TrackerReady,
    /// The tracker connection ended (or could not be made); retrying with backoff.
    TrackerLost,
    /// The tracker refused to register us; retrying with backoff.
    TrackerRefused(Refusal),
    /// A new active peer list arrived from the tracker ([`Peer::peers`]).
    PeerList {
        /// Peers in it.
        count: u16,
    },
    /// The tracker listed a shared file.
    Published {
        /// The file.
        file: FileId,
    },
    /// The tracker refused to list a shared file.
    PublishRefused {
        /// The file.
        file: FileId,
        /// Why.
        reason: PublishRefusal,
    },
    /// One file of an answer to [`Peer::list_files`].
    FileListed(FileEntry),
    /// End of an answer to [`Peer::list_files`].
    FileListEnd {
        /// Files listed.
        count: u16,
    },
    /// One holder in an answer to [`Peer::locate`].
    Holder(HolderItem),
    /// End of an answer to [`Peer::locate`].
    LocateEnd {
        /// The file.
        file: FileId,
        /// Holders sent.
        holders: u16,
    },
    /// The tracker does not know this file (an answer to a locate or a manifest request).
    NotFound {
        /// The file.
        file: FileId,
    },
    /// A fetch has its manifest: its hashes are stored and match the file id.
    ManifestReceived {
        /// The slot.
        slot: u16,
        /// The file id the manifest was checked against.
        file: FileId,
        /// The header; the adapter can now create the output.
        header: ManifestHeader,
    },
    /// A manifest did not match its file id and was discarded; it will be asked for again.
    ManifestRejected {
        /// The slot.
        slot: u16,
    },
    /// A chunk arrived whole and matched its hash: it is held and served from now on.
    ChunkVerified {
        /// The slot.
        slot: u16,
        /// The chunk.
        chunk: u32,
    },
    /// A chunk did not match its hash and was discarded; it will be fetched again.
    ChunkRejected {
        /// The slot.
        slot: u16,
        /// The chunk.
        chunk: u32,
        /// The peer that sent (the first bytes of) it.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        from: SocketAddr,
    },
    /// Download progress, after each verified chunk.
    Progress(Progress),
    /// A peer connection for a file opened.
    PeerConnected {
        /// The slot.
        slot: u16,
        /// The peer's address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// A peer connection for a file ended.
    PeerLost {
        /// The slot.
        slot: u16,
        /// The peer's address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// A peer sent too many bad chunks and is banned.
    PeerBanned {
        /// Its node id.
        node: NodeId,
        /// Its address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// A peer connection failed the swarm-key handshake and was closed: the two ends do not
    /// share the same swarm key.
    SwarmKeyMismatch {
        /// The remote's address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
        /// True when the remote refused us, false when we refused the remote.
        by_remote: bool,
    },
    /// A remote broke the protocol and was disconnected.
    Misbehaved {
        /// Its address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
        /// What it did.
        offence: Offence,
    },
    /// Some chunks have no online holder; the fetch waits for one (see [`Peer::missing`]).
    Unavailable {
        /// The slot.
        slot: u16,
        /// Chunks no one online holds.
        missing: u32,
        /// The first missing range.
        first: ChunkRange,
    },
    /// Every chunk is verified; the file is now shared.
    FileComplete {
        /// The slot.
        slot: u16,
    },
    /// A fetch was given up; the slot is free again.
    FetchFailed {
        /// The slot.
        slot: u16,
        /// Why.
        reason: FetchFailure,
    },
}

/// A protocol violation by a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Offence {
    /// Its bytes did not decode.
    Frame(FrameError),
    /// A message not allowed now.
    Unexpected,
    /// A chunk range or bitfield that does not fit the file.
    BadRange,
    /// Too many block bytes that were never asked for.
    Unsolicited,
}

// ---- internal state -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Tracker,
    Peer { outgoing: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the adapter to connect; `asked` once the Connect action went out.
    Connecting {
        asked: bool,
    },
    /// Connected, waiting for the remote's Hello (and, with a swarm key, its proof).
    Handshake {
        deadline: Instant,
    },
    Open,
    /// Send what is queued, then close.
    Closing,
    /// Report the close through `poll_action`, then free the slot.
    Closed,
}

/// A control frame waiting to be sent; rendered when polled.
#[derive(Clone, Copy, Debug)]
enum Ctl {
    Hello,
    /// Our swarm-key proof, made from the connection's nonces when sent.
    Auth,
    Refused(Refusal),
    Register,
    Ping(u32),
    Pong(u32),
    Leave,
    Publish(u16),
    GetManifest(FileId),
    Locate(FileId),
    ListFiles,
    Bitfield(u16),
    /// An empty `Have` to the tracker: we fetch this file and take connections for it.
    Join(u16),
    NotFound(FileId),
    Manifest(u16),
    Reject(Blk, RejectReason),
    Cancel(Blk),
}

/// A block of the file its connection is about. Queues keep these rather than [`BlockRef`]s:
/// the file id is the connection's, and leaving it out more than halves every queue entry
/// (which is most of a small peer's RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blk {
    chunk: u32,
    offset: u32,
    len: u32,
}

impl Blk {
    fn of(b: &BlockRef) -> Self {
        Blk {
            chunk: b.chunk,
            offset: b.offset,
            len: b.len,
        }
    }

    fn in_file(self, file: FileId) -> BlockRef {
        BlockRef {
            file,
            chunk: self.chunk,
            offset: self.offset,
            len: self.len,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Req {
    block: Blk,
    sent: Option<Instant>,
}

/// Where the body after the current message goes.
enum Sink {
    None,
    /// Block payload: into the in-flight chunk `active` (if accepted) at `file_offset`.
    Block {
        active: Option<usize>,
        slot: u16,
        chunk: u32,
        file_offset: u64,
    },
    /// A bitfield: byte `pos` is next.
    Bitfield {
        pos: u32,
    },
    /// Manifest hashes for `slot`, checked against its id as they stream.
    Hashes {
        slot: u16,
        hasher: FileIdHasher,
        offset: u64,
    },
}

struct Conn<const W: usize> {
    role: Role,
    remote: SocketAddr,
    phase: Phase,
    decoder: FrameDecoder,
    sink: Sink,
    hello: Option<Hello>,
    /// Our handshake nonce on this connection.
    nonce: Nonce,
    /// The file this peer connection is about.
    file: Option<u16>,
    ctl: Deque<Ctl, CTL_QUEUE>,
    reqs: Deque<Req, REQ_QUEUE>,
    serve: Deque<Blk, SERVE_QUEUE>,
    remote_has: ChunkBitmap<W>,
    bitfield_in: bool,
    bitfield_out: bool,
    /// Our bitfield body being sent: slot and next byte.
    bitfield_body: Option<(u16, u32)>,
    /// What this remote has been told of our chunks.
    have: HaveCursor,
    missed_pings: u8,
    last_rx: Instant,
    rate: RateMeter,
    rtt: Option<Duration>,
    /// No new work before this (after a stall or a busy answer).
    pause_until: Instant,
    upload_slot: bool,
    last_served: Instant,
    /// Block bytes received that were never asked for (beyond `cancelled`).
    unsolicited: u64,
    /// Bytes of requests we cancelled after sending: their blocks may still come, honestly.
    cancelled: u64,
    blocked: bool,
}

impl<const W: usize> Conn<W> {
    /// A connection with a fresh handshake nonce from `rng`.
    fn new(
        role: Role,
        remote: SocketAddr,
        phase: Phase,
        now: Instant,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Self {
        let nonce = auth::nonce(rng);
        Conn {
            role,
            remote,
            phase,
            decoder: FrameDecoder::new(MAX_CHUNKS as u64 * HASH_LEN as u64),
            sink: Sink::None,
            hello: None,
            nonce,
            file: None,
            ctl: Deque::new(),
            reqs: Deque::new(),
            serve: Deque::new(),
            remote_has: ChunkBitmap::new(0).unwrap_or_else(|_| unreachable_bitmap()),
            bitfield_in: false,
            bitfield_out: false,
            bitfield_body: None,
            have: HaveCursor {
                seq: 0,
                full_from: None,
            },
            missed_pings: 0,
            last_rx: now,
            rate: RateMeter::new(now),
            rtt: None,
            pause_until: now,
            upload_slot: false,
            last_served: now,
            unsolicited: 0,
            cancelled: 0,
            blocked: false,
        }
    }

    fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Our side of the swarm-key handshake.
    fn side(&self) -> Side {
        match self.role {
            Role::Tracker | Role::Peer { outgoing: true } => Side::Opener,
            Role::Peer { outgoing: false } => Side::Acceptor,
        }
    }

    /// The listen address of the remote, as others would reach it.
    fn listen_addr(&self) -> SocketAddr {
        match (self.role, self.hello) {
            (Role::Peer { outgoing: false }, Some(h)) => {
                SocketAddr::new(self.remote.ip(), h.listen_port)
            }
            _ => self.remote,
        }
    }

    fn in_flight_bytes(&self) -> u64 {
        self.reqs.iter().map(|r| u64::from(r.block.len)).sum()
    }
}

/// `ChunkBitmap::new(0)` cannot fail (0 chunks fit any capacity); this keeps the proof in one
/// place without an `unwrap`.
fn unreachable_bitmap<const W: usize>() -> ChunkBitmap<W> {
    loop {
        if let Ok(b) = ChunkBitmap::new(0) {
            return b;
        }
    }
}

/// The chunks verified lately, so each connection (and the tracker) can be told in batches.
/// A reader that falls behind the log gets the whole bitfield again.
struct HaveLog {
    entries: Deque<u32, HAVE_LOG>,
    /// Sequence number of `entries[0]`.
    head: u64,
}

impl HaveLog {
    fn end(&self) -> u64 {
        self.head + self.entries.len() as u64
    }

    fn push(&mut self, chunk: u32) {
        if self.entries.is_full() {
            self.entries.pop_front();
            self.head += 1;
        }
        // Room was made just above.
        let _ = self.entries.push_back(chunk);
    }

    /// Ranges of the chunks logged from `seq` on (merged where adjacent), and the sequence
    /// number after them; `None` if `seq` fell out of the log.
    fn since(&self, seq: u64) -> Option<(Vec<ChunkRange, MAX_RANGES>, u64)> {
        if seq < self.head {
            return None;
        }
        let mut ranges: Vec<ChunkRange, MAX_RANGES> = Vec::new();
        let mut next = seq;
        for &c in self.entries.iter().skip((seq - self.head) as usize) {
            match ranges.last_mut() {
                Some(r) if r.end == c => r.end += 1,
                _ => {
                    if ranges
                        .push(ChunkRange {
                            start: c,
                            end: c + 1,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
            next += 1;
        }
        Some((ranges, next))
    }
}

/// How far one reader (the tracker, or a peer connection) has been told about our chunks: up
/// to `seq` in the have log, or, after falling behind it, everything held from `full_from` on.
#[derive(Clone, Copy, Debug)]
struct HaveCursor {
    seq: u64,
    full_from: Option<u32>,
}

// No allocator to box the header into; one per file slot either way.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum ManifestState {
    /// Not yet known: asked of the tracker at `asked` (if it was).
    Wanted {
        asked: Option<Instant>,
    },
    Known(ManifestHeader),
}

struct File<const W: usize> {
    id: FileId,
    manifest: ManifestState,
    /// Being fetched (else shared whole).
    fetching: bool,
    have: ChunkBitmap<W>,
    /// Chunks with an in-flight record.
    busy: ChunkBitmap<W>,
    log: HaveLog,
    /// The tracker lists this file (a `NotFound` for it clears this until a locate finds it).
    tracker_knows: bool,
    /// What the tracker has been told of our chunks of this file.
    tracker: HaveCursor,
    publish_pending: bool,
    next_locate: Instant,
    /// Delay before the next locate: starts short so a new swarm finds itself quickly, then
    /// doubles up to `locate_interval`.
    locate_backoff: Duration,
    located: bool,
    unavailable_since: Option<Instant>,
    unavailable_reported: u32,
    started: Instant,
    bytes_done: u64,
    rate: RateMeter,
    user_locate: bool,
}

impl<const W: usize> File<W> {
    fn header(&self) -> Option<&ManifestHeader> {
        match &self.manifest {
            ManifestState::Known(h) => Some(h),
            ManifestState::Wanted { .. } => None,
        }
    }

    fn complete(&self) -> bool {
        self.header().is_some() && self.have.is_full()
    }
}

impl Active {
    /// The offset of the next byte that will be taken: the end of the block streaming in, or
    /// the frontier.
    fn next_needed(&self) -> u32 {
        if self.receiving.is_some() {
            self.receiving_end
        } else {
            self.frontier
        }
    }
}

/// A chunk being downloaded.
struct Active {
    slot: u16,
    chunk: u32,
    /// Bytes taken in order so far (hashed and written).
    frontier: u32,
    sha: Sha256,
    /// The connection whose block at the frontier is streaming in now, and where that block
    /// ends.
    receiving: Option<ConnId>,
    receiving_end: u32,
    owner: Option<ConnId>,
    /// Next offset to ask the owner for.
    owner_next: u32,
    /// An endgame duplicate source.
    dup: Option<ConnId>,
    dup_next: u32,
    expected: Option<ChunkHash>,
    hash_asked: bool,
    digest: Option<[u8; 32]>,
    /// Who supplied bytes of this attempt (for blame if the hash fails).
    contributors: Vec<(ConnId, SocketAddr, NodeId), 4>,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    slot: u16,
    peer: PeerEntry,
    retry_at: Instant,
    failures: u8,
    conn: Option<ConnId>,
}

/// The peer state machine; see the [module docs](self).
///
/// `C` connections (the tracker's included), `F` files, `W` bitmap words per file (at most
/// `32 * W` chunks), `A` chunks in flight at once.
pub struct Peer<const C: usize, const F: usize, const W: usize, const A: usize> {
    config: PeerConfig,
    now: Instant,
    rng: Xoshiro256PlusPlus,
    conns: Slots<Conn<W>, C>,
    files: [Option<File<W>>; F],
    active: [Option<Active>; A],
    candidates: [Option<Candidate>; C],
    /// (node, listen address, strikes): strikes at `ban_after` mean banned.
    reputation: Deque<(NodeId, SocketAddr, u8), REPUTATION>,
    events: Deque<PeerEvent, EVENT_QUEUE>,
    events_lost: u32,
    tracker: Option<ConnId>,
    tracker_retry_at: Instant,
    tracker_backoff: Duration,
    registered: Option<SocketAddr>,
    peer_list: Vec<PeerEntry, C>,
    peer_list_next: Vec<PeerEntry, C>,
    user_list: bool,
    next_ping: Instant,
    ping_nonce: u32,
    upload: Option<TokenBucket>,
    slots_used: usize,
    leaving: bool,
    rr: usize,
    /// Slots with a hash-discard action to report (one bit per slot; at most 32 slots).
    discard_hashes: u32,
    /// Chunks that failed their hash lately, and a node that sent them.
    recent_bad: Deque<(u16, u32, NodeId), 8>,
    /// The header of the manifest whose hashes are streaming in, until they are checked.
    pending_header: Option<(u16, ManifestHeader)>,
    /// A user's locate of a file this peer neither shares nor fetches.
    user_locates_untracked: Option<FileId>,
    /// Where `poll_output` stands.
    drain: Drain,
}

impl<const C: usize, const F: usize, const W: usize, const A: usize> Peer<C, F, W, A> {
    /// The most chunks a file may have on this peer.
    pub const MAX_FILE_CHUNKS: u32 = {
        let cap = ChunkBitmap::<W>::CAPACITY;
        if cap < MAX_CHUNKS {
            cap
        } else {
            MAX_CHUNKS
        }
    };

    /// A peer; if a tracker is configured it connects to it at once.
    pub fn new(config: PeerConfig, now: Instant) -> Self {
        let mut peer = Peer {
            config,
            now,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            conns: Slots::new(),
            files: core::array::from_fn(|_| None),
            active: core::array::from_fn(|_| None),
            candidates: [None; C],
            reputation: Deque::new(),
            events: Deque::new(),
            events_lost: 0,
            tracker: None,
            tracker_retry_at: now,
            tracker_backoff: config.reconnect_min,
            registered: None,
            peer_list: Vec::new(),
            peer_list_next: Vec::new(),
            user_list: false,
            next_ping: now + config.ping_interval,
            ping_nonce: 0,
            upload: config
                .upload_rate
                .map(|r| TokenBucket::new(r, u64::from(config.block_len).max(r / 4), now)),
            slots_used: 0,
            leaving: false,
            rr: 0,
            discard_hashes: 0,
            recent_bad: Deque::new(),
            pending_header: None,
            user_locates_untracked: None,
            drain: Drain::default(),
        };
        peer.connect_tracker(now);
        peer
    }

    /// Every input starts here: the time moves on, and the drain must hand out whatever the
    /// input queues.
    fn enter(&mut self, now: Instant) {
        self.now = now;
        self.drain.input();
    }

    /// The exact RAM this peer type occupies, in bytes.
    pub const fn ram_bytes() -> usize {
        core::mem::size_of::<Self>()
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
        let slot = self.new_file(now, file, ManifestState::Known(header), !complete, bits)?;
        if let Some(f) = self.file_mut(slot) {
            f.bytes_done = held_bytes(f);
        }
        self.after_command(now);
        Ok(slot)
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
        self.user_list = true;
        self.ctl(t, Ctl::ListFiles);
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
            None => self.user_locates_untracked = Some(file),
        }
        self.ctl(t, Ctl::Locate(file));
        Ok(())
    }

    /// Leaves: tells the tracker, closes every connection, and stops reconnecting.
    pub fn leave(&mut self, now: Instant) {
        self.enter(now);
        self.leaving = true;
        if let Some(t) = self.tracker_open() {
            self.ctl(t, Ctl::Leave);
        }
        let ids: Vec<ConnId, C> = self.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            if Some(id) == self.tracker {
                self.close_after_flush(id);
            } else {
                self.close_now(id);
            }
        }
    }

    // ---- queries -----------------------------------------------------------------------

    /// The active peer list last pushed by the tracker.
    pub fn peers(&self) -> &[PeerEntry] {
        &self.peer_list
    }

    /// The address the tracker recorded for us, while registered.
    pub fn registered(&self) -> Option<SocketAddr> {
        self.registered
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
        self.events_lost
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A remote connected to our listen port. `Err`: the table is full, close the socket.
    pub fn handle_accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull> {
        self.enter(now);
        // Keep a slot for the tracker connection.
        let used = self.conns.iter().count()
            + usize::from(self.tracker.is_none() && self.config.tracker.is_some());
        if used >= C || self.leaving {
            return Err(TableFull);
        }
        let phase = Phase::Handshake {
            deadline: now + self.config.ping_interval.saturating_mul(2),
        };
        self.conns.insert(Conn::new(
            Role::Peer { outgoing: false },
            remote,
            phase,
            now,
            &mut self.rng,
        ))
    }

    /// An outgoing connection (from [`Action::Connect`]) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        self.enter(now);
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if !matches!(c.phase, Phase::Connecting { .. }) {
            return;
        }
        c.phase = Phase::Handshake {
            deadline: now + self.config.ping_interval.saturating_mul(2),
        };
        c.last_rx = now;
        self.ctl(conn, Ctl::Hello);
        // Without a swarm key the first requests ride right behind the Hello; with one they wait
        // until the acceptor has proved the key too.
        if self.config.swarm_key.is_none() {
            self.greet(conn);
        }
        self.after_command(now);
    }

    /// An opener's first requests on a connection: register with the tracker, or offer our
    /// bitfield to a peer.
    fn greet(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        match (c.role, c.file) {
            (Role::Tracker, _) if self.config.register => self.ctl(conn, Ctl::Register),
            (Role::Peer { outgoing: true }, Some(slot)) => self.ctl(conn, Ctl::Bitfield(slot)),
            _ => {}
        }
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
    pub fn handle_recv<'a>(&mut self, now: Instant, conn: ConnId, input: &'a [u8]) -> Recv<'a> {
        self.enter(now);
        let mut used = 0;
        let result = loop {
            let Some(c) = self.conns.get_mut(conn) else {
                break Recv::all(input);
            };
            if !matches!(c.phase, Phase::Handshake { .. } | Phase::Open) {
                break Recv::all(input);
            }
            let rest = &input[used..];
            let full = c.ctl.len() + 1 >= CTL_QUEUE
                || c.serve.is_full()
                || self.events.len() + EVENT_ROOM > EVENT_QUEUE;
            if rest.is_empty() || (full && c.decoder.is_idle()) {
                break Recv {
                    consumed: used,
                    write: None,
                };
            }
            c.last_rx = now;
            c.missed_pings = 0;
            match c.decoder.decode(rest) {
                Err(e) => {
                    self.misbehaved(conn, Offence::Frame(e));
                    break Recv::all(input);
                }
                Ok((0, None)) => {
                    break Recv {
                        consumed: used,
                        write: None,
                    }
                }
                Ok((n, None)) => used += n,
                Ok((n, Some(Item::Message(msg)))) => {
                    used += n;
                    self.on_message(conn, msg);
                }
                Ok((n, Some(Item::Body { data, remaining }))) => {
                    used += n;
                    if let Some(write) = self.on_body(conn, data, remaining) {
                        break Recv {
                            consumed: used,
                            write: Some(write),
                        };
                    }
                }
            }
        };
        self.schedule();
        result
    }

    /// The stored hash of `chunk` in `slot`, asked for by [`Action::ReadHash`].
    pub fn handle_hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash) {
        self.enter(now);
        if let Some(i) = self.active_index(slot, chunk) {
            if let Some(a) = self.active[i].as_mut() {
                a.expected = Some(hash);
            }
            self.try_verify(i);
        }
        self.schedule();
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
        if let Some(c) = self.conns.get_mut(conn) {
            c.blocked = true;
        }
    }

    /// The adapter can take output for `conn` again.
    pub fn handle_send_ready(&mut self, conn: ConnId) {
        self.drain.input();
        if let Some(c) = self.conns.get_mut(conn) {
            c.blocked = false;
        }
    }

    /// Time passed; call when [`Peer::poll_timeout`] is reached (early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enter(now);
        self.check_handshakes(now);
        self.check_stalls(now);
        if now >= self.next_ping {
            self.ping_round(now);
        }
        if self.tracker.is_none() && now >= self.tracker_retry_at {
            self.connect_tracker(now);
        }
        for slot in 0..F as u16 {
            self.file_tick(slot, now);
        }
        self.release_idle_slots(now);
        self.schedule();
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next thing to do: a frame to send (encoded into `buf`), an action, an event, or
    /// `Timeout` when the drain is over. Call it after every input until `Timeout`; see
    /// [`crate::io`] for the contract.
    pub fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<PeerEvent> {
        Drain::poll(self, buf)
    }

    /// When the peer next needs [`Peer::handle_timeout`].
    ///
    /// Every instant named here is one at which `handle_timeout` changes something, so a due
    /// timer never fires twice for nothing.
    fn poll_timeout(&self) -> Instant {
        let now = self.now;
        let mut t = self.next_ping;
        if self.tracker.is_none() && self.config.tracker.is_some() && !self.leaving {
            t = t.min(self.tracker_retry_at);
        }
        for (_, c) in self.conns.iter() {
            if let Phase::Handshake { deadline } = c.phase {
                t = t.min(deadline);
            }
            if c.phase == Phase::Open && c.reqs.iter().any(|r| r.sent.is_some()) {
                t = t.min(c.last_rx + self.config.stall_timeout);
            }
            if c.pause_until > now {
                t = t.min(c.pause_until);
            }
            if c.upload_slot && c.serve.is_empty() {
                t = t.min(c.last_served + SLOT_IDLE);
            }
        }
        for f in self.files.iter().flatten().filter(|f| f.fetching) {
            t = t.min(f.next_locate);
        }
        // Candidates and the rate limit only matter once they are ready; a ready one waits
        // for the next event (a connection closing, a socket becoming writable).
        for cand in self
            .candidates
            .iter()
            .flatten()
            .filter(|c| c.conn.is_none() && c.retry_at > now)
        {
            t = t.min(cand.retry_at);
        }
        if let Some(bucket) = &self.upload {
            let ready = bucket.ready_at();
            if ready > now && self.conns.iter().any(|(_, c)| !c.serve.is_empty()) {
                t = t.min(ready);
            }
        }
        t.max(now)
    }

    /// Encodes the next frame to send into `buf`.
    fn poll_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        let mut rr = self.rr;
        let t = round_robin(&mut rr, C, |index| {
            let id = self.conns.id_at(index)?;
            self.next_frame(id, buf)
        });
        self.rr = rr;
        t
    }

    /// The next action, after `poll_transmit` is drained.
    fn poll_action(&mut self) -> Option<Action> {
        for (id, c) in self.conns.iter_mut() {
            if c.phase == (Phase::Connecting { asked: false }) {
                c.phase = Phase::Connecting { asked: true };
                return Some(Action::Connect {
                    conn: id,
                    addr: c.remote,
                });
            }
        }
        let closed = self
            .conns
            .iter()
            .find(|(_, c)| c.phase == Phase::Closed)
            .map(|(id, _)| id);
        if let Some(id) = closed {
            self.conns.remove(id);
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
        if self.discard_hashes != 0 {
            let slot = self.discard_hashes.trailing_zeros();
            self.discard_hashes &= !(1 << slot);
            return Some(Action::Discard(key(slot as u16, Region::Hashes)));
        }
        None
    }

    /// The next event for the user.
    fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    // ---- files -------------------------------------------------------------------------

    fn bitmap(&self, count: u32) -> Result<ChunkBitmap<W>, CommandError> {
        ChunkBitmap::new(count).map_err(|_| CommandError::TooManyChunks {
            max: Self::MAX_FILE_CHUNKS,
        })
    }

    fn new_file(
        &mut self,
        now: Instant,
        id: FileId,
        manifest: ManifestState,
        fetching: bool,
        have: ChunkBitmap<W>,
    ) -> Result<u16, CommandError> {
        self.enter(now);
        if let Some(slot) = self.slot_of(&id) {
            return Err(CommandError::AlreadyPresent(slot));
        }
        // At most 32 slots: hash discards are tracked in a u32 bitmask.
        let slot = self
            .files
            .iter()
            .take(32)
            .position(Option::is_none)
            .ok_or(CommandError::TooManyFiles)?;
        let count = have.len();
        let busy = self.bitmap(count)?;
        let complete = have.is_full() && matches!(manifest, ManifestState::Known(_));
        self.files[slot] = Some(File {
            id,
            manifest,
            fetching,
            have,
            busy,
            log: HaveLog {
                entries: Deque::new(),
                head: 0,
            },
            tracker_knows: true,
            tracker: HaveCursor {
                seq: 0,
                full_from: None,
            },
            publish_pending: complete,
            next_locate: now,
            locate_backoff: FIRST_LOCATE_DELAY,
            located: false,
            unavailable_since: None,
            unavailable_reported: 0,
            started: now,
            bytes_done: 0,
            rate: RateMeter::new(now),
            user_locate: false,
        });
        let slot = slot as u16;
        if self.registered.is_some() {
            self.announce_file(slot);
        }
        Ok(slot)
    }

    /// Chunks of `slot`'s file; 0 while its manifest is unknown.
    fn chunk_count(&self, slot: u16) -> u32 {
        self.file(slot)
            .and_then(File::header)
            .map_or(0, ManifestHeader::chunk_count)
    }

    fn file(&self, slot: u16) -> Option<&File<W>> {
        self.files.get(slot as usize)?.as_ref()
    }

    fn file_mut(&mut self, slot: u16) -> Option<&mut File<W>> {
        self.files.get_mut(slot as usize)?.as_mut()
    }

    fn slot_of(&self, id: &FileId) -> Option<u16> {
        self.files
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.id == *id))
            .map(|i| i as u16)
    }

    /// The connections about `slot`, collected so the caller may change the table.
    fn conns_for(&self, slot: u16) -> Vec<ConnId, C> {
        self.conns
            .iter()
            .filter(|(_, c)| c.file == Some(slot))
            .map(|(id, _)| id)
            .collect()
    }

    fn file_conns(&self, slot: u16) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.file == Some(slot) && !matches!(c.phase, Phase::Closing | Phase::Closed)
            })
            .count()
    }

    /// Whether an open connection for `slot` offers `chunk`.
    fn offered(&self, slot: u16, chunk: u32) -> bool {
        self.conns.iter().any(|(_, c)| {
            c.file == Some(slot) && c.is_open() && c.bitfield_in && c.remote_has.get(chunk)
        })
    }

    /// Tells a fresh tracker session about `slot`: publish it if whole, else resend what is
    /// held and ask for what is missing.
    fn announce_file(&mut self, slot: u16) {
        let Some(t) = self.tracker_open() else {
            return;
        };
        let now = self.now;
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        f.tracker_knows = true;
        f.tracker = HaveCursor {
            seq: f.log.end(),
            full_from: None,
        };
        let id = f.id;
        match &f.manifest {
            ManifestState::Known(_) if f.have.is_full() => f.publish_pending = true,
            ManifestState::Known(_) => {
                f.tracker.full_from = (f.have.count() > 0).then_some(0);
                // Join the swarm even with nothing yet, so other fetchers find us.
                self.ctl(t, Ctl::Join(slot));
            }
            ManifestState::Wanted { .. } => {
                f.manifest = ManifestState::Wanted { asked: Some(now) };
                self.ctl(t, Ctl::GetManifest(id));
            }
        }
        if let Some(f) = self.file_mut(slot) {
            if f.publish_pending {
                f.publish_pending = false;
                self.ctl(t, Ctl::Publish(slot));
            }
        }
    }

    fn drop_file(&mut self, slot: u16) {
        for id in self.conns_for(slot) {
            self.close_now(id);
        }
        for a in self.active.iter_mut() {
            if a.as_ref().is_some_and(|a| a.slot == slot) {
                *a = None;
            }
        }
        for cand in self.candidates.iter_mut() {
            if cand.is_some_and(|c| c.slot == slot) {
                *cand = None;
            }
        }
        self.files[slot as usize] = None;
    }

    fn fail_fetch(&mut self, slot: u16, reason: FetchFailure) {
        self.event(PeerEvent::FetchFailed { slot, reason });
        self.drop_file(slot);
    }

    /// Periodic work for one file: locate holders, ask for a missing manifest, report chunks
    /// no one holds, give up at the deadline.
    fn file_tick(&mut self, slot: u16, now: Instant) {
        let interval = self.config.locate_interval;
        let deadline = self.config.fetch_deadline;
        let tracker = self.tracker_open().filter(|_| self.registered.is_some());
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        if !f.fetching || now < f.next_locate {
            return;
        }
        f.next_locate = now + f.locate_backoff;
        f.locate_backoff = f.locate_backoff.saturating_mul(2).min(interval);
        let id = f.id;
        let started = f.started;
        match f.manifest.clone() {
            ManifestState::Wanted { asked } => {
                if deadline.is_some_and(|d| now - started >= d) {
                    self.fail_fetch(slot, FetchFailure::ManifestNotFound);
                    return;
                }
                if let Some(t) = tracker {
                    if asked.is_none_or(|at| now - at >= FIRST_LOCATE_DELAY) {
                        if let Some(f) = self.file_mut(slot) {
                            f.manifest = ManifestState::Wanted { asked: Some(now) };
                        }
                        self.ctl(t, Ctl::GetManifest(id));
                    }
                }
            }
            ManifestState::Known(_) => {
                if let Some(t) = tracker {
                    self.ctl(t, Ctl::Locate(id));
                }
                self.check_unavailable(slot, now);
            }
        }
    }

    fn check_unavailable(&mut self, slot: u16, now: Instant) {
        let mut missing = 0;
        let mut first = None;
        let mut from = 0;
        while let Some(r) = self.missing(slot, from) {
            missing += r.end - r.start;
            first.get_or_insert(r);
            from = r.end;
        }
        let connecting = self.conns.iter().any(|(_, c)| {
            c.file == Some(slot)
                && matches!(c.phase, Phase::Connecting { .. } | Phase::Handshake { .. })
        });
        let deadline = self.config.fetch_deadline;
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        let Some(first) = first.filter(|_| f.located && !connecting) else {
            if missing == 0 {
                f.unavailable_since = None;
                f.unavailable_reported = 0;
            }
            return;
        };
        let since = *f.unavailable_since.get_or_insert(now);
        let report = f.unavailable_reported != missing;
        f.unavailable_reported = missing;
        if report {
            self.event(PeerEvent::Unavailable {
                slot,
                missing,
                first,
            });
        }
        if deadline.is_some_and(|d| now - since >= d) {
            self.fail_fetch(slot, FetchFailure::Unavailable { missing });
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn connect_tracker(&mut self, now: Instant) {
        let Some(addr) = self.config.tracker else {
            return;
        };
        if self.leaving || self.tracker.is_some() {
            return;
        }
        let conn = Conn::new(
            Role::Tracker,
            addr,
            Phase::Connecting { asked: false },
            now,
            &mut self.rng,
        );
        match self.conns.insert(conn) {
            Ok(id) => self.tracker = Some(id),
            Err(TableFull) => self.tracker_retry_at = now + self.config.reconnect_min,
        }
    }

    fn tracker_open(&self) -> Option<ConnId> {
        self.tracker
            .filter(|&t| self.conns.get(t).is_some_and(Conn::is_open))
    }

    /// Forget a connection whose socket is gone: its work moves elsewhere.
    fn forget_conn(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let (role, file, addr, opened) = (
            c.role,
            c.file,
            c.listen_addr(),
            c.bitfield_in || c.bitfield_out,
        );
        self.release_work(id, false);
        if let Some(c) = self.conns.get_mut(id) {
            if c.upload_slot {
                c.upload_slot = false;
                self.slots_used -= 1;
            }
        }
        self.conns.remove(id);
        match role {
            Role::Tracker => {
                self.tracker = None;
                if self.registered.take().is_some() || !self.leaving {
                    self.event(PeerEvent::TrackerLost);
                }
                let jitter = self.rng.next_u64() % (self.tracker_backoff.total_micros() / 4 + 1);
                self.tracker_retry_at =
                    self.now + self.tracker_backoff + Duration::from_micros(jitter);
                self.tracker_backoff =
                    (self.tracker_backoff.saturating_mul(2)).min(self.config.reconnect_max);
            }
            Role::Peer { .. } => {
                for cand in self.candidates.iter_mut().flatten() {
                    if cand.conn == Some(id) {
                        cand.conn = None;
                        cand.failures = cand.failures.saturating_add(1);
                        let backoff =
                            Duration::from_secs(1).saturating_mul(1 << cand.failures.min(5));
                        cand.retry_at = self.now + backoff;
                    }
                }
                if let (Some(slot), true) = (file, opened) {
                    self.event(PeerEvent::PeerLost { slot, addr });
                }
            }
        }
    }

    fn close_now(&mut self, id: ConnId) {
        self.release_work(id, false);
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.upload_slot {
            c.upload_slot = false;
            self.slots_used -= 1;
        }
        if matches!(c.phase, Phase::Connecting { asked: false }) {
            // The adapter never heard of it.
            self.forget_conn(id);
            return;
        }
        let was_tracker = c.role == Role::Tracker;
        c.phase = Phase::Closed;
        c.ctl.clear();
        c.serve.clear();
        if was_tracker {
            self.tracker = None;
            self.registered = None;
            if !self.leaving {
                self.tracker_retry_at = self.now + self.tracker_backoff;
                self.tracker_backoff =
                    (self.tracker_backoff.saturating_mul(2)).min(self.config.reconnect_max);
                self.event(PeerEvent::TrackerLost);
            }
        } else {
            let file = c.file;
            let addr = c.listen_addr();
            let opened = c.bitfield_in;
            for cand in self.candidates.iter_mut().flatten() {
                if cand.conn == Some(id) {
                    cand.conn = None;
                    cand.retry_at = self.now + Duration::from_secs(2);
                }
            }
            if let (Some(slot), true) = (file, opened) {
                self.event(PeerEvent::PeerLost { slot, addr });
            }
        }
    }

    fn close_after_flush(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            c.phase = if c.ctl.is_empty() {
                Phase::Closed
            } else {
                Phase::Closing
            };
        }
    }

    fn misbehaved(&mut self, id: ConnId, offence: Offence) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let addr = c.listen_addr();
        let node = c.hello.map(|h| h.node);
        self.event(PeerEvent::Misbehaved { addr, offence });
        if let Some(node) = node {
            self.strike(node, addr);
        }
        self.close_now(id);
    }

    /// One strike against a remote; at `ban_after` strikes it is banned.
    fn strike(&mut self, node: NodeId, addr: SocketAddr) {
        let ban_after = self.config.ban_after;
        let entry = self
            .reputation
            .iter_mut()
            .find(|(n, a, _)| *n == node || *a == addr);
        let strikes = match entry {
            Some(e) => {
                e.2 = e.2.saturating_add(1);
                e.2
            }
            None => {
                if self.reputation.is_full() {
                    self.reputation.pop_front();
                }
                let _ = self.reputation.push_back((node, addr, 1));
                1
            }
        };
        if strikes == ban_after {
            self.event(PeerEvent::PeerBanned { node, addr });
            let ids: Vec<ConnId, C> = self
                .conns
                .iter()
                .filter(|(_, c)| c.hello.is_some_and(|h| h.node == node) || c.listen_addr() == addr)
                .map(|(id, _)| id)
                .collect();
            for id in ids {
                self.close_now(id);
            }
        }
    }

    fn banned(&self, node: NodeId, addr: SocketAddr) -> bool {
        self.reputation
            .iter()
            .any(|(n, a, s)| (*n == node || *a == addr) && *s >= self.config.ban_after)
    }

    fn check_handshakes(&mut self, now: Instant) {
        let late: Vec<ConnId, C> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Handshake { deadline } if deadline <= now))
            .map(|(id, _)| id)
            .collect();
        for id in late {
            self.close_now(id);
        }
    }

    fn ping_round(&mut self, now: Instant) {
        self.next_ping = now + self.config.ping_interval;
        let max = self.config.max_missed_pings;
        let mut dead: Vec<ConnId, C> = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if !c.is_open() {
                continue;
            }
            if c.missed_pings >= max {
                let _ = dead.push(id);
                continue;
            }
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            if c.ctl.push_back(Ctl::Ping(self.ping_nonce)).is_ok() {
                c.missed_pings += 1;
            }
        }
        for id in dead {
            self.close_now(id);
        }
    }

    fn release_idle_slots(&mut self, now: Instant) {
        for (_, c) in self.conns.iter_mut() {
            if c.upload_slot && c.serve.is_empty() && now - c.last_served >= SLOT_IDLE {
                c.upload_slot = false;
                self.slots_used -= 1;
            }
        }
    }

    /// Open connections to holders of files being fetched, up to the per-file limit.
    ///
    /// Each new connection goes to a candidate chosen uniformly among those eligible: the
    /// tracker lists holders in the same order for everyone, and taking them in that order
    /// would pile every fetcher onto the first few.
    fn connect_candidates(&mut self) {
        while !self.leaving {
            // Keep one slot for the tracker and one for a peer that connects to us.
            if self.conns.iter().count() + 2 > C {
                return;
            }
            let eligible: Vec<usize, C> = (0..C).filter(|&i| self.can_dial(i)).collect();
            if eligible.is_empty() {
                return;
            }
            let i = eligible[(self.rng.next_u64() % eligible.len() as u64) as usize];
            let Some(cand) = self.candidates[i] else {
                return;
            };
            let mut conn = Conn::new(
                Role::Peer { outgoing: true },
                cand.peer.addr,
                Phase::Connecting { asked: false },
                self.now,
                &mut self.rng,
            );
            conn.file = Some(cand.slot);
            let Ok(id) = self.conns.insert(conn) else {
                return;
            };
            if let Some(c) = self.candidates[i].as_mut() {
                c.conn = Some(id);
            }
        }
    }

    /// Whether candidate `i` may be dialled now.
    fn can_dial(&self, i: usize) -> bool {
        let Some(cand) = self.candidates[i] else {
            return false;
        };
        if cand.conn.is_some() || cand.retry_at > self.now {
            return false;
        }
        let wanted = self
            .file(cand.slot)
            .is_some_and(|f| f.fetching && f.header().is_some() && !f.have.is_full());
        // Connections we opened count against the limit: peers that reach us are welcome on
        // top, and counting them would leave a popular early peer with no say in its
        // neighbours. But a peer few others chose keeps dialling up to twice the limit in all,
        // or it would download from fewer sources than the rest and finish last.
        let ours = |c: &Conn<W>| c.file == Some(cand.slot) && !matches!(c.role, Role::Tracker);
        let dialed = self
            .conns
            .iter()
            .filter(|(_, c)| ours(c) && c.role == (Role::Peer { outgoing: true }))
            .count();
        let all = self.conns.iter().filter(|(_, c)| ours(c)).count();
        let already = self.conns.iter().any(|(_, c)| {
            c.file == Some(cand.slot)
                && (c.hello.is_some_and(|h| h.node == cand.peer.node)
                    || c.listen_addr() == cand.peer.addr)
        });
        let max = self.config.max_conns_per_file;
        wanted
            && (dialed < max || all < max.saturating_mul(2))
            && !already
            && !self.banned(cand.peer.node, cand.peer.addr)
    }

    fn add_candidate(&mut self, slot: u16, peer: PeerEntry) {
        if peer.node == self.config.node
            || peer.addr.port() == 0
            || self.banned(peer.node, peer.addr)
        {
            return;
        }
        if let Some(c) = self
            .candidates
            .iter_mut()
            .flatten()
            .find(|c| c.slot == slot && c.peer.node == peer.node)
        {
            c.peer.addr = peer.addr;
            return;
        }
        // A full table keeps a random sample: the new holder replaces a random one we are not
        // connected to. Keeping the first holders seen would give every fetcher the same ones.
        let free = match self.candidates.iter().position(Option::is_none) {
            Some(i) => Some(i),
            None => {
                let idle: Vec<usize, C> = (0..C)
                    .filter(|&i| self.candidates[i].is_some_and(|c| c.conn.is_none()))
                    .collect();
                let pick = self.rng.next_u64() as usize;
                (!idle.is_empty()).then(|| idle[pick % idle.len()])
            }
        };
        if let Some(i) = free {
            self.candidates[i] = Some(Candidate {
                slot,
                peer,
                retry_at: self.now,
                failures: 0,
                conn: None,
            });
        }
    }

    // ---- messages ----------------------------------------------------------------------

    fn ctl(&mut self, id: ConnId, ctl: Ctl) {
        if let Some(c) = self.conns.get_mut(id) {
            // Remote-driven replies are bounded by backpressure in handle_recv (a full queue
            // stops reading); our own control frames are few. A frame that still does not fit
            // is one we can do without (a ping, a cancel) or will redo on the next tick.
            let _ = c.ctl.push_back(ctl);
        }
    }

    fn event(&mut self, e: PeerEvent) {
        if self.events.push_back(e).is_err() {
            self.events_lost = self.events_lost.saturating_add(1);
        }
    }

    fn on_message(&mut self, id: ConnId, msg: Message) {
        let banned = match (&msg, self.conns.get(id)) {
            (Message::Hello(h), Some(c)) => {
                self.banned(h.node, SocketAddr::new(c.remote.ip(), h.listen_port))
            }
            _ => false,
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let role = c.role;
        if c.hello.is_none() {
            let Message::Hello(h) = msg else {
                self.misbehaved(id, Offence::Unexpected);
                return;
            };
            if h.version != PROTOCOL_VERSION || h.node == self.config.node || banned {
                self.close_now(id);
                return;
            }
            c.hello = Some(h);
            let side = c.side();
            if side == Side::Acceptor {
                self.ctl(id, Ctl::Hello);
            }
            match (self.config.swarm_key.is_some(), side) {
                (false, _) => self.opened(id),
                // The opener proves first; the acceptor waits for that proof (see `auth`).
                (true, Side::Opener) => self.ctl(id, Ctl::Auth),
                (true, Side::Acceptor) => {}
            }
            return;
        }
        if matches!(c.phase, Phase::Handshake { .. }) {
            self.check_proof(id, msg);
            return;
        }
        match role {
            Role::Tracker => self.on_tracker_message(id, msg),
            Role::Peer { .. } => self.on_peer_message(id, msg),
        }
    }

    /// The handshake is done: the connection can carry requests.
    fn opened(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.phase = Phase::Open;
        let role = c.role;
        if self.config.swarm_key.is_some() {
            self.greet(id);
        }
        if role == Role::Tracker {
            self.event(PeerEvent::TrackerReady);
        }
    }

    /// With a swarm key, after the Hellos: the remote's proof, or the end of the connection.
    fn check_proof(&mut self, id: ConnId, msg: Message) {
        let (Some(key), Some(c)) = (self.config.swarm_key, self.conns.get(id)) else {
            return;
        };
        let Some(theirs) = c.hello.map(|h| h.nonce) else {
            return;
        };
        let side = c.side();
        let addr = c.listen_addr();
        let role = c.role;
        match msg {
            Message::Auth { proof } if key.verify(side.other(), &theirs, &c.nonce, &proof) => {
                if side == Side::Acceptor {
                    self.ctl(id, Ctl::Auth);
                }
                self.opened(id);
            }
            // The acceptor refused our proof (or has no key).
            Message::Refused(reason) if side == Side::Opener => {
                match role {
                    Role::Tracker => self.event(PeerEvent::TrackerRefused(reason)),
                    Role::Peer { .. } => self.event(PeerEvent::SwarmKeyMismatch {
                        addr,
                        by_remote: true,
                    }),
                }
                self.close_now(id);
            }
            _ => {
                if side == Side::Acceptor {
                    self.ctl(id, Ctl::Refused(Refusal::SwarmKey));
                }
                if role != Role::Tracker {
                    self.event(PeerEvent::SwarmKeyMismatch {
                        addr,
                        by_remote: false,
                    });
                }
                self.close_after_flush(id);
            }
        }
    }

    fn on_tracker_message(&mut self, id: ConnId, msg: Message) {
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Pong(n)),
            Message::Pong(_) => {}
            Message::Registered { addr } => {
                self.registered = Some(addr);
                self.tracker_backoff = self.config.reconnect_min;
                self.event(PeerEvent::Registered { addr });
                for slot in 0..F as u16 {
                    self.announce_file(slot);
                }
            }
            Message::Refused(reason) => {
                self.event(PeerEvent::TrackerRefused(reason));
                self.close_now(id);
            }
            Message::PeerListItem(p) => {
                let _ = self.peer_list_next.push(p);
            }
            Message::PeerListEnd { count } => {
                if usize::from(count) == self.peer_list_next.len() {
                    core::mem::swap(&mut self.peer_list, &mut self.peer_list_next);
                    self.event(PeerEvent::PeerList { count });
                }
                self.peer_list_next.clear();
            }
            Message::Published { file } => self.event(PeerEvent::Published { file }),
            Message::PublishRefused { file, reason } => {
                self.event(PeerEvent::PublishRefused { file, reason })
            }
            Message::FileItem(e) if self.user_list => self.event(PeerEvent::FileListed(e)),
            Message::FileListEnd { count } if self.user_list => {
                self.user_list = false;
                self.event(PeerEvent::FileListEnd { count });
            }
            Message::FileItem(_) | Message::FileListEnd { .. } => {}
            Message::HolderItem(item) => {
                if let Some(slot) = self.slot_of(&item.file) {
                    if self.file(slot).is_some_and(|f| f.fetching) {
                        self.add_candidate(slot, item.peer);
                    }
                    if self.file(slot).is_some_and(|f| f.user_locate) {
                        self.event(PeerEvent::Holder(item));
                    }
                } else if self.user_locates_untracked == Some(item.file) {
                    self.event(PeerEvent::Holder(item));
                }
            }
            Message::LocateEnd { file, holders } => {
                if let Some(slot) = self.slot_of(&file) {
                    let f = self.file_mut(slot);
                    let mut tell = false;
                    if let Some(f) = f {
                        f.located = true;
                        if !f.tracker_knows {
                            f.tracker_knows = true;
                            f.tracker.full_from = (f.have.count() > 0).then_some(0);
                        }
                        tell = core::mem::take(&mut f.user_locate);
                    }
                    if tell {
                        self.event(PeerEvent::LocateEnd { file, holders });
                    }
                } else if self
                    .user_locates_untracked
                    .take_if(|f| *f == file)
                    .is_some()
                {
                    self.event(PeerEvent::LocateEnd { file, holders });
                }
            }
            Message::NotFound { file } => {
                if let Some(slot) = self.slot_of(&file) {
                    if let Some(f) = self.file_mut(slot) {
                        f.tracker_knows = false;
                        f.located = true;
                        f.user_locate = false;
                        if let ManifestState::Wanted { .. } = f.manifest {
                            f.manifest = ManifestState::Wanted { asked: None };
                        }
                    }
                } else {
                    self.user_locates_untracked.take_if(|f| *f == file);
                }
                self.event(PeerEvent::NotFound { file });
            }
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }

    fn start_manifest(&mut self, id: ConnId, file: FileId, header: ManifestHeader) {
        let Some(slot) = self.slot_of(&file) else {
            return;
        };
        let wanted = self
            .file(slot)
            .is_some_and(|f| matches!(f.manifest, ManifestState::Wanted { .. }));
        let receiving = self
            .conns
            .iter()
            .any(|(_, c)| matches!(&c.sink, Sink::Hashes { slot: s, .. } if *s == slot));
        // One manifest streams in at a time; another copy is read past and dropped.
        if !wanted || receiving || self.pending_header.is_some() {
            return;
        }
        let hasher = FileIdHasher::new(&header);
        if header.chunk_count() == 0 {
            self.finish_manifest(slot, hasher, header);
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.sink = Sink::Hashes {
                slot,
                hasher,
                offset: 0,
            };
        }
        // Keep the header until the hashes are checked.
        let now = self.now;
        if let Some(f) = self.file_mut(slot) {
            f.manifest = ManifestState::Wanted { asked: Some(now) };
        }
        self.pending_header = Some((slot, header));
    }

    fn finish_manifest(&mut self, slot: u16, hasher: FileIdHasher, header: ManifestHeader) {
        let Some(f) = self.file(slot) else {
            return;
        };
        if hasher.finish() != Some(f.id) {
            self.discard_hashes |= 1 << slot;
            self.event(PeerEvent::ManifestRejected { slot });
            return;
        }
        let count = header.chunk_count();
        let (Ok(have), Ok(busy)) = (self.bitmap(count), self.bitmap(count)) else {
            self.fail_fetch(
                slot,
                FetchFailure::TooManyChunks {
                    max: Self::MAX_FILE_CHUNKS,
                },
            );
            return;
        };
        let now = self.now;
        if let Some(f) = self.file_mut(slot) {
            f.have = have;
            f.busy = busy;
            f.manifest = ManifestState::Known(header.clone());
            f.next_locate = now;
            f.locate_backoff = FIRST_LOCATE_DELAY;
            f.located = false;
            f.started = now;
        }
        if let Some(t) = self.tracker_open().filter(|_| self.registered.is_some()) {
            self.ctl(t, Ctl::Join(slot));
        }
        let file = self.file(slot).map(|f| f.id).unwrap_or_default();
        self.event(PeerEvent::ManifestReceived { slot, file, header });
        if count == 0 {
            self.complete_file(slot);
        } else {
            self.file_tick(slot, now);
        }
    }

    fn on_peer_message(&mut self, id: ConnId, msg: Message) {
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Pong(n)),
            Message::Pong(_) => {}
            Message::Bitfield { file, chunks } => self.on_bitfield(id, file, chunks),
            Message::Have { file, ranges } => {
                let Some(slot) = self.conn_slot(id, &file) else {
                    self.misbehaved(id, Offence::Unexpected);
                    return;
                };
                let count = self.chunk_count(slot);
                if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
                    self.misbehaved(id, Offence::BadRange);
                    return;
                }
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                for r in &ranges {
                    c.remote_has.set_range(*r);
                }
                if !c.remote_has.is_full() {
                    self.prefer_swarm(slot, &ranges);
                }
            }
            Message::Request(b) => self.on_request(id, b),
            Message::Cancel(b) => {
                if self.conn_slot(id, &b.file).is_none() {
                    self.misbehaved(id, Offence::Unexpected);
                    return;
                }
                if let Some(c) = self.conns.get_mut(id) {
                    retain(&mut c.serve, |s| *s != Blk::of(&b));
                }
            }
            Message::Block(b) => self.on_block(id, b),
            Message::Reject { block, reason } => self.on_reject(id, block, reason),
            Message::GetManifest { file } => {
                let known = self
                    .slot_of(&file)
                    .filter(|&s| self.file(s).is_some_and(|f| f.header().is_some()));
                match known {
                    Some(slot) => self.ctl(id, Ctl::Manifest(slot)),
                    None => self.ctl(id, Ctl::NotFound(file)),
                }
            }
            Message::NotFound { .. } => self.close_now(id),
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            // The remote has a swarm key and we have none (or the other way round).
            Message::Auth { .. } | Message::Refused(Refusal::SwarmKey) => {
                if let Some(c) = self.conns.get(id) {
                    let by_remote = matches!(msg, Message::Refused(_));
                    let addr = c.listen_addr();
                    if !by_remote {
                        self.ctl(id, Ctl::Refused(Refusal::SwarmKey));
                    }
                    self.event(PeerEvent::SwarmKeyMismatch { addr, by_remote });
                    self.close_after_flush(id);
                }
            }
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }

    /// The slot of `file` if it is what connection `id` is about.
    fn conn_slot(&self, id: ConnId, file: &FileId) -> Option<u16> {
        let slot = self.conns.get(id)?.file?;
        (self.file(slot)?.id == *file).then_some(slot)
    }

    fn on_bitfield(&mut self, id: ConnId, file: FileId, chunks: u32) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let incoming = c.role == (Role::Peer { outgoing: false });
        let slot = match c.file {
            Some(s) if self.file(s).is_some_and(|f| f.id == file) => s,
            None if incoming => {
                let known = self
                    .slot_of(&file)
                    .filter(|&s| self.file(s).is_some_and(|f| f.header().is_some()));
                let Some(s) = known else {
                    // We do not have (the manifest of) that file.
                    self.ctl(id, Ctl::NotFound(file));
                    self.close_after_flush(id);
                    return;
                };
                s
            }
            _ => {
                self.misbehaved(id, Offence::Unexpected);
                return;
            }
        };
        let count = self.chunk_count(slot);
        if chunks != count || c.bitfield_in {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        // Two connections between the same pair for the same file: keep the one opened by
        // the lower node id, so both ends agree which one goes.
        let node = c.hello.map(|h| h.node).unwrap_or_default();
        let outgoing = !incoming;
        let dup = self.conns.iter().find(|(other, oc)| {
            *other != id
                && oc.file == Some(slot)
                && oc.hello.is_some_and(|h| h.node == node)
                && oc.is_open()
        });
        if dup.is_some() {
            let opener_is_me = outgoing;
            let keep_this = if opener_is_me {
                self.config.node < node
            } else {
                node < self.config.node
            };
            if !keep_this {
                self.close_now(id);
                return;
            }
            if let Some((other, _)) = dup {
                self.close_now(other);
            }
        }
        let Ok(bits) = ChunkBitmap::new(count) else {
            return;
        };
        let addr;
        let mut reply = false;
        {
            let Some(c) = self.conns.get_mut(id) else {
                return;
            };
            c.file = Some(slot);
            c.remote_has = bits;
            c.sink = Sink::Bitfield { pos: 0 };
            if !c.bitfield_out {
                reply = true;
            }
            addr = c.listen_addr();
        }
        if reply {
            self.ctl(id, Ctl::Bitfield(slot));
        }
        if let Some(c) = self.conns.get_mut(id) {
            if chunks == 0 {
                c.sink = Sink::None;
                c.bitfield_in = true;
            }
        }
        self.event(PeerEvent::PeerConnected { slot, addr });
    }

    fn on_request(&mut self, id: ConnId, b: BlockRef) {
        let Some(slot) = self.conn_slot(id, &b.file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let Some(f) = self.file(slot) else {
            return;
        };
        let Some(h) = f.header() else {
            return;
        };
        let chunk_len = h.chunk_len(b.chunk);
        let reason = if b.chunk >= h.chunk_count()
            || b.len == 0
            || u64::from(b.offset) + u64::from(b.len) > u64::from(chunk_len)
        {
            Some(RejectReason::OutOfRange)
        } else if !f.have.get(b.chunk) {
            Some(RejectReason::NotHeld)
        } else {
            None
        };
        let b = Blk::of(&b);
        if let Some(reason) = reason {
            self.ctl(id, Ctl::Reject(b, reason));
            return;
        }
        let slots = self.config.upload_slots;
        let free = self.slots_used < slots;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.upload_slot {
            if !free {
                self.ctl(id, Ctl::Reject(b, RejectReason::Busy));
                return;
            }
            c.upload_slot = true;
            c.last_served = self.now;
            self.slots_used += 1;
        }
        if c.serve.push_back(b).is_err() {
            // handle_recv stops reading while the queue is full, so this is a remote that
            // pipelines more than it may: refuse the excess.
            self.ctl(id, Ctl::Reject(b, RejectReason::Busy));
        }
    }

    fn on_reject(&mut self, id: ConnId, b: BlockRef, reason: RejectReason) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.file
            .and_then(|s| self.files[s as usize].as_ref())
            .map(|f| f.id)
            != Some(b.file)
        {
            return;
        }
        retain(&mut c.reqs, |r| r.block != Blk::of(&b));
        match reason {
            RejectReason::Busy => c.pause_until = self.now + BUSY_PAUSE,
            RejectReason::NotHeld | RejectReason::OutOfRange => {
                c.remote_has.clear(b.chunk);
            }
        }
        if let Some(slot) = c.file {
            if let Some(i) = self.active_index(slot, b.chunk) {
                self.release_chunk_from(i, id);
            }
        }
    }

    fn on_block(&mut self, id: ConnId, b: BlockRef) {
        let now = self.now;
        let Some(slot) = self.conn_slot(id, &b.file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let pos = c
            .reqs
            .iter()
            .position(|r| r.block == Blk::of(&b) && r.sent.is_some());
        let mut active = None;
        if let Some(pos) = pos {
            if pos == 0 {
                if let Some(sent) = c.reqs.front().and_then(|r| r.sent) {
                    let sample = now - sent;
                    c.rtt = Some(c.rtt.map_or(sample, |r| r.min(sample)));
                }
            }
            retain_index(&mut c.reqs, pos);
            let addr = c.listen_addr();
            let node = c.hello.map(|h| h.node).unwrap_or_default();
            if let Some(i) = self.active_index(slot, b.chunk) {
                if let Some(a) = self.active[i].as_mut() {
                    if a.receiving.is_none() && a.frontier == b.offset && a.digest.is_none() {
                        a.receiving = Some(id);
                        a.receiving_end = b.offset + b.len;
                        if !a.contributors.iter().any(|(c, _, _)| *c == id) {
                            let _ = a.contributors.push((id, addr, node));
                        }
                        active = Some(i);
                    }
                }
            }
        } else {
            let excess = u64::from(b.len).saturating_sub(c.cancelled);
            c.cancelled = c.cancelled.saturating_sub(u64::from(b.len));
            c.unsolicited += excess;
            // Blocks asked for and then cancelled may still come; more than that is abuse.
            if c.unsolicited > 8 * u64::from(self.config.block_len.max(b.len)) {
                self.misbehaved(id, Offence::Unsolicited);
                return;
            }
        }
        let file_offset = self
            .file(slot)
            .and_then(|f| f.header())
            .map_or(0, |h| h.chunk_offset(b.chunk) + u64::from(b.offset));
        if let Some(c) = self.conns.get_mut(id) {
            c.sink = if b.len == 0 {
                Sink::None
            } else {
                Sink::Block {
                    active,
                    slot,
                    chunk: b.chunk,
                    file_offset,
                }
            };
        }
    }

    fn on_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>> {
        let now = self.now;
        let c = self.conns.get_mut(id)?;
        c.rate.add(now, data.len() as u64);
        let write = match &mut c.sink {
            Sink::None => None,
            Sink::Block {
                active,
                slot,
                chunk,
                file_offset,
            } => {
                let offset = *file_offset;
                *file_offset += data.len() as u64;
                let (slot, chunk) = (*slot, *chunk);
                let target = *active;
                match target.and_then(|i| self.active[i].as_mut()) {
                    Some(a) if a.receiving == Some(id) && a.chunk == chunk && a.slot == slot => {
                        a.sha.update(data);
                        a.frontier += data.len() as u32;
                        if let Some(f) = self.files[slot as usize].as_mut() {
                            f.rate.add(now, data.len() as u64);
                        }
                        Some(StorageWrite {
                            key: key(slot, Region::Data),
                            offset,
                            data,
                        })
                    }
                    _ => None,
                }
            }
            Sink::Bitfield { pos } => {
                for (k, byte) in data.iter().enumerate() {
                    let base = (*pos + k as u32) * 8;
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            c.remote_has.set(base + bit);
                        }
                    }
                }
                *pos += data.len() as u32;
                None
            }
            Sink::Hashes {
                slot,
                hasher,
                offset,
            } => {
                hasher.update(data);
                let at = *offset;
                *offset += data.len() as u64;
                Some(StorageWrite {
                    key: key(*slot, Region::Hashes),
                    offset: at,
                    data,
                })
            }
        };
        if remaining == 0 {
            self.end_body(id);
        }
        write
    }

    fn end_body(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        match core::mem::replace(&mut c.sink, Sink::None) {
            Sink::None => {}
            Sink::Block { active, chunk, .. } => self.end_block(id, active, chunk),
            Sink::Bitfield { .. } => {
                c.bitfield_in = true;
                let partial = !c.remote_has.is_full();
                if let (Some(slot), true) = (c.file, partial) {
                    let all = [ChunkRange {
                        start: 0,
                        end: c.remote_has.len(),
                    }];
                    self.prefer_swarm(slot, &all);
                }
            }
            Sink::Hashes { slot, hasher, .. } => {
                if let Some((s, header)) = self.pending_header.take() {
                    if s == slot {
                        self.finish_manifest(slot, hasher, header);
                    }
                }
            }
        }
    }
}

impl<const C: usize, const F: usize, const W: usize, const A: usize> Outputs for Peer<C, F, W, A> {
    type Event = PeerEvent;
    fn drain_state(&mut self) -> &mut Drain {
        &mut self.drain
    }
    fn next_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        self.poll_transmit(buf)
    }
    fn next_action(&mut self) -> Option<Action> {
        self.poll_action()
    }
    fn next_event(&mut self) -> Option<PeerEvent> {
        self.poll_event()
    }
    fn next_timeout(&self) -> Instant {
        self.poll_timeout()
    }
}

fn key(slot: u16, region: Region) -> StorageKey {
    StorageKey { slot, region }
}

/// Bytes of the held chunks of a file.
fn held_bytes<const W: usize>(f: &File<W>) -> u64 {
    let Some(h) = f.header() else {
        return 0;
    };
    let mut bytes = 0;
    let mut from = 0;
    while let Some(r) = f.have.next_range(from) {
        bytes += (r.start..r.end)
            .map(|c| u64::from(h.chunk_len(c)))
            .sum::<u64>();
        from = r.end;
    }
    bytes
}

/// Keeps the entries of `q` for which `keep` holds, in order.
fn retain<T, const N: usize>(q: &mut Deque<T, N>, mut keep: impl FnMut(&T) -> bool) {
    for _ in 0..q.len() {
        if let Some(x) = q.pop_front() {
            if keep(&x) {
                // Re-pushing what was just popped always fits.
                let _ = q.push_back(x);
            }
        }
    }
}

/// Removes entry `index` of `q`, keeping the order of the rest.
fn retain_index<T, const N: usize>(q: &mut Deque<T, N>, index: usize) {
    let mut i = 0;
    retain(q, |_| {
        let keep = i != index;
        i += 1;
        keep
    });
}
