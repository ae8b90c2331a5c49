//! The I/O contract shared by every node: what `handle_recv` answers and what `poll_transmit`
//! hands out.

use crate::conn::ConnId;
use crate::storage::{StorageSend, StorageWrite};
use crate::wire::{LEN_PREFIX, MAX_FRAME_LEN};

/// Bytes of the buffer `poll_transmit` encodes one frame into.
pub const FRAME_BUF_LEN: usize = LEN_PREFIX + MAX_FRAME_LEN;

/// Bytes to send, written by `poll_transmit` into the caller's buffer: a frame, or the next
/// piece of a body the core renders itself (a peer's bitfield).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// The connection to send on.
    pub conn: ConnId,
    /// Bytes of the caller's buffer to send.
    pub len: usize,
    /// Bytes to copy from storage to the connection right after the frame: the frame's body.
    pub then: Option<StorageSend>,
}

/// What `handle_recv` did with the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Recv<'a> {
    /// Bytes of the input taken. Offer the rest again (after draining `poll_transmit`).
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
