//! Manifests (shoal's metainfo): name, size, chunk size, and the merkle root of every chunk.
//!
//! # Blocks, leaves and chunk roots
//!
//! A chunk is cut into blocks of [`BLOCK_SIZE`] (16 KiB; a chunk smaller than that is one
//! block). A block's *leaf* is the SHA-256 of its bytes, and a chunk's hash ([`ChunkHash`]) is
//! the root of a binary SHA-256 merkle tree over its leaves, padded with all-zero leaves to
//! [`ManifestHeader::blocks_per_chunk`] (a power of two), each inner node the SHA-256 of its
//! two children side by side: BitTorrent v2's layout (BEP 52) with the chunk as the piece. So a
//! chunk of one block hashes to the SHA-256 of its bytes, and the last, short chunk of a file
//! has a tree as wide as the others.
//!
//! A downloader fetches a chunk's leaves once (checking them against the root) and then
//! verifies every block on its own as it arrives: a bad block costs one block, and a verified
//! block can be served before its chunk is whole. Stored leaves live in their own region
//! ([`Region::Leaves`](crate::storage::Region::Leaves)): 32 bytes per block in file order,
//! chunk `c`'s starting at [`ManifestHeader::leaf_offset`].
//!
//! # The encoded manifest and the file id
//!
//! The encoded manifest is the postcard encoding of the [`ManifestHeader`] followed by its
//! body: the chunk roots, 32 bytes each, in chunk order, then the layout of a folder
//! ([`ManifestHeader::layout_len`] bytes, none for a single file). The [`FileId`] is the
//! SHA-256 of those bytes. Because the body comes last and raw, the id can be computed (and
//! checked) while it streams past, without ever holding it all: [`FileIdHasher`] does that,
//! and [`ManifestBuilder`] builds a manifest from a file's bytes fed in any pieces.
//!
//! # Folders
//!
//! A folder is shared as one unit: its files, in the order of their relative paths, are one
//! stream of bytes cut into chunks as a single file is (a chunk may span several small files,
//! so ten thousand tiny files cost a few chunks, not ten thousand transfers). The layout says
//! which bytes are which file. The core never reads it: it carries it, stores it beside the
//! chunk roots (under [`Region::Hashes`](crate::storage::Region::Hashes), after them) and
//! hashes it into the id, so a layout cannot be changed without changing the id. Its format
//! and its checks (relative paths only) are the host's: `adapter-std/src/folder.rs`.

use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::FileId;

/// The longest file name a manifest may carry, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// The smallest chunk size: 1 KiB.
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
/// The largest chunk size: 16 MiB.
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;
/// The most chunks any manifest may have (the wire's limit; trackers and peers may accept fewer).
pub const MAX_CHUNKS: u32 = 1 << 20;
/// Bytes of one chunk hash (and of one leaf).
pub const HASH_LEN: usize = 32;
/// The unit of verification: 16 KiB (a chunk smaller than this is one block).
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// The most blocks a chunk may have: a [`MAX_CHUNK_SIZE`] chunk of [`BLOCK_SIZE`] blocks.
pub const MAX_CHUNK_BLOCKS: u32 = MAX_CHUNK_SIZE / BLOCK_SIZE;
/// The longest layout a folder's manifest may carry (see [`ManifestHeader::layout_len`]):
/// 16 MiB, room for a list of some hundred thousand files.
pub const MAX_LAYOUT_LEN: u32 = 16 << 20;
/// The longest body that may follow a manifest header: every chunk root, then the layout.
pub const MAX_BODY_LEN: u64 = MAX_CHUNKS as u64 * HASH_LEN as u64 + MAX_LAYOUT_LEN as u64;
/// The longest postcard encoding of a [`ManifestHeader`].
pub const MAX_HEADER_LEN: usize = MAX_NAME_LEN + 2 + 10 + 5 + 5;

/// A file name as carried on the wire.
pub type Name = heapless::String<MAX_NAME_LEN>;

/// The merkle root of one chunk (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChunkHash(pub [u8; HASH_LEN]);

