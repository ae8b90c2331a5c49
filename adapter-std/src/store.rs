//! File storage for a peer: what it shares, what it downloads, and what survives a crash.
//!
//! # Shared files
//!
//! Sharing a file needs its manifest (the merkle root of every chunk) and its leaves (the
//! SHA-256 of every 16 KiB block, 0.2% of the file's size, served to downloaders so they can
//! check each block). Building them reads the whole file once; the result is cached in the
//! state directory (`<state>/shared/<key>.manifest` and `<key>.leaves`, keyed by the file's
//! absolute path) with the file's size and modification time, so sharing the same unchanged
//! file again starts at once. The leaves are read from their file as they are served, never
//! held in memory (unless the state directory cannot be written).
//!
//! # Downloads
//!
//! A download to `OUT` writes `OUT.part` with positional writes as payload arrives, the leaves
//! of its chunks to `OUT.shoal-leaves` as they arrive, and keeps `OUT.shoal-journal`: the file
//! id, the manifest, then the index of every chunk verified so far. Journal records are made
//! durable in batches, each only after the data and leaves they vouch for were synced, on a
//! thread of their own (`syncer.rs`) so the receive loop never waits for the disk. The
//! part file's space is reserved when the manifest arrives, so a disk too small fails then.
//! Killed at any instant, a download started again with the same output resumes from the
//! journal without fetching its chunks again. `OUT` itself appears only when
//! every chunk is verified and synced: `OUT.part` is renamed to it, the journal removed, and the
//! leaves moved to the shared-file cache.
//!
//! The state directory is `$SHOAL_STATE_DIR`, else `$XDG_STATE_HOME/shoal`, else
//! `~/.local/state/shoal`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context};
use proto_core::manifest::{Built, ManifestBuilder, ManifestHeader};
use proto_core::storage::{Region, StorageKey};
use proto_core::wire::FileId;
use sha2::{Digest, Sha256};

use proto_core::storage::Storage;

use crate::folder::{scan, FolderData, Layout};
use crate::hasher::{ReadAt, SharedRead};
use crate::syncer::{Durable, Syncer};

// Version 2: chunk hashes are merkle roots over 16 KiB blocks, with leaves beside them.
// Version 3: the header has a layout length, and the body a folder's layout.
const JOURNAL_MAGIC: &[u8; 8] = b"SHOALJ3\n";
const MANIFEST_MAGIC: &[u8; 8] = b"SHOALM3\n";
/// Journal records are synced after this many, or this long after the first unsynced one.
const JOURNAL_BATCH: usize = 32;
const JOURNAL_DELAY: Duration = Duration::from_millis(500);

/// The state directory (see the module docs).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("shoal");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/shoal")
}

/// A manifest with its body, as the adapter keeps it.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The file id.
    pub id: FileId,
    /// The header.
    pub header: ManifestHeader,
    /// The body: every chunk root, 32 bytes each, then a folder's layout.
    pub body: Vec<u8>,
    /// Where the leaves are (a shared file's; a download's are beside it).
    pub leaves: LeafSource,
}

/// Where a shared file's leaves are kept.
#[derive(Clone, Debug)]
pub enum LeafSource {
    /// In a file of the cache.
    File(PathBuf),
    /// In memory: the cache could not be written.
    Memory(Vec<u8>),
    /// Nowhere yet (a download's, until its manifest arrives).
    None,
}

/// A file's bytes (or a folder's, as one stream: [`FolderData`]), shared with the hashing
/// thread ([`crate::hasher`]) and the sync thread.
#[derive(Clone)]
pub(crate) enum Data {
    File(Arc<File>),
    Folder(Arc<FolderData>),
}

impl Data {
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Data::File(f) => f.write_all_at(data, offset),
            Data::Folder(d) => d.write_all_at(data, offset),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Data::File(f) => FileExt::read_at(&**f, buf, offset),
            Data::Folder(d) => ReadAt::read_at(&**d, buf, offset),
        }
    }

    /// Makes what was written durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        match self {
            Data::File(f) => f.sync_data(),
            Data::Folder(d) => d.sync(),
        }
    }
}

