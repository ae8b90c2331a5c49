//! What a peer is told: its settings ([`PeerConfig`]) and why a command is refused
//! ([`CommandError`]).

use core::net::SocketAddr;

use crate::auth::SwarmKey;
use crate::time::Duration;
use crate::wire::NodeId;

/// Settings for a [`Peer`](super::Peer).
#[derive(Clone, Copy, Debug)]
pub struct PeerConfig {
    /// This peer's node id.
    pub node: NodeId,
    /// The port this peer accepts connections on (0: it accepts none).
    pub listen_port: u16,
    /// The trackers of the swarm (none: a peer that only talks to peers it is given or told
    /// of). It registers with [`PeerConfig::trackers_per_peer`] of them, each on a connection
    /// of its own; each is told everything this peer holds, and holders are located through
    /// every one registered.
    pub trackers: Trackers,
    /// How many of the trackers this peer registers with at once. Each peer ranks the
    /// trackers by a hash of its node id and each tracker's address (rendezvous hashing) and
    /// takes the first ones, so a swarm's peers spread evenly: with 4 trackers and 2 per peer,
    /// each tracker holds half the swarm, and a swarm can outgrow what one tracker holds.
    /// While one of its picks is unreachable, the next in its ranking stands in. Default 2.
    pub trackers_per_peer: u8,
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
    /// Connections served at once. Default 64: every connection a default peer holds. In a
    /// swarm every peer's upload is needed all the time, and a slot held by one downloader is
    /// one a late joiner waits for (the simulator's 20-peer swarm: efficiency 0.66 with 16
    /// slots, 0.86 with one per connection).
    pub upload_slots: usize,
    /// A peer sharing a file whole offers it chunk by chunk until it has sent every chunk once
    /// (super-seeding, see `peer/seeding.rs`), so downloaders pass chunks on instead of all
    /// asking the seeder. Default on.
    pub super_seed: bool,
    /// Upload limit in bytes per second; `None` for no limit.
    pub upload_rate: Option<u64>,
    /// Download limit in bytes per second; `None` for no limit. Block requests wait for
    /// tokens, so this peer never asks for more than that (what arrives follows what was
    /// asked; a remote that sends unasked is cut off anyway).
    pub download_rate: Option<u64>,
    /// Half the connections a file has at most, both ways: a peer fetching it dials holders
    /// while the file has fewer than twice this many, and takes connections from others up to
    /// the same number. Twice, so that a peer few others chose reaches as many sources as one
    /// many chose; the same bound both ways, so that a peer everyone dials first (the seeder,
    /// the first to register) does not gather most of a swarm's connections while the late
    /// joiners' uplinks idle (the simulator's 100-peer swarm with 64 connections per peer:
    /// 0.68 without the inbound bound, 0.83 with it). Default 16: sources enough that a peer
    /// few others chose still fills its downlink (the simulator's 100-peer swarm: efficiency
    /// 0.57 with 8, 0.73 with 16).
    pub max_conns_per_file: usize,
    /// Most bytes asked for and not yet received on one connection. Default 4 MiB.
    pub max_in_flight: u32,
    /// How often connections are pinged; also how long a new connection has to finish its
    /// handshake (short, because until then it holds a slot having done nothing). Default 5 s.
    pub ping_interval: Duration,
    /// Pings in a row left unanswered before a connection is dropped. Default 3.
    pub max_missed_pings: u8,
    /// Most inbound connections from one IP address, so one host cannot take every slot.
    /// Default 16.
    pub max_conns_per_ip: u8,
    /// Most connections at once, the tracker's included. Default 64. With heap memory the
    /// table grows to this on demand; with memory passed in, the smaller of this and that
    /// memory's size counts.
    pub max_conns: u16,
    /// Most files shared or fetched at once. Default 4,096 (each costs about `W * 8` bytes of
    /// bitmaps and its manifest header; see the peer's module docs).
    pub max_files: u16,
    /// Most chunks in flight at once, over all fetches. Default 128.
    pub max_active: u16,
    /// Most blocks a chunk may have for this peer to fetch it: each chunk in flight keeps the
    /// leaves of its blocks, 32 bytes each. Default 1,024 (16 MiB chunks, the largest there
    /// are); with memory passed in, the smaller of this and what that memory holds.
    pub max_chunk_blocks: u16,
    /// Whether storage can write a block again in place. A file can; flash, programmed only
    /// where it was erased, cannot: with `false` a block that fails its leaf restarts its whole
    /// chunk (whose first write erases the sector again) instead of just itself. Default true.
    pub rewrite_blocks: bool,
    /// Serve blocks of chunks still being fetched, as each is verified (and say so with
    /// [`Message::Started`](crate::wire::Message::Started)), so a block crosses a swarm in
    /// hops of one block rather than one chunk. Needs storage that keeps the leaves it is
    /// given: a device whose flash store computes leaves from whole chunks sets false.
    /// Default true.
    pub serve_partial: bool,
    /// Where the digest of each received block comes from. Default [`BlockCheck::Inline`].
    pub block_check: BlockCheck,

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
    /// Defaults for a peer with this node id, listen port and tracker (more trackers go into
    /// [`PeerConfig::trackers`]).
    pub fn new(node: NodeId, listen_port: u16, tracker: Option<SocketAddr>) -> Self {
        PeerConfig {
            node,
            listen_port,
            trackers: Trackers::from(tracker),
            trackers_per_peer: 2,
            register: true,
            rng_seed: u64::from_le_bytes([
                node.0[0], node.0[1], node.0[2], node.0[3], node.0[4], node.0[5], node.0[6],
                node.0[7],
            ]),
            swarm_key: None,
            block_len: 64 * 1024,
            upload_slots: 64,
            super_seed: true,
            upload_rate: None,
            download_rate: None,
            max_conns_per_file: 16,
            max_in_flight: 4 << 20,
            ping_interval: Duration::from_secs(5),
            max_missed_pings: 3,
            max_conns_per_ip: 16,
            max_conns: 64,
            max_files: 4_096,
            max_active: 128,
            max_chunk_blocks: crate::manifest::MAX_CHUNK_BLOCKS as u16,
            rewrite_blocks: true,
            serve_partial: true,
            block_check: BlockCheck::Inline,
            stall_timeout: Duration::from_secs(5),
            locate_interval: Duration::from_secs(3),
            fetch_deadline: None,
            ban_after: 2,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// The most trackers one peer registers with. A link names the trackers of its swarm; more
/// than a few adds load on every tracker and no availability (see README, "Many trackers").
pub const MAX_TRACKERS: usize = 4;

/// The trackers of a [`PeerConfig`]: up to [`MAX_TRACKERS`] addresses, in the order given
/// (the first answers the user's queries while it is up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trackers {
    addrs: [Option<SocketAddr>; MAX_TRACKERS],
}

impl Trackers {
    /// Adds `addr` unless it is there already; `false` when all places are taken.
    pub fn push(&mut self, addr: SocketAddr) -> bool {
        if self.iter().any(|a| a == addr) {
            return true;
        }
        match self.addrs.iter_mut().find(|a| a.is_none()) {
            Some(place) => {
                *place = Some(addr);
                true
            }
            None => false,
        }
    }

    /// The tracker in place `i`.
    pub fn get(&self, i: usize) -> Option<SocketAddr> {
        self.addrs.get(i).copied().flatten()
    }

    /// The trackers, in order.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().copied()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.addrs[0].is_none()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The places of the trackers, best first for `node` (rendezvous hashing: each tracker's
    /// weight is a hash of the node id and its address, so every peer has its own order and
    /// the orders spread evenly over the trackers). The hash needs to mix, not to resist an
    /// adversary: a node that picks its id to pick its trackers gains nothing.
    pub fn ranked_for(&self, node: &NodeId) -> heapless::Vec<u8, MAX_TRACKERS> {
        let weight = |a: SocketAddr| {
            // FNV-1a over the bytes, then splitmix64's finaliser so every bit counts.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut mix = |bytes: &[u8]| {
                for &b in bytes {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            };
            mix(&node.0);
            match a.ip() {
                core::net::IpAddr::V4(ip) => mix(&ip.octets()),
                core::net::IpAddr::V6(ip) => mix(&ip.octets()),
            }
            mix(&a.port().to_le_bytes());
            h ^= h >> 30;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h ^= h >> 27;
            h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^ (h >> 31)
        };
        let n = self.len();
        let mut weights = [0u64; MAX_TRACKERS];
        for (i, w) in weights.iter_mut().enumerate().take(n) {
            *w = self.get(i).map_or(0, weight);
        }
        // At most four: picking the heaviest left each time is the whole sort (and keeps the
        // device's flash free of a general sort).
        let mut order = heapless::Vec::new();
        let mut taken = [false; MAX_TRACKERS];
        while order.len() < n {
            let best = (0..n)
                .filter(|&i| !taken[i])
                .max_by_key(|&i| (weights[i], core::cmp::Reverse(i)));
            let Some(best) = best else {
                break;
            };
            taken[best] = true;
            let _ = order.push(best as u8);
        }
        order
    }
}

impl From<Option<SocketAddr>> for Trackers {
    fn from(addr: Option<SocketAddr>) -> Self {
        let mut t = Trackers::default();
        if let Some(a) = addr {
            t.push(a);
        }
        t
    }
}

/// Where the digest of each received block comes from (see [`PeerConfig::block_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlockCheck {
    /// The peer hashes a block's bytes itself as they stream through, and checks the block
    /// the moment its last byte arrives. Nothing is read back and no RAM is needed beyond one
    /// running digest per chunk: the choice for a device and the simulator.
    Inline,
    /// The peer hands each block, once written, to the adapter with
    /// [`Action::HashBlock`](crate::io::Action::HashBlock) and takes the digest back through
    /// `handle_block_hash`, taking further bytes of the chunk meanwhile. The adapter can then
    /// hash on another core than the one receiving: on a host, hashing is four tenths of the
    /// receive path's time (BENCHMARKS.md), so this is what lets one download use two cores.
    Deferred,
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
    /// The file's chunks have more blocks than this peer keeps leaves for.
    ChunkTooLarge {
        /// The largest chunk this peer can fetch, in bytes.
        max: u32,
    },
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
            CommandError::ChunkTooLarge { max } => write!(
                f,
                "the file's chunks are larger than the {} KiB this peer can verify",
                max / 1024
            ),
        }
    }
}

impl core::error::Error for CommandError {}
