//! The I/O contract shared by every node: what `handle_recv` answers, and the one output call,
//! `poll_output`, with everything it can hand out.
//!
//! # The contract
//!
//! After every input (a `handle_*` call or a command), call `poll_output` until it returns
//! [`Output::Timeout`]; carry out each [`Output`] as it comes. The order in which a node hands
//! out frames, actions and events is the core's business, written once in `Drain`: an adapter
//! only matches on what it got.

use core::net::SocketAddr;

use crate::conn::ConnId;
use crate::storage::{StorageKey, StorageSend, StorageWrite};
use crate::time::Instant;
use crate::wire::{LEN_PREFIX, MAX_FRAME_LEN};

/// Bytes of the buffer `poll_output` encodes one frame into.
pub const FRAME_BUF_LEN: usize = LEN_PREFIX + MAX_FRAME_LEN;

/// Bytes to send, written by `poll_output` into the caller's buffer: a frame, or the next
/// piece of a body the core renders itself (a peer's bitfield).
///
/// The adapter MUST send the first `len` bytes of the buffer on `conn`, and then, before
/// anything else on that connection, the bytes `then` names from storage: the frame promised
/// them to the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a frame the adapter does not send leaves the remote waiting for it for ever"]
pub struct Transmit {
    /// The connection to send on.
    pub conn: ConnId,
    /// Bytes of the caller's buffer to send.
    pub len: usize,
    /// Bytes to copy from storage to the connection right after the frame: the frame's body.
    pub then: Option<StorageSend>,
}

/// Something for the adapter to do besides sending frames. A tracker asks only for `Close`
/// and `Discard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "the node waits for the outcome of an action it asked for"]
pub enum Action {
    /// Open a TCP connection to `addr` for `conn`; the adapter MUST report the outcome with
    /// `handle_connected` or `handle_closed`.
    Connect {
        /// The handle to report on.
        conn: ConnId,
        /// Where to connect.
        #[cfg_attr(feature = "defmt", defmt(Debug2Format))]
        addr: SocketAddr,
    },
    /// Send what is buffered for this connection, then close it. The id is dead from now on:
    /// the adapter MUST NOT report anything more about it.
    Close(ConnId),
    /// Read the stored hash of `chunk` (32 bytes at `chunk * 32` of the key's region); the
    /// adapter MUST answer with `handle_hash`, or `handle_storage_failed` if it cannot.
    ReadHash {
        /// The hashes of this slot.
        key: StorageKey,
        /// The chunk.
        chunk: u32,
    },
    /// Stored bytes under this key are not valid any more (hashes that did not match the file
    /// id, a delisted file's hashes).
    Discard(StorageKey),
    /// Hash a block that was just written: SHA-256 of the `len` bytes at `offset` of `key`
    /// (only asked with [`BlockCheck::Deferred`](crate::peer::BlockCheck::Deferred)). The
    /// adapter MUST answer with `handle_block_hash(ticket, digest)`, or
    /// `handle_storage_failed` if it cannot read them, and answer a chunk's blocks in the
    /// order they were asked (one FIFO worker does). It may do so on another thread, later:
    /// the peer goes on taking bytes meanwhile, and an answer that comes after the chunk
    /// moved on is ignored. Like any input, each answer is followed by a drain; an answer
    /// handed while the peer's events wait to be drained is refused (`false`) and must be
    /// handed again after the drain.
    HashBlock {
        /// The data region of the file.
        key: StorageKey,
        /// Byte offset of the block within the region.
        offset: u64,
        /// Bytes in the block (at most 16 KiB).
        len: u32,
        /// To hand back with the digest.
        ticket: BlockTicket,
    },
}

/// Which block a digest asked for by [`Action::HashBlock`] belongs to; opaque to the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockTicket {
    pub(crate) slot: u16,
    pub(crate) chunk: u32,
    /// Where the block ends within its chunk.
    pub(crate) end: u32,
    /// The chunk's epoch when it was asked: a chunk that went back or started over since has
    /// another, so a late answer cannot verify bytes it never saw.
    pub(crate) epoch: u32,
}

/// What `poll_output` hands out, one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "every output must be carried out, and the drain goes on until `Timeout`"]
pub enum Output<E> {
    /// Send a frame (see [`Transmit`] for what MUST follow it).
    Transmit(Transmit),
    /// Do something (see [`Action`]).
    Action(Action),
    /// Something happened, for the user (and for storage's journal).
    Event(E),
    /// Nothing more to do now: the drain is over. Call `handle_timeout` at this instant, or
    /// earlier if input arrives.
    Timeout(Instant),
}

/// What `handle_recv` did with the input.
///
/// The adapter MUST store `write` (at once, before offering more input) and MUST offer the
/// input after `consumed` again later: a dropped write loses payload that the core will later
/// report verified, and dropped input breaks the stream.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a `write` that is not stored loses payload the core later reports verified"]
pub struct Recv<'a> {
    /// Bytes of the input taken. Offer the rest again (after draining `poll_output`).
    pub consumed: usize,
    /// Bytes to store before calling `handle_recv` again; they are part of the consumed input.
    pub write: Option<StorageWrite<'a>>,
}

impl Recv<'_> {
    /// Everything was taken and nothing needs storing.
    pub(crate) fn all(input: &[u8]) -> Self {
        Recv {
            consumed: input.len(),
            write: None,
        }
    }
}

/// The three queues a node drains, in the one order the core hands them out.
pub(crate) trait Outputs {
    /// The node's events.
    type Event;
    /// The drain's own state, kept in the node.
    fn drain_state(&mut self) -> &mut Drain;
    /// The next frame, if any.
    fn next_transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit>;
    /// The next action, if any.
    fn next_action(&mut self) -> Option<Action>;
    /// The next event, if any.
    fn next_event(&mut self) -> Option<Self::Event>;
    /// When the node next needs `handle_timeout`.
    fn next_timeout(&self) -> Instant;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Transmit,
    Action,
    Event,
}

/// Where a drain stands: frames first, then actions, then events; a round that handed out
/// anything (or saw an input in between) is followed by another, and only a quiet round ends
/// in `Timeout`. Frames go first so replies leave before the connection changes under them;
/// actions before events, so the user hears of a connection only after it is asked for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Drain {
    stage: Stage,
    busy: bool,
}

impl Drain {
    /// An input arrived: whatever it queued must be handed out before the drain may end.
    pub(crate) fn input(&mut self) {
        self.busy = true;
    }

    /// The next output of `node`.
    pub(crate) fn poll<N: Outputs + ?Sized>(
        node: &mut N,
        buf: &mut [u8; FRAME_BUF_LEN],
    ) -> Output<N::Event> {
        loop {
            let stage = node.drain_state().stage;
            let out = match stage {
                Stage::Transmit => node.next_transmit(buf).map(Output::Transmit),
                Stage::Action => node.next_action().map(Output::Action),
                Stage::Event => node.next_event().map(Output::Event),
            };
            let d = node.drain_state();
            if let Some(out) = out {
                d.busy = true;
                return out;
            }
            d.stage = match stage {
                Stage::Transmit => Stage::Action,
                Stage::Action => Stage::Event,
                Stage::Event => Stage::Transmit,
            };
            if stage == Stage::Event {
                if !d.busy {
                    return Output::Timeout(node.next_timeout());
                }
                d.busy = false;
            }
        }
    }
}
