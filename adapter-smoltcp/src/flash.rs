//! Storage on flash: the [`Flash`] a device driver implements, an in-RAM [`RamFlash`] with the
//! same rules for tests, and the [`FlashStore`] that lays one file out on it and survives a
//! reset.
//!
//! # The rules of flash
//!
//! Flash is erased a sector at a time (to `0xff`) and programmed only where it is erased. The
//! core writes everything strictly in order within a region and a chunk: manifest hashes from
//! offset 0 up, and each chunk's bytes from the chunk's start up (its *frontier*; a chunk that
//! failed its hash starts over from its start). So [`FlashStore`] erases a sector exactly when a
//! write reaches the sector's first byte, and never needs to read-modify-write. For that to hold,
//! every chunk must start on a sector boundary: the chunk size must be a multiple of the sector
//! size ([`StorageError::ChunkNotSectorAligned`] otherwise).
//!
//! # Layout
//!
//! ```text
//! [journal sectors][hash sectors][data: chunk 0, chunk 1, ...]
//! ```
//!
//! The journal holds the manifest (file id and header) and then one 4-byte record per
//! verified chunk, appended as each is verified: program-only, erased once per file. A
//! manifest record is written only once its hashes are all stored, and a chunk record only after
//! the chunk's bytes, so after a reset [`FlashStore::open`] finds exactly what can be trusted and
//! [`FlashStore::resume`] hands it back to a peer.
//!
//! # Leaves
//!
//! The leaves of a chunk (the SHA-256 of each 16 KiB block) are not stored: the core writes
//! them as they arrive and keeps the ones it checks in RAM, and it reads stored leaves only to
//! serve them for verified chunks, whose blocks are on flash (a device peer sets
//! `PeerConfig::serve_partial` to false). So writes to [`Region::Leaves`] are dropped and a
//! read hashes the blocks it covers from flash (a chunk's 8 leaves cost one pass over its
//! 128 KiB), which saves 1/512 of the flash.

use proto_core::manifest::{ManifestHeader, HASH_LEN};
use proto_core::peer::{CommandError, Peer};
use proto_core::storage::{Region, StorageKey};
use proto_core::time::Instant;
use proto_core::wire::FileId;
use sha2::{Digest, Sha256};

use crate::{Storage, StorageError};

/// A flash device (or a region of one) as the store needs it.
pub trait Flash {
    /// Bytes per erase sector: a power of two.
    fn sector_size(&self) -> u32;
    /// Bytes in all; a multiple of the sector size.
    fn capacity(&self) -> u32;
    /// Sets every byte of sector `sector` to `0xff`.
    fn erase(&mut self, sector: u32) -> Result<(), FlashError>;
    /// Programs `data` at `addr`. The bytes there must be erased.
    fn program(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError>;
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError>;
}

/// What a flash operation can fail with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashError {
    /// The address range is outside the device.
    OutOfBounds,
    /// A program over bytes that were not erased (a bug in the caller, or worn flash).
    NotErased,
    /// The device reported an error.
    Device,
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashError::OutOfBounds => "address outside the flash",
            FlashError::NotErased => "programmed over bytes that were not erased",
            FlashError::Device => "the flash device failed",
        })
    }
}

impl core::error::Error for FlashError {}

/// Flash in RAM, with the real thing's rules: erase by sector, program only erased bytes.
/// Tests keep its memory across a simulated reset; `B` is any byte buffer (an array on a
/// device, a `Vec` on a host).
pub struct RamFlash<B> {
    mem: B,
    sector: u32,
    /// Sector erases so far (wear, and a check that the store erases only what it must).
    pub erases: u32,
}