/// The SHA-256 of one block: a leaf of its chunk's merkle tree.
pub type Leaf = [u8; HASH_LEN];

impl ChunkHash {
    /// The root of `data`, a whole chunk of a file whose chunks are `chunk_size` bytes.
    pub fn of(data: &[u8], chunk_size: u32) -> ChunkHash {
        let block = block_len(chunk_size) as usize;
        let mut tree = MerkleBuilder::new();
        for b in data.chunks(block) {
            tree.push(leaf(b));
        }
        if data.is_empty() {
            tree.push(leaf(&[]));
        }
        ChunkHash(tree.finish(width(chunk_size)))
    }
}

/// The leaf of one block: the SHA-256 of its bytes.
pub fn leaf(block: &[u8]) -> Leaf {
    Sha256::digest(block).into()
}

/// The block size of a file with chunks of `chunk_size` bytes.
fn block_len(chunk_size: u32) -> u32 {
    chunk_size.clamp(1, BLOCK_SIZE)
}

/// Leaves in a full chunk's tree: a power of two for a valid chunk size.
fn width(chunk_size: u32) -> u32 {
    chunk_size / block_len(chunk_size)
}

fn node(left: &Leaf, right: &Leaf) -> Leaf {
    let mut sha = Sha256::new();
    sha.update(left);
    sha.update(right);
    sha.finalize().into()
}

/// The root of the tree over `leaves`, padded with zero leaves to `width` (a power of two, at
/// least `leaves.len()`).
pub fn merkle_root(leaves: &[Leaf], width: u32) -> Leaf {
    let mut tree = MerkleBuilder::new();
    for l in leaves {
        tree.push(*l);
    }
    tree.finish(width)
}

/// Computes a merkle root from leaves pushed one at a time, holding one hash per level
/// (at most 11 for [`MAX_CHUNK_BLOCKS`] leaves): nothing grows with the chunk.
#[derive(Clone)]
pub struct MerkleBuilder {
    /// Roots of complete subtrees, left to right, with their heights (strictly decreasing).
    stack: heapless::Vec<(u8, Leaf), 12>,
}

impl Default for MerkleBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        MerkleBuilder {
            stack: heapless::Vec::new(),
        }
    }

    /// Adds the next leaf. Pushing more than [`MAX_CHUNK_BLOCKS`] leaves gives a wrong root,
    /// never a panic.
    pub fn push(&mut self, leaf: Leaf) {
        let mut top = (0u8, leaf);
        while let Some(&(h, left)) = self.stack.last() {
            if h != top.0 {
                break;
            }
            self.stack.pop();
            top = (h + 1, node(&left, &top.1));
        }
        // Heights strictly decrease, so the stack holds at most one entry per height.
        let _ = self.stack.push(top);
    }

    /// The root of a tree `width` leaves wide (a power of two), the leaves not pushed being
    /// all-zero.
    pub fn finish(mut self, width: u32) -> Leaf {
        let height = width.max(1).trailing_zeros() as u8;
        loop {
            let Some((h, right)) = self.stack.pop() else {
                return zero_subtree(height);
            };
            if self.stack.is_empty() && h >= height {
                return right;
            }
            let combined = match self.stack.last() {
                Some(&(lh, left)) if lh == h => {
                    self.stack.pop();
                    node(&left, &right)
                }
                _ => node(&right, &zero_subtree(h)),
            };
            let _ = self.stack.push((h + 1, combined));
        }
    }
}

/// The root of a subtree of `height` levels whose leaves are all zero.
fn zero_subtree(height: u8) -> Leaf {
    let mut z = [0u8; HASH_LEN];
    for _ in 0..height {
        z = node(&z, &z);
    }
    z
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkHash(")?;
        crate::wire::write_hex(f, &self.0[..6])?;
        f.write_str("..)")
    }
}

