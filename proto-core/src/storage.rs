//! What the core asks of storage. The core owns no file: it names a region of a slot and an
//! offset, and the adapter moves the bytes (from its receive buffer to disk, or from disk to
//! the socket) so payload is copied at most once.

/// Which part of a file slot: its chunk hashes or its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Region {
    /// The chunk hashes of a manifest, 32 bytes per chunk in chunk order.
    Hashes,
    /// The file's bytes.
    Data,
}

/// A region of one of the core's file slots.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StorageKey {
    /// The slot in the node's file table (dense from 0).
    pub slot: u16,
    /// Which part of it.
    pub region: Region,
}

/// Bytes to store now: `data` borrows the adapter's own receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct StorageWrite<'a> {
    /// Where.
    pub key: StorageKey,
    /// Byte offset within the region.
    pub offset: u64,
    /// The bytes, a slice of the input handed to `handle_recv`.
    pub data: &'a [u8],
}

/// Bytes to copy from storage to a connection right after the frame they belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StorageSend {
    /// Where.
    pub key: StorageKey,
    /// Byte offset within the region.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
}
