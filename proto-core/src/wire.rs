//! The wire: framing and every message that crosses a connection.
//!
//! # Framing
//!
//! Every frame is a 4-byte little-endian length followed by that many bytes of a
//! postcard-encoded [`Message`]. The length never exceeds [`MAX_FRAME_LEN`]; a larger one is a
//! [`FrameError::TooLong`] and the connection is closed. A few messages carry a *body*: raw bytes
//! that follow the frame directly, outside postcard, whose length the message itself states
//! ([`Message::body_len`]). Bodies are how bulk data (chunk hashes of a manifest, a peer's
//! availability bitfield, chunk payload after a [`Message::Block`] header)
//! travels without ever being held whole in the core: [`FrameDecoder`] hands body bytes back as
//! slices of the caller's input, so they can be hashed and written straight from the receive
//! buffer.
//!
//! Socket addresses travel as IP and port; an IPv6 scope id or flow label is local to the
//! sending host and is not carried.
//!
//! # Streams of items
//!
//! Answers with many entries (the peer list, the file list, a locate answer) are sent as one
//! frame per item followed by an end frame that states the count. Each frame stays small, so a
//! device with a 1 KiB frame buffer can take part, and a receiver that sees a count different
//! from the items it got simply waits for the next push.

use core::fmt;
use core::net::SocketAddr;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::auth::{Nonce, Proof};
use crate::manifest::{ManifestError, ManifestHeader, Name, MAX_CHUNKS};

/// The protocol version spoken by this build; sent in every [`Hello`].
pub const PROTOCOL_VERSION: u16 = 5;

/// Bytes in the length prefix of every frame.
pub const LEN_PREFIX: usize = 4;

/// The largest postcard-encoded message a frame may carry, in bytes (without the prefix).
///
/// A unit test encodes the largest possible instance of every message and checks it fits.
pub const MAX_FRAME_LEN: usize = 512;

/// Chunk ranges carried by one [`Message::Have`] or [`HolderItem`] frame.
pub const MAX_RANGES: usize = 32;

/// A node's identity: random bytes chosen by the node at start-up (from the adapter's seed).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub [u8; 16]);

/// A file's identity: the SHA-256 of its encoded manifest (see [`crate::manifest`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileId(pub [u8; 32]);

/// A half-open range of chunk indices `start..end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChunkRange {
    /// First chunk in the range.
    pub start: u32,
    /// One past the last chunk in the range.
    pub end: u32,
}

/// The first frame on every connection, in both directions.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`]; kept first so any version can read it.
    pub version: u16,
    /// The sender's node id.
    pub node: NodeId,
    /// The TCP port the sender accepts peer connections on (0: it accepts none).
    pub listen_port: u16,
    /// A fresh random nonce for this connection; the swarm-key proofs are made over both
    /// sides' nonces (see [`crate::auth`]). Sent even without a key, so the frame is the same.
    pub nonce: Nonce,
}

/// An online peer as the tracker knows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerEntry {
    /// The peer's node id.
    pub node: NodeId,
    /// Where other peers can connect to it: the address the tracker saw the peer's connection
    /// come from, with the listen port the peer announced.
    #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
    pub addr: SocketAddr,
}

/// One line of the tracker's file list.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileEntry {
    /// The file id.
    pub file: FileId,
    /// The file name from the manifest.
    pub name: Name,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Online peers that hold at least one chunk.
    pub holders: u16,
    /// Online peers that hold every chunk.
    pub seeders: u16,
}

/// One holder in a locate answer: which chunks an online peer holds, as ranges.
///
/// A holder whose chunks need more than [`MAX_RANGES`] ranges is sent as several items with
/// `more` set on all but the last.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HolderItem {
    /// The file located.
    pub file: FileId,
    /// The holder.
    pub peer: PeerEntry,
    /// Chunk ranges it holds (part of them if `more`).
    pub ranges: Vec<ChunkRange, MAX_RANGES>,
    /// More ranges for this same holder follow in the next item.
    pub more: bool,
}

/// Why a tracker refused a connection's request to register; the tracker closes afterwards.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The versions differ; the tracker speaks `supported`.
    VersionMismatch {
        /// The version the refusing side speaks.
        supported: u16,
    },
    /// A peer with this node id is already registered.
    DuplicateNode,
    /// A peer with this address (IP and listen port) is already registered.
    DuplicateAddress,
    /// The tracker's peer table is full.
    TrackerFull,
    /// The request needs registration first (publish, have).
    NotRegistered,
    /// The swarm-key handshake failed: the proof was missing or wrong, or a proof came where no
    /// key is configured. Both ends need the same swarm key (or neither one).
    SwarmKey,
}