/// Everything in a manifest except the chunk hashes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ManifestHeader {
    /// The file's name: a single path component, no separators.
    pub name: Name,
    /// The file's size in bytes.
    pub size: u64,
    /// The chunk size in bytes: a power of two between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// Bytes of the folder layout after the chunk roots: 0 for a single file (see the
    /// [module docs](self)); at most [`MAX_LAYOUT_LEN`].
    pub layout_len: u32,
}

/// Why a manifest header (or a name) is not acceptable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ManifestError {
    /// The name is empty.
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// The name contains a path separator, a control character, or is `.` or `..`; a name is
    /// used as a file name on the downloader's disk, so it must not be able to escape a folder.
    BadName,
    /// The chunk size is not a power of two in the allowed range.
    BadChunkSize,
    /// The file needs more than [`MAX_CHUNKS`] chunks at this chunk size.
    TooManyChunks,
    /// The folder layout is longer than [`MAX_LAYOUT_LEN`].
    LayoutTooLong,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestError::EmptyName => "file name is empty",
            ManifestError::NameTooLong => "file name is longer than 255 bytes",
            ManifestError::BadName => {
                "file name is . or .., or contains a path separator or control character"
            }
            ManifestError::BadChunkSize => "chunk size is not a power of two from 1 KiB to 16 MiB",
            ManifestError::TooManyChunks => {
                "file needs more than 2^20 chunks; use a larger chunk size"
            }
            ManifestError::LayoutTooLong => "the folder's file list is longer than 16 MiB",
        })
    }
}

impl core::error::Error for ManifestError {}

/// Checks that `name` is a safe single file name.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    if name.is_empty() {
        return Err(ManifestError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ManifestError::NameTooLong);
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(ManifestError::BadName);
    }
    Ok(())
}

impl ManifestHeader {
    /// A validated header.
    pub fn new(name: &str, size: u64, chunk_size: u32) -> Result<Self, ManifestError> {
        validate_name(name)?;
        let name = Name::try_from(name).map_err(|_| ManifestError::NameTooLong)?;
        let header = ManifestHeader {
            name,
            size,
            chunk_size,
            layout_len: 0,
        };
        header.validate()?;
        Ok(header)
    }

    /// A validated header of a folder whose layout is `layout_len` bytes.
    pub fn folder(
        name: &str,
        size: u64,
        chunk_size: u32,
        layout_len: u32,
    ) -> Result<Self, ManifestError> {
        let mut header = ManifestHeader::new(name, size, chunk_size)?;
        header.layout_len = layout_len;
        header.validate()?;
        Ok(header)
    }

    /// Whether this is a folder's manifest (it has a layout).
    pub fn is_folder(&self) -> bool {
        self.layout_len > 0
    }

    /// Checks every rule of a header; run on everything that arrives from the network.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_name(&self.name)?;
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return Err(ManifestError::BadChunkSize);
        }
        if self.size.div_ceil(u64::from(self.chunk_size)) > u64::from(MAX_CHUNKS) {
            return Err(ManifestError::TooManyChunks);
        }
        if self.layout_len > MAX_LAYOUT_LEN {
            return Err(ManifestError::LayoutTooLong);
        }
        Ok(())
    }

    /// Number of chunks (the last one may be short). Meaningful only for a valid header.
    pub fn chunk_count(&self) -> u32 {
        let chunk = u64::from(self.chunk_size.max(1));
        u32::try_from(self.size.div_ceil(chunk)).unwrap_or(u32::MAX)
    }

    /// Length in bytes of chunk `index` (0 past the end).
    pub fn chunk_len(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        let len = self
            .size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size));
        // `len <= chunk_size`, a u32.
        len as u32
    }

    /// Byte offset of chunk `index` in the file.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Bytes of all chunk hashes together: the start of the body.
    pub fn hashes_len(&self) -> u64 {
        u64::from(self.chunk_count()) * HASH_LEN as u64
    }

    /// Bytes of the body that follows a header on the wire and in storage: the chunk roots,
    /// then the layout.
    pub fn body_len(&self) -> u64 {
        self.hashes_len() + u64::from(self.layout_len)
    }

    /// The block size: [`BLOCK_SIZE`], or the chunk size if that is smaller.
    pub fn block_len(&self) -> u32 {
        block_len(self.chunk_size)
    }

    /// Leaves in every chunk's tree (a power of two): a full chunk's blocks.
    pub fn blocks_per_chunk(&self) -> u32 {
        width(self.chunk_size)
    }

    /// Blocks of chunk `index` (the last chunk may have fewer; 0 past the end).
    pub fn blocks_in(&self, index: u32) -> u32 {
        self.chunk_len(index).div_ceil(self.block_len())
    }

    /// Byte offset of chunk `index`'s first leaf in the leaves region.
    pub fn leaf_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.blocks_per_chunk()) * HASH_LEN as u64
    }

    /// Bytes of the leaves region: 32 per block of the file.
    pub fn leaves_len(&self) -> u64 {
        self.size.div_ceil(u64::from(self.block_len())) * HASH_LEN as u64
    }

    /// Picks a chunk size for a file of `size` bytes: 256 KiB, doubled until the file needs at
    /// most `max_chunks` chunks (so small devices and trackers with few bitmap words still fit).
    pub fn pick_chunk_size(size: u64, max_chunks: u32) -> u32 {
        let mut chunk = 256 * 1024u32;
        while chunk < MAX_CHUNK_SIZE && size.div_ceil(u64::from(chunk)) > u64::from(max_chunks) {
            chunk *= 2;
        }
        chunk
    }
}

