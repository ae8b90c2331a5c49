//! What the core asks of storage. The core owns no file: it names a region of a slot and an
//! offset, and the adapter moves the bytes (from its receive buffer to disk, or from disk to
//! the socket) so payload is copied at most once.

/// Which part of a file slot: its chunk hashes, its leaves, or its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Region {
    /// The chunk hashes of a manifest, 32 bytes per chunk in chunk order.
    Hashes,
    /// The leaves: the SHA-256 of every block, 32 bytes per block in file order (chunk `c`'s
    /// from [`ManifestHeader::leaf_offset`](crate::manifest::ManifestHeader::leaf_offset)).
    /// Written by the core as a chunk's leaves arrive (before they are checked, like data);
    /// read to serve them. A store may instead compute them from verified data on read.
    Leaves,
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

/// What a node needs of storage, on every adapter: the file store on a host, flash on a
/// device, memory in the simulator and the tests.
///
/// The node asks for reads and writes by [`StorageKey`]; the journal methods are called with
/// the events that change what must survive a restart, right when the node hands them out and
/// before the user sees them (see [`Node::poll_stored`](crate::node::Node::poll_stored)). A
/// store that keeps nothing across restarts leaves them as they are.
pub trait Storage {
    /// Why an operation failed.
    type Error;

    /// Stores `data` at `offset` of `key`.
    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// Reads up to `buf.len()` bytes at `offset` of `key`; returns how many (0 at the end).
    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// The bytes under `key` are no longer wanted.
    fn discard(&mut self, key: StorageKey);

    /// A fetch's manifest arrived and matched its id: its hashes are stored under `slot`.
    /// Record `file` and `header` so a restart can resume the fetch.
    fn manifest_received(
        &mut self,
        slot: u16,
        file: crate::wire::FileId,
        header: &crate::manifest::ManifestHeader,
    ) -> Result<(), Self::Error> {
        let _ = (slot, file, header);
        Ok(())
    }

    /// Chunk `chunk` of `slot` is verified. Record it durably only after its bytes are durable
    /// (they were all written before this call), so a restart never trusts a chunk it lost.
    fn chunk_verified(&mut self, slot: u16, chunk: u32) -> Result<(), Self::Error> {
        let _ = (slot, chunk);
        Ok(())
    }

    /// Every chunk of `slot` is verified and recorded: the download may take its final form.
    fn file_complete(&mut self, slot: u16) -> Result<(), Self::Error> {
        let _ = slot;
        Ok(())
    }
}