/// Why a tracker refused to publish a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PublishRefusal {
    /// The manifest has more chunks than this tracker can track; use a larger chunk size.
    TooManyChunks {
        /// The most chunks this tracker accepts per file.
        max: u32,
    },
    /// The tracker's file table is full.
    TrackerFull,
    /// The manifest header is not valid.
    Invalid(ManifestError),
    /// The publisher is not registered.
    NotRegistered,
    /// The tracker could not store the chunk hashes.
    StorageFailed,
    /// The header and hashes sent do not hash to the claimed file id.
    IdMismatch,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VersionMismatch { supported } => write!(
                f,
                "it speaks protocol version {supported} and this shoal speaks {PROTOCOL_VERSION}"
            ),
            Refusal::DuplicateNode => f.write_str("a peer with the same node id is registered"),
            Refusal::DuplicateAddress => {
                f.write_str("a peer with the same address and port is registered")
            }
            Refusal::TrackerFull => f.write_str("its peer table is full"),
            Refusal::NotRegistered => f.write_str("the request needs registration first"),
            Refusal::SwarmKey => f.write_str("the swarm keys differ (or one side has none)"),
        }
    }
}

impl fmt::Display for PublishRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishRefusal::TooManyChunks { max } => write!(
                f,
                "the file has more than the {max} chunks it tracks per file; share it with a larger --chunk-size"
            ),
            PublishRefusal::TrackerFull => f.write_str("its file table is full"),
            PublishRefusal::Invalid(e) => write!(f, "the manifest is invalid: {e}"),
            PublishRefusal::NotRegistered => f.write_str("this peer is not registered with it"),
            PublishRefusal::StorageFailed => f.write_str("it could not store the chunk hashes"),
            PublishRefusal::IdMismatch => {
                f.write_str("the manifest does not hash to the file id it claimed")
            }
        }
    }
}