/// Computes a [`FileId`] from a header and its body (chunk hashes, layout) as they stream past.
#[derive(Clone)]
pub struct FileIdHasher {
    sha: Sha256,
    body_left: u64,
}

impl FileIdHasher {
    /// Starts with `header`, which must be valid.
    pub fn new(header: &ManifestHeader) -> Self {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let mut sha = Sha256::new();
        // MAX_HEADER_LEN bounds the encoding of any header (name length is checked by the type),
        // so this cannot fail; an empty update would only give a wrong id, never UB.
        if let Ok(encoded) = postcard::to_slice(header, &mut buf) {
            sha.update(&*encoded);
        }
        FileIdHasher {
            sha,
            body_left: header.body_len(),
        }
    }

    /// Feeds raw body bytes (any split).
    pub fn update(&mut self, body: &[u8]) {
        self.body_left = self.body_left.saturating_sub(body.len() as u64);
        self.sha.update(body);
    }

    /// Bytes of the body still expected.
    pub fn remaining(&self) -> u64 {
        self.body_left
    }

    /// The file id; `None` if not exactly the header's number of body bytes were fed.
    pub fn finish(self) -> Option<FileId> {
        (self.body_left == 0).then(|| FileId(self.sha.finalize().into()))
    }
}

/// Why building a manifest from file bytes failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BuildError {
    /// More bytes were fed than the header's size.
    TooMuchData,
    /// Fewer bytes were fed than the header's size (the file shrank while being read?).
    TooLittleData,
    /// The layout given is not as long as the header says.
    LayoutMismatch,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildError::TooMuchData => {
                "the file is larger than its recorded size (it changed while being read)"
            }
            BuildError::TooLittleData => {
                "the file is smaller than its recorded size (it changed while being read)"
            }
            BuildError::LayoutMismatch => "the folder's file list is not the length recorded",
        })
    }
}

impl core::error::Error for BuildError {}

/// What [`ManifestBuilder::update`] hands out as the file's bytes go past.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Built {
    /// The leaf of block `index` (counted from the file's start), at
    /// `index * 32` of the leaves region.
    Leaf {
        /// The block.
        index: u64,
        /// Its leaf.
        leaf: Leaf,
    },
    /// The root of chunk `index`, after its last leaf.
    Chunk {
        /// The chunk.
        index: u32,
        /// Its root.
        hash: ChunkHash,
    },
}

/// Builds a manifest from a file's bytes, fed in pieces of any size.
///
/// Each leaf and each chunk root is handed to a callback as soon as it is known, so the caller
/// can store them (a sidecar file, flash) instead of the builder holding them all.
pub struct ManifestBuilder {
    header: ManifestHeader,
    id: FileIdHasher,
    block: Sha256,
    tree: MerkleBuilder,
    in_block: u32,
    in_chunk: u32,
    index: u32,
    blocks: u64,
    fed: u64,
}