/// A file's leaves, open for serving (and, for a download, for writing as they arrive).
enum Leaves {
    File(File),
    Memory(Vec<u8>),
}

impl Leaves {
    fn open(source: &LeafSource) -> io::Result<Leaves> {
        Ok(match source {
            LeafSource::File(p) => Leaves::File(File::open(p)?),
            LeafSource::Memory(v) => Leaves::Memory(v.clone()),
            LeafSource::None => Leaves::Memory(Vec::new()),
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Leaves::File(f) => FileExt::read_at(f, buf, offset),
            Leaves::Memory(v) => {
                let start = (offset as usize).min(v.len());
                let n = buf.len().min(v.len() - start);
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
        }
    }
}

/// The cache files of the file at absolute path `abs`: its manifest and its leaves.
fn cache_paths(abs: &Path) -> (PathBuf, PathBuf) {
    let key = hex::encode(Sha256::digest(abs.as_os_str().as_encoded_bytes()));
    let dir = state_dir().join("shared");
    (
        dir.join(format!("{key}.manifest")),
        dir.join(format!("{key}.leaves")),
    )
}

/// Builds (or loads from the cache) the manifest of `path`, with chunk size `chunk_size` or,
/// if `None`, one chosen for the file's size.
pub fn manifest_for(
    path: &Path,
    chunk_size: Option<u32>,
    max_chunks: u32,
) -> anyhow::Result<Manifest> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() && !meta.is_dir() {
        bail!("{} is not a regular file or a folder", path.display());
    }
    let abs =
        fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| {
            format!(
                "{} has no usable file name (it must be UTF-8)",
                path.display()
            )
        })?
        .to_owned();
    // A folder: its files as one stream, their list (the layout) after the chunk roots.
    let folder = meta.is_dir().then(|| scan(&abs)).transpose()?;
    let (size, mtime) = match &folder {
        Some(s) => (s.layout.size(), s.stamp),
        None => (meta.len(), mtime_of(&meta)),
    };
    let chunk = chunk_size.unwrap_or_else(|| ManifestHeader::pick_chunk_size(size, max_chunks));
    let (cache, leaves_path) = cache_paths(&abs);
    if let Some(m) = read_cached(&cache, &leaves_path, size, mtime, chunk) {
        tracing::info!(
            "{}: manifest from cache (unchanged since it was hashed)",
            path.display()
        );
        return Ok(m);
    }
    let layout = folder.as_ref().map(|s| s.layout.encode());
    match &folder {
        Some(s) => tracing::info!(
            "{}: hashing {} files, {size} bytes",
            path.display(),
            s.layout.files.len()
        ),
        None => tracing::info!("{}: hashing {size} bytes", path.display()),
    }
    let header = match &layout {
        Some(l) => ManifestHeader::folder(&name, size, chunk, l.len() as u32),
        None => ManifestHeader::new(&name, size, chunk),
    }
    .map_err(|e| anyhow::anyhow!("cannot share {}: {e}", path.display()))?;
    let mut builder = ManifestBuilder::new(header);
    let mut body = Vec::with_capacity(builder.header().body_len() as usize);
    let mut leaves = Vec::with_capacity(builder.header().leaves_len() as usize);
    // A folder is read as one stream across its files, each opened once, in order.
    let data: Box<dyn ReadAt> = match &folder {
        Some(s) => Box::new(FolderData::open(&abs, &s.layout, false)),
        None => {
            Box::new(File::open(&abs).with_context(|| format!("cannot open {}", path.display()))?)
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        let n = data
            .read_at(&mut buf[..want], at)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        at += n as u64;
        builder
            .update(&buf[..n], |built| match built {
                Built::Leaf { leaf, .. } => leaves.extend_from_slice(&leaf),
                Built::Chunk { hash, .. } => body.extend_from_slice(&hash.0),
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(l) = &layout {
        body.extend_from_slice(l);
    }
    let (header, id) = builder
        .finish_with_layout(layout.as_deref().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The leaves are served from the cache; a cache that cannot be written keeps them in
    // memory, and only costs a rehash next time.
    let leaves = match write_atomically(&leaves_path, &leaves) {
        Ok(()) => LeafSource::File(leaves_path),
        Err(_) => LeafSource::Memory(leaves),
    };
    let m = Manifest {
        id,
        header,
        body,
        leaves,
    };
    let _ = write_cached(&cache, size, mtime, &m);
    Ok(m)
}

fn mtime_of(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// What a cached manifest of `path` is checked against: a file's size and modification time;
/// a folder's size and the stamp of its files ([`crate::folder::Scanned::stamp`]).
fn stamp(path: &Path) -> anyhow::Result<(u64, u128)> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        let s = scan(path)?;
        return Ok((s.layout.size(), s.stamp));
    }
    Ok((meta.len(), mtime_of(&meta)))
}

fn read_cached(path: &Path, leaves: &Path, size: u64, mtime: u128, chunk: u32) -> Option<Manifest> {
    let bytes = fs::read(path).ok()?;
    let rest = bytes.strip_prefix(MANIFEST_MAGIC)?;
    let (s, rest) = rest.split_at_checked(8)?;
    let (t, rest) = rest.split_at_checked(16)?;
    if u64::from_le_bytes(s.try_into().ok()?) != size
        || u128::from_le_bytes(t.try_into().ok()?) != mtime
    {
        return None;
    }
    let (id, header, body) = decode_manifest(rest)?;
    let leaves_ok = fs::metadata(leaves).is_ok_and(|m| m.len() == header.leaves_len());
    (header.chunk_size == chunk && header.size == size && leaves_ok).then(|| Manifest {
        id,
        header,
        body: body.to_vec(),
        leaves: LeafSource::File(leaves.to_owned()),
    })
}

fn write_cached(path: &Path, size: u64, mtime: u128, m: &Manifest) -> io::Result<()> {
    let mut bytes = MANIFEST_MAGIC.to_vec();
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&mtime.to_le_bytes());
    encode_manifest(&mut bytes, m);
    write_atomically(path, &bytes)
}

/// `id ++ u16 header length ++ postcard header ++ body`.
pub(crate) fn encode_manifest(out: &mut Vec<u8>, m: &Manifest) {
    out.extend_from_slice(&m.id.0);
    let header = postcard::to_stdvec(&m.header).unwrap_or_default();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&m.body);
}

/// Reads what [`encode_manifest`] wrote; returns the id, header, body, and checks the
/// body's length against the header. Trailing bytes are returned as part of nothing: the
/// caller slices them off with [`manifest_len`].
pub(crate) fn decode_manifest(bytes: &[u8]) -> Option<(FileId, ManifestHeader, &[u8])> {
    let (id, rest) = bytes.split_at_checked(32)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = u16::from_le_bytes(len.try_into().ok()?) as usize;
    let (header, rest) = rest.split_at_checked(len)?;
    let header: ManifestHeader = postcard::from_bytes(header).ok()?;
    header.validate().ok()?;
    let (body, _) = rest.split_at_checked(usize::try_from(header.body_len()).ok()?)?;
    Some((FileId(id.try_into().ok()?), header, body))
}

pub(crate) fn manifest_len(header: &ManifestHeader) -> usize {
    32 + 2 + postcard::to_stdvec(header).map_or(0, |h| h.len()) + header.body_len() as usize
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Starts a download of `m` to `out` with its manifest already known (from a metainfo file):
/// the part file (its space reserved), the leaves file and the journal, as when a manifest
/// arrives; the download then resumes from that journal with nothing verified yet.
pub fn prepare_download(out: &Path, m: &Manifest) -> io::Result<()> {
    create_download(out, m).map(drop)
}

/// Creates a download's part and leaves files, sized, and its journal with the manifest.
/// A folder's part is a folder, `OUT.part/`, with every file made at its size.
fn create_download(out: &Path, m: &Manifest) -> io::Result<(Data, File, PathBuf)> {
    let header = &m.header;
    let (part_path, journal_path) = part_paths(out);
    let data = if header.is_folder() {
        let layout = Layout::of_body(header, &m.body).map_err(io::Error::other)?;
        // `check_output` may have left an empty part file to test that the folder is writable.
        if fs::metadata(&part_path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            fs::remove_file(&part_path)?;
        }
        Data::Folder(Arc::new(FolderData::create(&part_path, &layout)?))
    } else {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part_path)?;
        f.set_len(header.size)?;
        reserve(&f, header.size)?;
        Data::File(Arc::new(f))
    };
    let l = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(leaves_path(out))?;
    l.set_len(header.leaves_len())?;
    let mut bytes = JOURNAL_MAGIC.to_vec();
    encode_manifest(
        &mut bytes,
        &Manifest {
            id: m.id,
            header: header.clone(),
            body: m.body.clone(),
            leaves: LeafSource::None,
        },
    );
    write_atomically(&journal_path, &bytes)?;
    Ok((data, l, journal_path))
}

/// Opens `path` for writing, made (with its folders) if missing, its content kept.
pub(crate) fn open_creating(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// An exclusive lock on a download's output, held by the process writing it: an advisory
/// `flock` on `OUT.shoal-lock`, so a second `shoal get` to the same output is refused at once
/// instead of racing the first. The kernel drops it when the process dies (kill -9 included);
/// the file is removed when the download ends here.
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    /// Takes the lock on `out`, or says (one line) that another shoal holds it.
    pub fn take(out: &Path) -> io::Result<OutputLock> {
        use rustix::fs::{flock, FlockOperation};
        let path = with_suffix(out, ".shoal-lock");
        let file = open_creating(&path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(OutputLock { path, _file: file }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "another shoal is downloading to {}; wait for it, or choose another path with -o",
                    out.display()
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What a resumable download left behind.
pub struct Resume {
    /// The manifest (body included).
    pub manifest: Manifest,
    /// Chunks verified before the download stopped.
    pub verified: Vec<u32>,
}

/// The journal and part file paths of a download to `out`.
pub fn part_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        with_suffix(out, ".part"),
        with_suffix(out, ".shoal-journal"),
    )
}

/// Where a download to `out` keeps the leaves that arrived.
pub fn leaves_path(out: &Path) -> PathBuf {
    with_suffix(out, ".shoal-leaves")
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Reads the journal of a download to `out` for `id`, if one exists and matches.
pub fn read_journal(out: &Path, id: &FileId) -> Option<Resume> {
    let (part, journal) = part_paths(out);
    let bytes = fs::read(&journal).ok()?;
    let rest = bytes.strip_prefix(JOURNAL_MAGIC)?;
    let (jid, header, body) = decode_manifest(rest)?;
    if jid != *id || !part.exists() || !leaves_path(out).exists() {
        return None;
    }
    let records = &rest[manifest_len(&header)..];
    let count = header.chunk_count();
    // A record torn by a crash (fewer than 4 bytes) is ignored: that chunk is fetched again.
    let verified = records
        .chunks_exact(4)
        .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
        .filter(|&c| c < count)
        .collect();
    Some(Resume {
        manifest: Manifest {
            id: jid,
            header,
            body: body.to_vec(),
            leaves: LeafSource::None,
        },
        verified,
    })
}

enum Slot {
    /// A whole file being shared; `path` is where a finished download put it.
    Shared {
        data: Data,
        body: Vec<u8>,
        leaves: Leaves,
        path: Option<PathBuf>,
    },
    /// A download: the body streams in before the manifest is checked; the part file exists once
    /// it is. Without an output path the manifest's name (in the current folder) is taken.
    Fetch {
        out: Option<PathBuf>,
        /// Where a download named by its manifest goes (else the current folder).
        dir: Option<PathBuf>,
        /// The output already exists: once the manifest is known it is checked (by the
        /// command) instead of downloaded; no part file or journal is made.
        existing: bool,
        /// Held while this process writes the output (see [`OutputLock`]).
        lock: Option<OutputLock>,
        /// Boxed: a header is large, and a store holds a slot per file.
        manifest: Option<Box<(FileId, ManifestHeader)>>,
        body: Vec<u8>,
        part: Option<Data>,
        leaves: Option<File>,
        /// The sync thread's handles on the part file, leaves and journal.
        durable: Option<Arc<Durable>>,
        unsynced: Vec<u32>,
        first_unsynced: Option<Instant>,
    },
}

/// The bytes of `m` at `path`: the file, or the folder's files (opened for writing too if
/// `writable`).
fn open_data(path: &Path, m: &Manifest, writable: bool) -> io::Result<Data> {
    if m.header.is_folder() {
        let layout = Layout::of_body(&m.header, &m.body).map_err(io::Error::other)?;
        return Ok(Data::Folder(Arc::new(FolderData::open(
            path, &layout, writable,
        ))));
    }
    let f = OpenOptions::new().read(true).write(writable).open(path)?;
    Ok(Data::File(Arc::new(f)))
}

/// A peer's storage: one entry per core file slot.
#[derive(Default)]
pub struct FileStore {
    slots: HashMap<u16, Slot>,
    /// Started by the first journal batch.
    syncer: Option<Syncer>,
}

impl FileStore {
    /// Serves `path` (already described by `m`) under `slot`.
    pub fn add_shared(&mut self, slot: u16, path: &Path, m: &Manifest) -> io::Result<()> {
        let data = open_data(path, m, false)?;
        self.slots.insert(
            slot,
            Slot::Shared {
                data,
                body: m.body.clone(),
                leaves: Leaves::open(&m.leaves)?,
                path: None,
            },
        );
        Ok(())
    }

    /// A new download under `slot` to `out`, or (if `None`) to the manifest's name in `dir`
    /// (else the current folder); its manifest will stream in. An output that exists is
    /// checked rather than downloaded (see [`FileStore::existing`]); one that another process
    /// is writing is refused.
    pub fn add_fetch(
        &mut self,
        slot: u16,
        out: Option<PathBuf>,
        dir: Option<PathBuf>,
    ) -> io::Result<()> {
        let (lock, existing) = match &out {
            Some(o) => (Some(OutputLock::take(o)?), output_exists(o)),
            None => (None, false),
        };
        self.slots.insert(
            slot,
            Slot::Fetch {
                out,
                dir,
                existing,
                lock,
                manifest: None,
                body: Vec::new(),
                part: None,
                leaves: None,
                durable: None,
                unsynced: Vec::new(),
                first_unsynced: None,
            },
        );
        Ok(())
    }

    /// The output of the download in `slot`, if it existed before the download (found when
    /// the manifest came): the command checks its content and seeds it instead.
    pub fn existing(&self, slot: u16) -> Option<&Path> {
        match self.slots.get(&slot)? {
            Slot::Fetch {
                existing: true,
                out,
                ..
            } => out.as_deref(),
            _ => None,
        }
    }

    /// Forgets `slot` (a fetch the command cancelled); its lock, if any, is released.
    pub fn remove(&mut self, slot: u16) {
        self.slots.remove(&slot);
    }

    /// A resumed download to `out` under `slot`.
    pub fn add_resumed(&mut self, slot: u16, out: PathBuf, r: &Resume) -> io::Result<()> {
        let lock = OutputLock::take(&out)?;
        let (part_path, journal) = part_paths(&out);
        let part = if r.manifest.header.is_folder() {
            // Every file is there, at its size: made when the manifest came.
            open_data(&part_path, &r.manifest, true)?
        } else {
            let part = OpenOptions::new().read(true).write(true).open(&part_path)?;
            part.set_len(r.manifest.header.size)?;
            Data::File(Arc::new(part))
        };
        let leaves = OpenOptions::new()
            .read(true)
            .write(true)
            .open(leaves_path(&out))?;
        leaves.set_len(r.manifest.header.leaves_len())?;
        let durable = Arc::new(Durable {
            part: part.clone(),
            leaves: leaves.try_clone()?,
            journal: OpenOptions::new().append(true).open(journal)?,
        });
        self.slots.insert(
            slot,
            Slot::Fetch {
                out: Some(out),
                dir: None,
                existing: false,
                lock: Some(lock),
                manifest: Some(Box::new((r.manifest.id, r.manifest.header.clone()))),
                body: r.manifest.body.clone(),
                part: Some(part),
                leaves: Some(leaves),
                durable: Some(durable),
                unsynced: Vec::new(),
                first_unsynced: None,
            },
        );
        Ok(())
    }

    /// Where the download in `slot` is written (or, once complete, was moved to).
    pub fn path(&self, slot: u16) -> Option<&Path> {
        match self.slots.get(&slot)? {
            Slot::Shared { path, .. } => path.as_deref(),
            Slot::Fetch { out, .. } => out.as_deref(),
        }
    }

    /// Where the download in `slot` ended up, once it is complete and in its final place.
    pub fn final_path(&self, slot: u16) -> Option<&Path> {
        match self.slots.get(&slot)? {
            Slot::Shared { path, .. } => path.as_deref(),
            Slot::Fetch { .. } => None,
        }
    }

    /// Syncs journals whose oldest unsynced record is older than the batch delay; reports a
    /// sync that failed since the last tick.
    pub fn tick(&mut self) -> io::Result<()> {
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_error) {
            return Err(e);
        }
        let due: Vec<u16> = self
            .slots
            .iter()
            .filter_map(|(s, slot)| match slot {
                Slot::Fetch {
                    first_unsynced: Some(t),
                    ..
                } if t.elapsed() >= JOURNAL_DELAY => Some(*s),
                _ => None,
            })
            .collect();
        for s in due {
            self.sync_journal(s)?;
        }
        Ok(())
    }

    /// Hands the unsynced records of `slot` to the sync thread ([`crate::syncer`]: data
    /// first, then the records that vouch for it), started now if this is the first batch.
    fn sync_journal(&mut self, slot: u16) -> io::Result<()> {
        let Some(Slot::Fetch {
            durable: Some(durable),
            unsynced,
            first_unsynced,
            ..
        }) = self.slots.get_mut(&slot)
        else {
            return Ok(());
        };
        if unsynced.is_empty() {
            return Ok(());
        }
        if self.syncer.is_none() {
            self.syncer = Some(Syncer::start()?);
        }
        if let Some(s) = &self.syncer {
            s.submit(durable.clone(), unsynced);
        }
        unsynced.clear();
        *first_unsynced = None;
        Ok(())
    }

    /// Makes every pending journal record durable, and waits for it (on shutdown).
    pub fn flush(&mut self) -> io::Result<()> {
        let slots: Vec<u16> = self.slots.keys().copied().collect();
        for s in slots {
            self.sync_journal(s)?;
        }
        self.syncer.as_ref().map_or(Ok(()), Syncer::wait)
    }
}

/// Reserves the disk space of a download's `len` bytes up front: a disk too small fails now,
/// with one clear error, rather than at some chunk halfway; and writes into reserved space
/// cost the file system less than writes that allocate as they go (BENCHMARKS.md). A file
/// system that cannot reserve (tmpfs before Linux 3.5, some network file systems) just
/// allocates as it writes.
pub(crate) fn reserve(f: &File, len: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(f, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::INVAL => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a download's output is already there, as a file or a folder: it is then checked
/// against the manifest (a folder's files against its layout) and seeded if it is the content
/// asked for, never downloaded over.
pub fn output_exists(out: &Path) -> bool {
    fs::metadata(out).is_ok_and(|m| m.is_file() || m.is_dir())
}

/// `out` must not exist yet, and its folder must be writable. A download whose part file and
/// journal are both there is being resumed, which is fine.
pub fn check_output(out: &Path) -> io::Result<()> {
    if out.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; remove it or choose another path with -o",
                out.display()
            ),
        ));
    }
    let (part, journal) = part_paths(out);
    if part.exists() && journal.exists() {
        return Ok(());
    }
    // Creating the part file is the test of writability; it is sized when the manifest comes.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map(drop)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot write {}: {e}; choose another path with -o",
                    part.display()
                ),
            )
        })
}