/// Every message of the protocol. The variant order is the wire tag: append, never reorder.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message {
    /// Handshake, first frame on every connection.
    Hello(Hello),
    /// Liveness probe; answered with a [`Message::Pong`] carrying the same nonce.
    Ping(u32),
    /// Answer to a [`Message::Ping`].
    Pong(u32),
    /// Peer to tracker: add me to the active peer list (after `Hello`).
    Register,
    /// Tracker to peer: registered, with the address others will use to reach you.
    Registered {
        /// The address the tracker records for the peer.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// Request or connection refused (tracker to peer, or an acceptor to an opener that failed the
    /// swarm-key handshake); the connection is closed after this frame.
    Refused(Refusal),
    /// Peer to tracker: I am leaving; forget me and what I hold.
    Leave,
    /// Tracker to peer: one active peer, in answer to [`Message::ListPeers`].
    PeerListItem(PeerEntry),
    /// Tracker to peer: end of a peer list of `count` items.
    PeerListEnd {
        /// Items sent since the previous end frame.
        count: u16,
    },
    /// Peer to tracker: publish this manifest. Body: the chunk hashes, 32 bytes each.
    ///
    /// `file` is the id the publisher computed; the tracker recomputes it from the header and
    /// body and refuses a mismatch. Knowing it up front lets the tracker add a second holder of a
    /// listed file without storing the hashes again.
    Publish {
        /// The id the publisher claims.
        file: FileId,
        /// The manifest header.
        header: ManifestHeader,
    },
    /// Tracker to peer: the manifest is listed (or the sender added as a holder) under `file`.
    Published {
        /// The id the tracker computed from the manifest.
        file: FileId,
    },
    /// Tracker to peer: a publish was refused. Replies to publishes come in the order the
    /// publishes were sent.
    PublishRefused {
        /// The id the refused publish claimed.
        file: FileId,
        /// Why.
        reason: PublishRefusal,
    },
    /// Any node to tracker: list the files.
    ListFiles,
    /// Tracker: one listed file.
    FileItem(FileEntry),
    /// Tracker: end of the file list.
    FileListEnd {
        /// Items sent.
        count: u16,
    },
    /// Any node to tracker: which online peers hold which chunks of `file`?
    Locate {
        /// The file to locate.
        file: FileId,
    },
    /// Tracker: one holder (or part of one) of a located file.
    HolderItem(HolderItem),
    /// Tracker: end of a locate answer.
    LocateEnd {
        /// The file located.
        file: FileId,
        /// Distinct holders sent.
        holders: u16,
    },
    /// Any node to tracker (or peer): send me the manifest of `file`.
    GetManifest {
        /// The wanted file.
        file: FileId,
    },
    /// The manifest of `file`. Body: the chunk hashes, 32 bytes each.
    Manifest {
        /// The file id; the receiver checks it against the header and hashes.
        file: FileId,
        /// The manifest header.
        header: ManifestHeader,
    },
    /// The requested file is not known (or no longer listed).
    NotFound {
        /// The file asked for.
        file: FileId,
    },
    /// Peer to tracker, and peer to peer: I now hold these chunks of `file` (batched).
    Have {
        /// The file.
        file: FileId,
        /// Newly verified chunk ranges.
        ranges: Vec<ChunkRange, MAX_RANGES>,
    },
    /// Peer to peer: every chunk of `file` I hold. Body: `chunks.div_ceil(8)` bytes, chunk `i`
    /// in bit `i % 8` of byte `i / 8`.
    Bitfield {
        /// The file.
        file: FileId,
        /// Number of chunks the bitfield covers (the manifest's chunk count).
        chunks: u32,
    },
    /// Peer to peer: send me this block.
    Request(BlockRef),
    /// Peer to peer: the block asked for, or a first part of what is left of it. Body: `len`
    /// bytes of chunk payload. A part starts where the request (or its rest) starts and ends
    /// on a 16 KiB block boundary of the chunk: a peer serving a chunk it is still fetching
    /// sends each verified 16 KiB as soon as it is, and the rest of the request stays asked
    /// for. Anything else that matches no request is unsolicited.
    Block(BlockRef),
    /// Peer to peer: I no longer want this block (it arrived from elsewhere).
    Cancel(BlockRef),
    /// Peer to peer: I will not send this block.
    Reject {
        /// The block refused.
        block: BlockRef,
        /// Why.
        reason: RejectReason,
    },
    /// Handshake, with a swarm key only: proof of the key over both nonces (see
    /// [`crate::auth`]). The opener sends it after the acceptor's `Hello`; the acceptor answers
    /// with its own once the opener's checks out.
    Auth {
        /// HMAC-SHA-256 over the label, the sender's side and both nonces.
        proof: Proof,
    },
    /// Any node to tracker: list the registered peers. The answer is a stream of
    /// [`Message::PeerListItem`]s and a [`Message::PeerListEnd`]; nothing is pushed unasked.
    ListPeers,
    /// Peer to peer: send me the leaves of `chunk` (the SHA-256 of each of its blocks), so I can
    /// verify its blocks one by one as they come.
    GetLeaves {
        /// The file.
        file: FileId,
        /// The chunk.
        chunk: u32,
    },
    /// Peer to peer: the leaves of `chunk`. Body: `count` leaves, 32 bytes each, in block
    /// order. `count` is the chunk's number of blocks, or 0 for "I do not have them".
    Leaves {
        /// The file.
        file: FileId,
        /// The chunk.
        chunk: u32,
        /// Leaves in the body.
        count: u32,
    },
    /// Peer to peer: I am fetching `chunk` and have checked its leaves; ask me for its blocks
    /// (and leaves): I serve each block as soon as I have verified it. A `Have` follows when
    /// the chunk is whole, a `Reject` for what I was asked if I give it up.
    Started {
        /// The file.
        file: FileId,
        /// The chunk.
        chunk: u32,
    },
    /// Peer to peer (peer exchange): other peers connected to me for `file`, each at the
    /// address I see its connection come from with the listen port it announced. A hint to
    /// try, nothing more: the receiver learns who answers there from the handshake. Sent
    /// when a connection starts and now and then after; a receiver takes at most one per
    /// connection and half-minute.
    Peers {
        /// The file.
        file: FileId,
        /// Where to try.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addrs: Vec<SocketAddr, MAX_EXCHANGE>,
    },
    /// Peer to tracker: the answer to a tracker's [`Message::Ping`] (it counts as the pong)
    /// with what the peer has moved so far, for the operator's view. Totals, not rates: the
    /// tracker derives rates from two reports, so a lost or late one costs no accuracy. They
    /// are the peer's word, shown as such and trusted for nothing.
    Report {
        /// The ping's nonce.
        nonce: u32,
        /// Block bytes served to other peers, over the files it has now.
        uploaded: u64,
        /// Bytes of the chunks it verified since it added the files it has now.
        downloaded: u64,
    },
    /// Peer to tracker: I neither hold nor fetch `file` any more (the user cancelled it or
    /// stopped sharing it); forget my holding of it, so no one is sent to me for it.
    Abandon {
        /// The file.
        file: FileId,
    },
}