impl ManifestBuilder {
    /// Starts building for a validated header (see [`ManifestHeader::new`]).
    pub fn new(header: ManifestHeader) -> Self {
        ManifestBuilder {
            id: FileIdHasher::new(&header),
            header,
            block: Sha256::new(),
            tree: MerkleBuilder::new(),
            in_block: 0,
            in_chunk: 0,
            index: 0,
            blocks: 0,
            fed: 0,
        }
    }

    /// The header being built.
    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    /// Feeds the next bytes of the file; `out` is called with every leaf and every chunk
    /// root as each is completed, in file order.
    pub fn update(
        &mut self,
        mut data: &[u8],
        mut out: impl FnMut(Built),
    ) -> Result<(), BuildError> {
        if self.header.size - self.fed < data.len() as u64 {
            return Err(BuildError::TooMuchData);
        }
        self.fed += data.len() as u64;
        let block = self.header.block_len();
        while !data.is_empty() {
            let chunk_len = self.header.chunk_len(self.index);
            let block_end = (self.in_chunk - self.in_block + block).min(chunk_len);
            let want = block_end - self.in_chunk;
            let take = (want as usize).min(data.len());
            self.block.update(&data[..take]);
            self.in_block += take as u32;
            self.in_chunk += take as u32;
            data = &data[take..];
            if self.in_chunk == block_end {
                let leaf: Leaf = self.block.finalize_reset().into();
                out(Built::Leaf {
                    index: self.blocks,
                    leaf,
                });
                self.tree.push(leaf);
                self.blocks += 1;
                self.in_block = 0;
            }
            if self.in_chunk == chunk_len {
                let tree = core::mem::take(&mut self.tree);
                let hash = ChunkHash(tree.finish(self.header.blocks_per_chunk()));
                self.id.update(&hash.0);
                out(Built::Chunk {
                    index: self.index,
                    hash,
                });
                self.index += 1;
                self.in_chunk = 0;
            }
        }
        Ok(())
    }

    /// Ends the build of a single file; returns the header and the file id.
    pub fn finish(self) -> Result<(ManifestHeader, FileId), BuildError> {
        self.finish_with_layout(&[])
    }