impl FileStore {
    /// The bytes of `key`'s slot, if `key` is its data.
    fn slot_data(&self, key: StorageKey) -> Option<Data> {
        if key.region != Region::Data {
            return None;
        }
        match self.slots.get(&key.slot)? {
            Slot::Shared { data, .. } => Some(data.clone()),
            Slot::Fetch { part, .. } => part.clone(),
        }
    }
}

impl SharedRead for FileStore {
    fn send_source(&mut self, key: StorageKey) -> Option<Arc<File>> {
        match self.slot_data(key)? {
            Data::File(f) => Some(f),
            // A folder's stream is many files: payload is read through the store.
            Data::Folder(_) => None,
        }
    }

    fn shared_reader(&mut self, key: StorageKey) -> Option<Arc<dyn ReadAt>> {
        match self.slot_data(key)? {
            Data::File(f) => Some(f),
            Data::Folder(d) => Some(d),
        }
    }
}

impl Storage for FileStore {
    type Error = io::Error;

    /// The manifest of a download arrived and was checked: create the part file and journal.
    fn manifest_received(
        &mut self,
        slot: u16,
        id: FileId,
        header: &ManifestHeader,
    ) -> io::Result<()> {
        let Some(Slot::Fetch {
            out,
            dir,
            existing,
            lock,
            manifest,
            body,
            part,
            leaves,
            durable,
            ..
        }) = self.slots.get_mut(&slot)
        else {
            return Ok(());
        };
        let out = match out {
            Some(out) => out,
            None => {
                // The manifest's name, checked safe by the core, in the chosen folder.
                let named = match dir {
                    Some(d) => d.join(header.name.as_str()),
                    None => PathBuf::from(header.name.as_str()),
                };
                *lock = Some(OutputLock::take(&named)?);
                *existing = output_exists(&named);
                if !*existing {
                    check_output(&named)?;
                }
                out.insert(named)
            }
        };
        *manifest = Some(Box::new((id, header.clone())));
        if *existing {
            // Checked by the command, not downloaded over.
            return Ok(());
        }
        let m = Manifest {
            id,
            header: header.clone(),
            body: body.clone(),
            leaves: LeafSource::None,
        };
        let (data, l, journal_path) = create_download(out, &m)?;
        *durable = Some(Arc::new(Durable {
            part: data.clone(),
            leaves: l.try_clone()?,
            journal: OpenOptions::new().append(true).open(&journal_path)?,
        }));
        *part = Some(data);
        *leaves = Some(l);
        Ok(())
    }

