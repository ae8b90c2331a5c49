//! What a tracker is told ([`TrackerConfig`]) and what it tells its operator
//! ([`TrackerEvent`], with why a peer left, what a remote did wrong and which table was full).

use core::net::SocketAddr;

use crate::auth::SwarmKey;
pub use crate::conn::Offence;
use crate::manifest::Name;
use crate::time::Duration;
use crate::wire::{FileId, NodeId, PublishRefusal, Refusal};

/// Settings for a [`Tracker`](super::Tracker).
#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    /// The tracker's own node id, sent in its `Hello`.
    pub node: NodeId,
    /// How often each connection is pinged. Default 5 s.
    pub ping_interval: Duration,
    /// Pings in a row a connection may leave unanswered before it is dropped. Default 3.
    pub max_missed_pings: u8,
    /// How long a new connection has to send its `Hello` (and, with a swarm key, its proof).
    /// Short, because until then it holds a slot having done nothing. Default 5 s.
    pub handshake_timeout: Duration,
    /// Most registered peers (at most [`TrackerConfig::max_conns`]). Default 65,535.
    pub max_peers: usize,
    /// Most connections at once, registered or not (at most 65,535: a connection handle's
    /// index is 16 bits). Default 65,535. With heap memory the table grows to this on demand;
    /// with memory passed in, the smaller of this and that memory's size counts.
    pub max_conns: usize,
    /// Most files listed or being published at once. Default 4,096.
    pub max_files: usize,
    /// Most holdings (one per peer and file it holds chunks of). Default 1,048,576.
    pub max_holdings: usize,
    /// Most chunks a published file may have: every holding keeps one bit per chunk up to this,
    /// so it sets the RAM per holding (`max_chunks / 8` bytes). Default 8,192.
    pub max_chunks: u32,
    /// Most holders named in one locate answer. A swarm of thousands needs a handful of
    /// sources per peer, not all of them; each answer starts at a different holder, so the
    /// load spreads. Default 64.
    pub locate_holders: u16,
    /// Most events kept between two drains of `poll_output`; later ones are counted by
    /// [`Tracker::events_lost`](super::Tracker::events_lost). Default 4,096.
    pub max_events: usize,
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
            handshake_timeout: Duration::from_secs(5),
            max_peers: 65_535,
            max_conns: 65_535,
            max_files: 4_096,
            max_holdings: 1 << 20,
            max_chunks: 8_192,
            locate_holders: 64,
            max_events: 4_096,
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

impl core::fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LeaveReason::Left => "it said goodbye",
            LeaveReason::Disconnected => "its connection closed",
            LeaveReason::TimedOut => "it stopped answering pings",
            LeaveReason::Misbehaved => "it broke the protocol",
        })
    }
}

/// A table that was full when something needed a place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Table {
    /// The holdings table: a have-chunks update was not recorded.
    Holdings,
    /// One IP address reached its connection limit: a new connection from it was refused.
    ConnectionsPerIp,
    /// The connection table was full: a connection that had not registered was closed to
    /// make room for a new one (see the admission rule on the tracker).
    Connections,
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