/// Addresses carried by one [`Message::Peers`].
pub const MAX_EXCHANGE: usize = 8;

/// A block: `len` bytes at `offset` within chunk `chunk` of `file`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockRef {
    /// The file.
    pub file: FileId,
    /// The chunk index.
    pub chunk: u32,
    /// Byte offset within the chunk.
    pub offset: u32,
    /// Length in bytes; at most [`MAX_BLOCK_LEN`].
    pub len: u32,
}

/// The longest block a `Block` message may carry: the largest chunk size.
pub const MAX_BLOCK_LEN: u32 = crate::manifest::MAX_CHUNK_SIZE;

/// Why a peer refused a block request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RejectReason {
    /// I do not hold that chunk (or that file).
    NotHeld,
    /// Every upload slot is busy; ask again later or elsewhere.
    Busy,
    /// The block is outside the chunk.
    OutOfRange,
}

impl Message {
    /// The number of raw body bytes that follow this message's frame on the wire.
    ///
    /// `None` when the message states a body it cannot have (an invalid manifest header, a
    /// block or bitfield over the limits): then the stream cannot be trusted to continue.
    pub fn body_len(&self) -> Option<u64> {
        match self {
            Message::Publish { header, .. } | Message::Manifest { header, .. } => {
                header.validate().ok()?;
                Some(header.body_len())
            }
            Message::Block(b) => (b.len <= MAX_BLOCK_LEN).then_some(u64::from(b.len)),
            Message::Bitfield { chunks, .. } => {
                (*chunks <= MAX_CHUNKS).then_some(u64::from(chunks.div_ceil(8)))
            }
            Message::Leaves { count, .. } => (*count <= crate::manifest::MAX_CHUNK_BLOCKS)
                .then_some(u64::from(*count) * crate::manifest::HASH_LEN as u64),
            _ => Some(0),
        }
    }
}

/// Encoding failed: the output buffer is too small or the message is over [`MAX_FRAME_LEN`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The caller's buffer cannot hold the frame.
    BufferTooSmall,
    /// The encoded message exceeds [`MAX_FRAME_LEN`].
    TooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer too small for the frame"),
            EncodeError::TooLong => f.write_str("message larger than the frame limit"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Writes `msg` as one frame (length prefix and postcard) into `out`; returns the bytes used.
pub fn encode_frame(msg: &Message, out: &mut [u8]) -> Result<usize, EncodeError> {
    if out.len() < LEN_PREFIX {
        return Err(EncodeError::BufferTooSmall);
    }
    let room = (out.len() - LEN_PREFIX).min(MAX_FRAME_LEN);
    let (prefix, rest) = out.split_at_mut(LEN_PREFIX);
    let used = match postcard::to_slice(msg, &mut rest[..room]) {
        Ok(bytes) => bytes.len(),
        Err(postcard::Error::SerializeBufferFull) if room == MAX_FRAME_LEN => {
            return Err(EncodeError::TooLong)
        }
        Err(_) => return Err(EncodeError::BufferTooSmall),
    };
    // `used <= MAX_FRAME_LEN`, far below u32::MAX.
    prefix.copy_from_slice(&(used as u32).to_le_bytes());
    Ok(LEN_PREFIX + used)
}

/// Decodes one whole frame payload (without prefix); trailing bytes are an error.
pub fn decode_message(frame: &[u8]) -> Result<Message, FrameError> {
    match postcard::take_from_bytes::<Message>(frame) {
        Ok((msg, [])) => Ok(msg),
        Ok(_) => Err(FrameError::TrailingBytes),
        Err(_) => Err(FrameError::Malformed),
    }
}

/// Why a byte stream could not be decoded; the connection cannot continue after any of these.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`] bytes.
    TooLong,
    /// The frame is not a valid postcard [`Message`].
    Malformed,
    /// The message ended before the frame did.
    TrailingBytes,
    /// A message announces a body longer than this decoder accepts, or an invalid header.
    BadBody,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong => f.write_str("frame longer than the limit"),
            FrameError::Malformed => f.write_str("malformed message"),
            FrameError::TrailingBytes => f.write_str("trailing bytes after the message"),
            FrameError::BadBody => f.write_str("message body too long or its header invalid"),
        }
    }
}

impl core::error::Error for FrameError {}