    /// Ends the build of a folder, whose header says its layout is `layout.len()` bytes;
    /// returns the header and the file id.
    pub fn finish_with_layout(
        mut self,
        layout: &[u8],
    ) -> Result<(ManifestHeader, FileId), BuildError> {
        if self.fed != self.header.size {
            return Err(BuildError::TooLittleData);
        }
        if layout.len() as u64 != u64::from(self.header.layout_len) {
            return Err(BuildError::LayoutMismatch);
        }
        self.id.update(layout);
        let id = self.id.finish().ok_or(BuildError::TooLittleData)?;
        Ok((self.header, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn build(data: &[u8], chunk: u32, piece: usize) -> (FileId, Vec<ChunkHash>) {
        let header = ManifestHeader::new("f.bin", data.len() as u64, chunk).unwrap();
        let mut b = ManifestBuilder::new(header);
        let mut hashes = Vec::new();
        for p in data.chunks(piece.max(1)) {
            b.update(p, |built| {
                if let Built::Chunk { index, hash } = built {
                    assert_eq!(index as usize, hashes.len());
                    hashes.push(hash)
                }
            })
            .unwrap();
        }
        let (_, id) = b.finish().unwrap();
        (id, hashes)
    }

    #[test]
    fn a_folder_id_covers_its_layout_and_the_body_is_roots_then_layout() {
        let data = [7u8; 3000];
        let header = ManifestHeader::folder("dir", 3000, 1024, 5).unwrap();
        assert!(header.is_folder());
        assert_eq!((header.hashes_len(), header.body_len()), (96, 101));
        let build = |layout: &[u8]| {
            let mut b = ManifestBuilder::new(header.clone());
            let mut roots = Vec::new();
            b.update(&data, |built| {
                if let Built::Chunk { hash, .. } = built {
                    roots.extend_from_slice(&hash.0);
                }
            })
            .unwrap();
            (b.finish_with_layout(layout), roots)
        };
        let (a, roots) = build(b"abcde");
        let (_, id_a) = a.unwrap();
        let (_, id_b) = build(b"abcdf").0.unwrap();
        assert_ne!(id_a, id_b, "another layout is another id");
        assert_eq!(build(b"abc").0, Err(BuildError::LayoutMismatch));
        // The id streams over header, roots and layout, as a receiver checks it.
        let mut h = FileIdHasher::new(&header);
        h.update(&roots);
        assert_eq!(h.remaining(), 5);
        h.update(b"abcde");
        assert_eq!(h.finish(), Some(id_a));
        assert_eq!(
            ManifestHeader::folder("dir", 1, 1024, MAX_LAYOUT_LEN + 1),
            Err(ManifestError::LayoutTooLong)
        );
    }

    #[test]
    fn chunk_hashes_match_direct_sha256_and_id_is_independent_of_feed_size() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let (id1, h1) = build(&data, 1024, 1);
        let (id2, h2) = build(&data, 1024, 4999);
        assert_eq!(id1, id2);
        assert_eq!(h1, h2);
        assert_eq!(h1.len(), 5);
        // Chunks of one block: the root is the SHA-256 of the bytes.
        assert_eq!(h1[4], ChunkHash(Sha256::digest(&data[4096..]).into()));
        assert_eq!(h1[4], ChunkHash::of(&data[4096..], 1024));
        // The id is the SHA-256 of postcard(header) ++ hashes.
        let header = ManifestHeader::new("f.bin", 5000, 1024).unwrap();
        let mut enc = postcard::to_allocvec(&header).unwrap();
        for h in &h1 {
            enc.extend_from_slice(&h.0);
        }
        assert_eq!(id1.0, <[u8; 32]>::from(Sha256::digest(&enc)));
        // A different chunk size is a different file.
        assert_ne!(build(&data, 2048, 100).0, id1);
    }

    #[test]
    fn builder_rejects_wrong_amount_of_data() {
        let header = ManifestHeader::new("a", 10, 1024).unwrap();
        let mut b = ManifestBuilder::new(header.clone());
        assert_eq!(b.update(&[0; 11], |_| {}), Err(BuildError::TooMuchData));
        let mut b = ManifestBuilder::new(header);
        b.update(&[0; 9], |_| {}).unwrap();
        assert_eq!(b.finish().unwrap_err(), BuildError::TooLittleData);
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            ManifestHeader::new("", 1, 1024),
            Err(ManifestError::EmptyName)
        );
        assert_eq!(
            ManifestHeader::new("a/b", 1, 1024),
            Err(ManifestError::BadName)
        );
        assert_eq!(
            ManifestHeader::new("..", 1, 1024),
            Err(ManifestError::BadName)
        );
        assert_eq!(
            ManifestHeader::new("a\\b", 1, 1024),
            Err(ManifestError::BadName)
        );
        assert_eq!(
            ManifestHeader::new("a\nb", 1, 1024),
            Err(ManifestError::BadName)
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            ManifestHeader::new(&long, 1, 1024),
            Err(ManifestError::NameTooLong)
        );
        assert_eq!(
            ManifestHeader::new("a", 1, 1000),
            Err(ManifestError::BadChunkSize)
        );
        assert_eq!(
            ManifestHeader::new("a", 1, 512),
            Err(ManifestError::BadChunkSize)
        );
        assert_eq!(
            ManifestHeader::new("a", 1, 1 << 25),
            Err(ManifestError::BadChunkSize)
        );
        let too_big = u64::from(MAX_CHUNKS) * 1024 + 1;
        assert_eq!(
            ManifestHeader::new("a", too_big, 1024),
            Err(ManifestError::TooManyChunks)
        );
        let h = ManifestHeader::new("a", 2500, 1024).unwrap();
        assert_eq!(
            (h.chunk_count(), h.chunk_len(2), h.chunk_len(3)),
            (3, 452, 0)
        );
        let empty = ManifestHeader::new("empty", 0, 1024).unwrap();
        assert_eq!(empty.chunk_count(), 0);
        // The largest header any peer could send still fits the stack buffer FileIdHasher uses.
        let max = ManifestHeader {
            name: Name::try_from("x".repeat(MAX_NAME_LEN).as_str()).unwrap(),
            size: u64::MAX,
            chunk_size: u32::MAX,
            layout_len: u32::MAX,
        };
        assert_eq!(postcard::to_allocvec(&max).unwrap().len(), MAX_HEADER_LEN);
    }

    /// The tree written out the slow way: pad to `width` with zero leaves, hash pairs up.
    fn reference_root(leaves: &[Leaf], width: usize) -> Leaf {
        let mut level: Vec<Leaf> = leaves.to_vec();
        level.resize(width, [0; 32]);
        while level.len() > 1 {
            level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
        }
        level[0]
    }

    #[test]
    fn merkle_root_matches_the_padded_tree_for_every_shape() {
        let leaves: Vec<Leaf> = (0..64u8).map(|i| leaf(&[i; 3])).collect();
        for width in [1usize, 2, 4, 8, 16, 64] {
            for n in 0..=width {
                assert_eq!(
                    merkle_root(&leaves[..n], width as u32),
                    reference_root(&leaves[..n], width),
                    "{n} leaves, width {width}"
                );
            }
        }
        // Three leaves in a tree of four: the fourth is zero.
        let (a, b, c) = (leaves[0], leaves[1], leaves[2]);
        assert_eq!(
            merkle_root(&[a, b, c], 4),
            node(&node(&a, &b), &node(&c, &[0; 32]))
        );
    }

    #[test]
    fn builder_hands_out_every_leaf_and_roots_over_them() {
        // 256 KiB chunks (16 blocks each); the last chunk has 3 blocks and a short one.
        let chunk = 256 * 1024;
        let size = 2 * chunk as usize + 2 * BLOCK_SIZE as usize + 100;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let header = ManifestHeader::new("f", size as u64, chunk).unwrap();
        assert_eq!((header.blocks_per_chunk(), header.blocks_in(2)), (16, 3));
        assert_eq!(header.leaves_len(), (16 + 16 + 3) * 32);
        for piece in [1000, 65536, size] {
            let mut b = ManifestBuilder::new(header.clone());
            let (mut leaves, mut roots) = (Vec::new(), Vec::new());
            for p in data.chunks(piece) {
                b.update(p, |built| match built {
                    Built::Leaf { index, leaf } => {
                        assert_eq!(index as usize, leaves.len());
                        leaves.push(leaf)
                    }
                    Built::Chunk { index, hash } => {
                        assert_eq!(index as usize, roots.len());
                        roots.push(hash)
                    }
                })
                .unwrap();
            }
            b.finish().unwrap();
            assert_eq!(leaves.len(), 35);
            assert_eq!(leaves[34], leaf(&data[size - 100..]));
            for (c, root) in roots.iter().enumerate() {
                let start = c * chunk as usize;
                let bytes = &data[start..(start + chunk as usize).min(size)];
                assert_eq!(*root, ChunkHash::of(bytes, chunk));
                let first = (header.leaf_offset(c as u32) / 32) as usize;
                let n = header.blocks_in(c as u32) as usize;
                assert_eq!(root.0, reference_root(&leaves[first..first + n], 16));
            }
        }
    }

    #[test]
    fn chunk_size_choice_keeps_chunk_count_within_limit() {
        assert_eq!(ManifestHeader::pick_chunk_size(1 << 30, 8192), 256 * 1024);
        assert_eq!(ManifestHeader::pick_chunk_size(1 << 30, 1024), 1 << 20);
        assert_eq!(ManifestHeader::pick_chunk_size(10, 1), 256 * 1024);
    }
}
