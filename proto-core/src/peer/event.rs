//! What a peer tells its user: [`PeerEvent`], with [`Progress`], [`FetchFailure`] and the
//! [`Offence`]s a remote can commit.

use core::net::SocketAddr;

pub use crate::conn::Offence;
use crate::manifest::ManifestHeader;
use crate::wire::{ChunkRange, FileEntry, FileId, HolderItem, NodeId, PublishRefusal, Refusal};

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
    /// Block bytes served to others from this file since it was added.
    pub bytes_uploaded: u64,
    /// Peers served at least one block of this file since it was added, told apart by node
    /// id (a peer that reconnects counts once; without a heap, each connection counts).
    pub peers_served: u16,
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
    /// The file's chunks have more blocks than this peer keeps leaves for.
    ChunkTooLarge {
        /// The largest chunk this peer can fetch, in bytes.
        max: u32,
    },
}

impl core::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FetchFailure::ManifestNotFound => {
                f.write_str("no tracker or peer had the file's manifest before the deadline")
            }
            FetchFailure::Unavailable { missing } => {
                write!(
                    f,
                    "{missing} chunks had no online holder before the deadline"
                )
            }
            FetchFailure::TooManyChunks { max } => {
                write!(
                    f,
                    "the file has more than the {max} chunks this peer can track"
                )
            }
            FetchFailure::Storage => f.write_str("storage failed"),
            FetchFailure::ChunkTooLarge { max } => write!(
                f,
                "the file's chunks are larger than the {} KiB this peer can verify",
                max / 1024
            ),
        }
    }
}

/// What happened, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PeerEvent {
    /// Registered with a tracker, which recorded this address for us.
    Registered {
        /// The recorded address.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
        /// The tracker.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        tracker: SocketAddr,
    },
    /// A tracker answered our hello: queries ([`Peer::list_files`](super::Peer::list_files),
    /// [`Peer::locate`](super::Peer::locate)) can be sent now.
    TrackerReady {
        /// The tracker.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        tracker: SocketAddr,
    },
    /// A tracker connection ended (or could not be made); retrying with backoff.
    TrackerLost {
        /// The tracker.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        tracker: SocketAddr,
    },
    /// The tracker refused to register us; retrying with backoff.
    TrackerRefused(Refusal),
    /// The peer list asked for arrived ([`Peer::peers`](super::Peer::peers)).
    PeerList {
        /// Peers the tracker has registered (the list may hold fewer).
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
    /// One file of an answer to [`Peer::list_files`](super::Peer::list_files).
    FileListed(FileEntry),
    /// End of an answer to [`Peer::list_files`](super::Peer::list_files).
    FileListEnd {
        /// Files listed.
        count: u16,
    },
    /// One holder in an answer to [`Peer::locate`](super::Peer::locate).
    Holder(HolderItem),
    /// End of an answer to [`Peer::locate`](super::Peer::locate).
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
    /// A block of a chunk did not match its leaf, or the chunk's leaves did not match its
    /// root: they were discarded and will be fetched again (elsewhere, if another peer has
    /// them).
    ChunkRejected {
        /// The slot.
        slot: u16,
        /// The chunk.
        chunk: u32,
        /// The peer that sent (the first bytes of) the bad block or leaves.
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
    /// Some chunks have no online holder; the fetch waits for one (see [`Peer::missing`](super::Peer::missing)).
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