#[cfg(feature = "defmt")]
impl<B> defmt::Format for RamFlash<B> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "RamFlash {{ sector: {}, erases: {} }}",
            self.sector,
            self.erases
        )
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> RamFlash<B> {
    /// Flash over `mem` with sectors of `sector` bytes; starts erased.
    ///
    /// `sector` must be a power of two that divides `mem`'s length.
    pub fn new(mut mem: B, sector: u32) -> Self {
        mem.as_mut().fill(0xff);
        RamFlash {
            mem,
            sector,
            erases: 0,
        }
    }

    fn range(&self, addr: u32, len: usize) -> Result<core::ops::Range<usize>, FlashError> {
        let start = addr as usize;
        let end = start.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        if end > self.mem.as_ref().len() {
            return Err(FlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Flash for RamFlash<B> {
    fn sector_size(&self) -> u32 {
        self.sector
    }

    fn capacity(&self) -> u32 {
        u32::try_from(self.mem.as_ref().len()).unwrap_or(u32::MAX)
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        let start = sector
            .checked_mul(self.sector)
            .ok_or(FlashError::OutOfBounds)?;
        let r = self.range(start, self.sector as usize)?;
        self.mem.as_mut()[r].fill(0xff);
        self.erases += 1;
        Ok(())
    }

    fn program(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError> {
        let r = self.range(addr, data.len())?;
        let dst = &mut self.mem.as_mut()[r];
        if dst.iter().any(|&b| b != 0xff) {
            return Err(FlashError::NotErased);
        }
        dst.copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.mem.as_ref()[r]);
        Ok(())
    }
}

const MAGIC: [u8; 8] = *b"shoalJ01";
/// Bytes at the start of the journal for the manifest record: magic, length, postcard bytes.
const MANIFEST_AREA: u32 = 512;
const RECORD: u32 = 4;
const EMPTY: u32 = u32::MAX;

/// The manifest as the journal keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestRecord {
    file: FileId,
    header: ManifestHeader,
}

/// One file on a [`Flash`], for a peer with a single file slot (slot 0): its hashes, its data,
/// and a journal of what is verified. See the [module docs](self) for the rules.
pub struct FlashStore<F: Flash> {
    flash: F,
    max_chunks: u32,
    hashes_base: u32,
    data_base: u32,
    /// The manifest, once known (from the journal, or from the peer's event).
    manifest: Option<(FileId, ManifestHeader)>,
    /// Chunk records in the journal.
    records: u32,
}

#[cfg(feature = "defmt")]
impl<F: Flash> defmt::Format for FlashStore<F> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "FlashStore {{ file: {}, verified: {} }}",
            self.manifest.as_ref().map(|(id, _)| *id),
            self.records
        )
    }
}

impl<F: Flash> FlashStore<F> {
    /// A store over `flash` for files of at most `max_chunks` chunks; reads what a previous run
    /// left in the journal. Fails if the flash cannot hold the journal and hashes and one
    /// sector of data.
    pub fn open(mut flash: F, max_chunks: u32) -> Result<Self, StorageError> {
        let s = flash.sector_size();
        let round = |n: u32| n.div_ceil(s).saturating_mul(s);
        let journal = round(MANIFEST_AREA + RECORD * max_chunks);
        let hashes = round(32 * max_chunks);
        let data_base = journal.saturating_add(hashes);
        if s == 0 || !s.is_power_of_two() || data_base.saturating_add(s) > flash.capacity() {
            return Err(StorageError::OutOfSpace);
        }
        let manifest = read_manifest(&mut flash);
        let mut store = FlashStore {
            flash,
            max_chunks,
            hashes_base: journal,
            data_base,
            manifest,
            records: 0,
        };
        if store.manifest.is_some() {
            while store.record(store.records).is_some() {
                store.records += 1;
            }
        }
        Ok(store)
    }

    /// The file whose manifest the journal holds, if any.
    pub fn manifest(&self) -> Option<(FileId, &ManifestHeader)> {
        self.manifest.as_ref().map(|(f, h)| (*f, h))
    }

    /// Chunks recorded as verified.
    pub fn verified(&self) -> u32 {
        self.records
    }

    /// Bytes of file data the flash can hold.
    pub fn data_capacity(&self) -> u32 {
        self.flash.capacity() - self.data_base
    }

    /// The flash, for a test that resets the device.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// After a reset: hands the journal's file to `peer`, with every chunk recorded verified
    /// (a complete file is shared, a partial one fetched on). `Ok(None)` if the journal is empty.
    pub fn resume<const W: usize>(
        &mut self,
        now: Instant,
        peer: &mut Peer<'_, W>,
    ) -> Result<Option<u16>, CommandError> {
        let Some((file, header)) = self.manifest.clone() else {
            return Ok(None);
        };
        // Read back one record at a time: no list of chunks is held in RAM.
        let mut i = 0;
        let records = core::iter::from_fn(|| {
            let r = if i < self.records {
                self.record(i)
            } else {
                None
            };
            i += 1;
            r
        });
        peer.resume(now, file, header, records).map(Some)
    }

