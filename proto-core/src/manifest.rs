//! Manifests (shoal's metainfo): name, size, chunk size, and the SHA-256 of every chunk.
//!
//! # The encoded manifest and the file id
//!
//! The encoded manifest is the postcard encoding of the [`ManifestHeader`] followed by the
//! chunk hashes, 32 bytes each, in chunk order. The [`FileId`] is the SHA-256 of those bytes.
//! Because the hashes come last and raw, the id can be computed (and checked) while the hashes
//! stream past, without ever holding them all: [`FileIdHasher`] does that, and
//! [`ManifestBuilder`] builds a manifest from a file's bytes fed in any pieces.

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
/// Bytes of one chunk hash.
pub const HASH_LEN: usize = 32;
/// The longest postcard encoding of a [`ManifestHeader`].
pub const MAX_HEADER_LEN: usize = MAX_NAME_LEN + 2 + 10 + 5;

/// A file name as carried on the wire.
pub type Name = heapless::String<MAX_NAME_LEN>;

/// The SHA-256 of one chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChunkHash(pub [u8; HASH_LEN]);

impl ChunkHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> ChunkHash {
        ChunkHash(Sha256::digest(data).into())
    }
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
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestError::EmptyName => "file name is empty",
            ManifestError::NameTooLong => "file name is longer than 255 bytes",
            ManifestError::BadName => "file name contains a path separator or control character",
            ManifestError::BadChunkSize => "chunk size is not a power of two from 1 KiB to 16 MiB",
            ManifestError::TooManyChunks => {
                "file needs more than 2^20 chunks; use a larger chunk size"
            }
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
        };
        header.validate()?;
        Ok(header)
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

    /// Bytes of all chunk hashes together: the body that follows a header on the wire.
    pub fn hashes_len(&self) -> u64 {
        u64::from(self.chunk_count()) * HASH_LEN as u64
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

/// Computes a [`FileId`] from a header and the chunk hashes as they stream past.
#[derive(Clone)]
pub struct FileIdHasher {
    sha: Sha256,
    hashes_left: u64,
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
            hashes_left: header.hashes_len(),
        }
    }

    /// Feeds raw hash bytes (any split).
    pub fn update(&mut self, hash_bytes: &[u8]) {
        self.hashes_left = self.hashes_left.saturating_sub(hash_bytes.len() as u64);
        self.sha.update(hash_bytes);
    }

    /// Bytes of hashes still expected.
    pub fn remaining(&self) -> u64 {
        self.hashes_left
    }

    /// The file id; `None` if not exactly the header's number of hash bytes were fed.
    pub fn finish(self) -> Option<FileId> {
        (self.hashes_left == 0).then(|| FileId(self.sha.finalize().into()))
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
        })
    }
}

impl core::error::Error for BuildError {}

/// Builds a manifest from a file's bytes, fed in pieces of any size.
///
/// Each chunk's hash is handed to a callback as soon as the chunk is complete, so the caller
/// can store it (a sidecar file, flash) instead of the builder holding them all.
pub struct ManifestBuilder {
    header: ManifestHeader,
    id: FileIdHasher,
    chunk: Sha256,
    in_chunk: u32,
    index: u32,
    fed: u64,
}

impl ManifestBuilder {
    /// Starts building for a validated header (see [`ManifestHeader::new`]).
    pub fn new(header: ManifestHeader) -> Self {
        ManifestBuilder {
            id: FileIdHasher::new(&header),
            header,
            chunk: Sha256::new(),
            in_chunk: 0,
            index: 0,
            fed: 0,
        }
    }

    /// The header being built.
    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    /// Feeds the next bytes of the file; `on_chunk(index, hash)` runs for each completed chunk.
    pub fn update(
        &mut self,
        mut data: &[u8],
        mut on_chunk: impl FnMut(u32, ChunkHash),
    ) -> Result<(), BuildError> {
        if self.header.size - self.fed < data.len() as u64 {
            return Err(BuildError::TooMuchData);
        }
        self.fed += data.len() as u64;
        while !data.is_empty() {
            let want = self.header.chunk_len(self.index) - self.in_chunk;
            let take = (want as usize).min(data.len());
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u32;
            data = &data[take..];
            if self.in_chunk == self.header.chunk_len(self.index) {
                let hash = ChunkHash(self.chunk.finalize_reset().into());
                self.id.update(&hash.0);
                on_chunk(self.index, hash);
                self.index += 1;
                self.in_chunk = 0;
            }
        }
        Ok(())
    }

    /// Ends the build; returns the header and the file id.
    pub fn finish(self) -> Result<(ManifestHeader, FileId), BuildError> {
        if self.fed != self.header.size {
            return Err(BuildError::TooLittleData);
        }
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
            b.update(p, |i, h| {
                assert_eq!(i as usize, hashes.len());
                hashes.push(h)
            })
            .unwrap();
        }
        let (_, id) = b.finish().unwrap();
        (id, hashes)
    }

    #[test]
    fn chunk_hashes_match_direct_sha256_and_id_is_independent_of_feed_size() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let (id1, h1) = build(&data, 1024, 1);
        let (id2, h2) = build(&data, 1024, 4999);
        assert_eq!(id1, id2);
        assert_eq!(h1, h2);
        assert_eq!(h1.len(), 5);
        assert_eq!(h1[4], ChunkHash::of(&data[4096..]));
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
        assert_eq!(b.update(&[0; 11], |_, _| {}), Err(BuildError::TooMuchData));
        let mut b = ManifestBuilder::new(header);
        b.update(&[0; 9], |_, _| {}).unwrap();
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
        };
        assert_eq!(postcard::to_allocvec(&max).unwrap().len(), MAX_HEADER_LEN);
    }

    #[test]
    fn chunk_size_choice_keeps_chunk_count_within_limit() {
        assert_eq!(ManifestHeader::pick_chunk_size(1 << 30, 8192), 256 * 1024);
        assert_eq!(ManifestHeader::pick_chunk_size(1 << 30, 1024), 1 << 20);
        assert_eq!(ManifestHeader::pick_chunk_size(10, 1), 256 * 1024);
    }
}