/// What [`FrameDecoder::decode`] found in the input.
// No allocator to box the message into; an Item lives only until the caller dispatches it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A complete message. If its [`Message::body_len`] is non-zero, body items follow.
    Message(Message),
    /// Body bytes of the last message, borrowed from the caller's input.
    Body {
        /// The bytes.
        data: &'a [u8],
        /// Body bytes still to come after these; zero on the last piece.
        remaining: u64,
    },
}

/// Incremental decoder for one connection's byte stream.
///
/// It holds at most one frame ([`MAX_FRAME_LEN`] bytes) and never buffers body bytes: they are
/// returned as slices of the input. Its memory and the work per input byte are bounded whatever
/// the input.
#[derive(Clone)]
pub struct FrameDecoder {
    prefix: [u8; LEN_PREFIX],
    prefix_have: u8,
    frame: [u8; MAX_FRAME_LEN],
    frame_have: usize,
    body_left: u64,
    max_body: u64,
}

impl FrameDecoder {
    /// A decoder that accepts bodies of at most `max_body` bytes.
    pub const fn new(max_body: u64) -> Self {
        FrameDecoder {
            prefix: [0; LEN_PREFIX],
            prefix_have: 0,
            frame: [0; MAX_FRAME_LEN],
            frame_have: 0,
            body_left: 0,
            max_body,
        }
    }

    /// True when the decoder is between frames (no partial frame or body pending).
    pub fn is_idle(&self) -> bool {
        self.prefix_have == 0 && self.body_left == 0
    }

    /// True when the next input bytes are body bytes.
    pub fn in_body(&self) -> bool {
        self.body_left > 0
    }

    /// Decodes from `input`; returns the bytes consumed and at most one item.
    ///
    /// Call again with the unconsumed rest until it consumes nothing. `Ok((n, None))` means the
    /// input was taken in and more is needed. After an error the stream is unusable.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Item<'a>>), FrameError> {
        if self.body_left > 0 {
            let n = input
                .len()
                .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
            if n == 0 {
                return Ok((0, None));
            }
            self.body_left -= n as u64;
            let item = Item::Body {
                data: &input[..n],
                remaining: self.body_left,
            };
            return Ok((n, Some(item)));
        }
        let mut used = 0;
        while (self.prefix_have as usize) < LEN_PREFIX {
            let Some(&b) = input.get(used) else {
                return Ok((used, None));
            };
            self.prefix[self.prefix_have as usize] = b;
            self.prefix_have += 1;
            used += 1;
        }
        let len = u32::from_le_bytes(self.prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong);
        }
        let rest = &input[used..];
        let msg = if self.frame_have == 0 && rest.len() >= len {
            // Whole frame in the input: decode it in place, no copy.
            used += len;
            decode_message(&rest[..len])?
        } else {
            let take = (len - self.frame_have).min(rest.len());
            self.frame[self.frame_have..self.frame_have + take].copy_from_slice(&rest[..take]);
            self.frame_have += take;
            used += take;
            if self.frame_have < len {
                return Ok((used, None));
            }
            decode_message(&self.frame[..len])?
        };
        self.prefix_have = 0;
        self.frame_have = 0;
        let body = msg.body_len().ok_or(FrameError::BadBody)?;
        if body > self.max_body {
            return Err(FrameError::BadBody);
        }
        self.body_left = body;
        Ok((used, Some(Item::Message(msg))))
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("prefix_have", &self.prefix_have)
            .field("frame_have", &self.frame_have)
            .field("body_left", &self.body_left)
            .finish()
    }
}

/// Lower-case hex of at most 32 bytes, without an allocator.
pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 64];
    let bytes = &bytes[..bytes.len().min(32)];
    let out = &mut buf[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).map_err(|_| fmt::Error)?;
    f.write_str(core::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

impl fmt::Display for FileId {
    /// Lower-case hex, 64 digits: the form used in links and on the command line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileId(")?;
        write_hex(f, &self.0[..6])?;
        f.write_str("..)")
    }
}

impl fmt::Display for NodeId {
    /// Lower-case hex, 32 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("..)")
    }
}

/// Parses hex digits into `out`; `None` unless `text` is exactly `2 * out.len()` hex digits.
pub(crate) fn parse_hex(text: &str, out: &mut [u8]) -> Option<()> {
    hex::decode_to_slice(text, out).ok()
}

impl FileId {
    /// Parses the 64-digit hex form (either case).
    pub fn from_hex(text: &str) -> Option<FileId> {
        let mut id = [0u8; 32];
        parse_hex(text, &mut id)?;
        Some(FileId(id))
    }
}