    /// Writes a whole file that is already known good (a device's own firmware image, say) so
    /// that [`FlashStore::resume`] shares it: hashes, data from `data(offset, buf)`, manifest
    /// and every chunk record.
    pub fn install(
        &mut self,
        file: FileId,
        header: &ManifestHeader,
        hashes: &[u8],
        mut data: impl FnMut(u64, &mut [u8]),
    ) -> Result<(), StorageError> {
        let hashes_key = StorageKey {
            slot: 0,
            region: Region::Hashes,
        };
        self.write(hashes_key, 0, hashes)?;
        self.begin(file, header.clone())?;
        let data_key = StorageKey {
            slot: 0,
            region: Region::Data,
        };
        let mut buf = [0u8; 256];
        for chunk in 0..header.chunk_count() {
            let start = header.chunk_offset(chunk);
            let len = u64::from(header.chunk_len(chunk));
            let mut at = 0;
            while at < len {
                let n = (len - at).min(buf.len() as u64) as usize;
                data(start + at, &mut buf[..n]);
                self.write(data_key, start + at, &buf[..n])?;
                at += n as u64;
            }
            self.append(chunk)?;
        }
        Ok(())
    }

    fn record(&mut self, i: u32) -> Option<u32> {
        if i >= self.max_chunks {
            return None;
        }
        let mut b = [0u8; 4];
        self.flash.read(MANIFEST_AREA + RECORD * i, &mut b).ok()?;
        let c = u32::from_le_bytes(b);
        let count = self.manifest.as_ref()?.1.chunk_count();
        (c != EMPTY && c < count).then_some(c)
    }

    /// The journal is everything before the hashes.
    fn journal_len(&self) -> u32 {
        self.hashes_base
    }

    fn erase_journal(&mut self) -> Result<(), StorageError> {
        let s = self.flash.sector_size();
        for sector in 0..self.journal_len() / s {
            self.flash.erase(sector)?;
        }
        self.records = 0;
        Ok(())
    }