    /// A chunk was verified: record it (durably, in a batch).
    fn chunk_verified(&mut self, slot: u16, chunk: u32) -> io::Result<()> {
        let Some(Slot::Fetch {
            unsynced,
            first_unsynced,
            ..
        }) = self.slots.get_mut(&slot)
        else {
            return Ok(());
        };
        unsynced.push(chunk);
        first_unsynced.get_or_insert_with(Instant::now);
        if unsynced.len() >= JOURNAL_BATCH {
            self.sync_journal(slot)?;
        }
        Ok(())
    }

    /// Every chunk is verified: sync, move `OUT.part` to `OUT`, drop the journal, and keep
    /// serving the file from its final name ([`FileStore::path`]).
    fn file_complete(&mut self, slot: u16) -> io::Result<()> {
        if !matches!(self.slots.get(&slot), Some(Slot::Fetch { .. })) {
            return Ok(());
        }
        self.sync_journal(slot)?;
        if let Some(s) = &self.syncer {
            s.wait()?;
        }
        let Some(Slot::Fetch {
            out: Some(out),
            manifest: Some(manifest),
            part: Some(part),
            leaves: Some(leaves),
            body,
            ..
        }) = self.slots.remove(&slot)
        else {
            return Err(io::Error::other("the download has no part file"));
        };
        let (id, header) = *manifest;
        part.sync()?;
        let (part_path, journal_path) = part_paths(&out);
        fs::rename(&part_path, &out)?;
        if let Data::Folder(f) = &part {
            f.moved(&out);
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let _ = fs::remove_file(&journal_path);
        // Sharing the finished file later needs no rehash: its manifest and leaves go to the
        // cache (the open leaves file goes on serving wherever its name ends up).
        let downloaded = leaves_path(&out);
        if let (Ok((size, mtime)), Ok(abs)) = (stamp(&out), fs::canonicalize(&out)) {
            let (cache, cached_leaves) = cache_paths(&abs);
            let moved = fs::create_dir_all(cached_leaves.parent().unwrap_or(Path::new(".")))
                .and_then(|()| fs::rename(&downloaded, &cached_leaves))
                .is_ok();
            if moved {
                let _ = write_cached(
                    &cache,
                    size,
                    mtime,
                    &Manifest {
                        id,
                        header,
                        body: body.clone(),
                        leaves: LeafSource::File(cached_leaves),
                    },
                );
            }
        }
        // Another file system (or none writable): the leaves are not kept past this run.
        let _ = fs::remove_file(&downloaded);
        self.slots.insert(
            slot,
            Slot::Shared {
                data: part,
                body,
                leaves: Leaves::File(leaves),
                path: Some(out),
            },
        );
        Ok(())
    }

    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> io::Result<()> {
        match (self.slots.get_mut(&key.slot), key.region) {
            (Some(Slot::Fetch { body, .. }), Region::Hashes) => {
                let end = offset as usize + data.len();
                if body.len() < end {
                    body.resize(end, 0);
                }
                body[offset as usize..end].copy_from_slice(data);
                Ok(())
            }
            (
                Some(Slot::Fetch {
                    part: Some(part), ..
                }),
                Region::Data,
            ) => part.write_all_at(data, offset),
            (
                Some(Slot::Fetch {
                    leaves: Some(leaves),
                    ..
                }),
                Region::Leaves,
            ) => leaves.write_all_at(data, offset),
            _ => Err(io::Error::other("no writable storage for that slot")),
        }
    }

    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (file, body) = match self.slots.get(&key.slot) {
            Some(Slot::Shared { data, body, .. }) => (Some(data), body),
            Some(Slot::Fetch { part, body, .. }) => (part.as_ref(), body),
            None => return Err(io::Error::other("no storage for that slot")),
        };
        if key.region == Region::Leaves {
            return match self.slots.get(&key.slot) {
                Some(Slot::Shared { leaves, .. }) => leaves.read_at(buf, offset),
                Some(Slot::Fetch {
                    leaves: Some(leaves),
                    ..
                }) => FileExt::read_at(leaves, buf, offset),
                _ => Err(io::Error::other("no leaves yet")),
            };
        }
        match key.region {
            Region::Hashes => {
                let start = (offset as usize).min(body.len());
                let n = buf.len().min(body.len() - start);
                buf[..n].copy_from_slice(&body[start..start + n]);
                Ok(n)
            }
            Region::Data | Region::Leaves => file
                .ok_or_else(|| io::Error::other("no data yet"))?
                .read_at(buf, offset),
        }
    }

    fn discard(&mut self, key: StorageKey) {
        if let (Some(Slot::Fetch { body, .. }), Region::Hashes) =
            (self.slots.get_mut(&key.slot), key.region)
        {
            body.clear();
        }
    }
}