    /// A new manifest is complete (hashes stored): the journal starts over with it.
    fn begin(&mut self, file: FileId, header: ManifestHeader) -> Result<(), StorageError> {
        if header.chunk_count() > self.max_chunks {
            return Err(StorageError::OutOfSpace);
        }
        if !header.chunk_size.is_multiple_of(self.flash.sector_size()) {
            return Err(StorageError::ChunkNotSectorAligned);
        }
        if header.size > u64::from(self.data_capacity()) {
            return Err(StorageError::OutOfSpace);
        }
        self.erase_journal()?;
        let record = ManifestRecord { file, header };
        let mut buf = [0u8; MANIFEST_AREA as usize];
        buf[..8].copy_from_slice(&MAGIC);
        let len = postcard::to_slice(&record, &mut buf[10..])
            .map_err(|_| StorageError::OutOfSpace)?
            .len();
        buf[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        self.flash.program(0, &buf[..10 + len])?;
        self.manifest = Some((record.file, record.header));
        Ok(())
    }

    fn append(&mut self, chunk: u32) -> Result<(), StorageError> {
        if self.records >= self.max_chunks {
            return Err(StorageError::OutOfSpace);
        }
        let addr = MANIFEST_AREA + RECORD * self.records;
        self.flash.program(addr, &chunk.to_le_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Erases every sector whose first byte lies in `[addr, addr + len)`: the first write to
    /// reach a sector (writes come in order) finds it erased.
    fn erase_ahead(&mut self, addr: u32, len: u32) -> Result<(), StorageError> {
        let s = self.flash.sector_size();
        let mut sector = addr.div_ceil(s);
        while sector.saturating_mul(s) < addr.saturating_add(len) {
            self.flash.erase(sector)?;
            sector += 1;
        }
        Ok(())
    }

    fn region(&self, key: StorageKey) -> Result<(u32, u32), StorageError> {
        if key.slot != 0 {
            return Err(StorageError::NoSuchSlot);
        }
        Ok(match key.region {
            Region::Hashes => (self.hashes_base, self.data_base - self.hashes_base),
            Region::Data | Region::Leaves => {
                (self.data_base, self.flash.capacity() - self.data_base)
            }
        })
    }

    /// Reads leaves at `offset` of the leaves region by hashing their blocks on flash.
    fn read_leaves(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let Some((_, header)) = self.manifest.as_ref() else {
            return Ok(0);
        };
        let (per_chunk, block) = (u64::from(header.blocks_per_chunk()), header.block_len());
        let chunk_size = u64::from(header.chunk_size);
        let size = header.size;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (k, within) = (at / HASH_LEN as u64, (at % HASH_LEN as u64) as usize);
            let start = (k / per_chunk) * chunk_size + (k % per_chunk) * u64::from(block);
            if start >= size {
                break;
            }
            let len = (size - start).min(u64::from(block)) as u32;
            let start = u32::try_from(start).map_err(|_| StorageError::OutOfSpace)?;
            let leaf = self.hash_block(self.data_base + start, len)?;
            let n = (HASH_LEN - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&leaf[within..within + n]);
            done += n;
        }
        Ok(done)
    }

    /// The SHA-256 of `len` bytes of flash at `addr`, read a little at a time.
    fn hash_block(&mut self, addr: u32, len: u32) -> Result<[u8; HASH_LEN], StorageError> {
        let mut sha = Sha256::new();
        let mut piece = [0u8; 64];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(piece.len() as u32);
            self.flash.read(addr + at, &mut piece[..n as usize])?;
            sha.update(&piece[..n as usize]);
            at += n;
        }
        Ok(sha.finalize().into())
    }
}

fn read_manifest<F: Flash>(flash: &mut F) -> Option<(FileId, ManifestHeader)> {
    let mut buf = [0u8; MANIFEST_AREA as usize];
    flash.read(0, &mut buf).ok()?;
    if buf[..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([buf[8], buf[9]]));
    let bytes = buf.get(10..10 + len)?;
    let r: ManifestRecord = postcard::from_bytes(bytes).ok()?;
    Some((r.file, r.header))
}

impl<F: Flash> Storage for FlashStore<F> {
    type Error = StorageError;

    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if key.region == Region::Leaves {
            // Computed from the data when read (see the module docs).
            return Ok(());
        }
        let (base, cap) = self.region(key)?;
        let len = u32::try_from(data.len()).map_err(|_| StorageError::OutOfSpace)?;
        let offset = u32::try_from(offset).map_err(|_| StorageError::OutOfSpace)?;
        if offset.checked_add(len).is_none_or(|end| end > cap) {
            return Err(StorageError::OutOfSpace);
        }
        if key.region == Region::Hashes && offset == 0 {
            // New hashes overwrite the old file's: its journal no longer describes the flash.
            self.erase_journal()?;
            self.manifest = None;
        }
        if key.region == Region::Data {
            let chunk = self.manifest.as_ref().map(|(_, h)| h.chunk_size);
            if chunk.is_none_or(|c| !c.is_multiple_of(self.flash.sector_size())) {
                return Err(StorageError::ChunkNotSectorAligned);
            }
        }
        self.erase_ahead(base + offset, len)?;
        self.flash.program(base + offset, data)?;
        Ok(())
    }

    fn read(
        &mut self,
        key: StorageKey,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, StorageError> {
        if key.region == Region::Leaves {
            return self.read_leaves(offset, buf);
        }
        let (base, cap) = self.region(key)?;
        let offset = u32::try_from(offset).map_err(|_| StorageError::OutOfSpace)?;
        let n = (cap.saturating_sub(offset) as usize).min(buf.len());
        self.flash.read(base + offset, &mut buf[..n])?;
        Ok(n)
    }

    fn discard(&mut self, _key: StorageKey) {
        // Hashes that failed their id stay until the next manifest overwrites them; the
        // journal was already cleared when they started.
    }

    fn manifest_received(
        &mut self,
        slot: u16,
        file: FileId,
        header: &ManifestHeader,
    ) -> Result<(), StorageError> {
        if slot != 0 {
            return Err(StorageError::NoSuchSlot);
        }
        self.begin(file, header.clone())
    }

    fn chunk_verified(&mut self, slot: u16, chunk: u32) -> Result<(), StorageError> {
        if slot != 0 {
            return Err(StorageError::NoSuchSlot);
        }
        self.append(chunk)
    }
}
