//! Folders: a tree of files shared as one unit, with one id and one link.
//!
//! The core sees a folder as one stream of bytes: its files' contents, one after another in
//! the order of their relative paths, cut into chunks as a single file is (see
//! `proto_core::manifest`, "Folders"). This module is the host's side of it:
//!
//! - the **layout**, the list of `(relative path, size)` carried after the chunk roots in the
//!   manifest (its encoding, and the checks a downloader makes before it creates anything:
//!   relative paths of safe names only, no `..`, no absolute path, each name one the file
//!   system can hold, in canonical order, sizes adding up to the manifest's);
//! - [`scan`], which lists a folder to share;
//! - [`FolderData`], the stream's bytes read and written where they live, in many files, with a
//!   bounded number of them open at once (a folder of ten thousand files never holds ten
//!   thousand descriptors).
//!
//! Only regular files are carried: empty folders and symbolic links are not (a link is
//! skipped with a warning when sharing).
//!
//! # Layout encoding
//!
//! The postcard encoding of a list of `(path, size)`: a varint count, then per file the path
//! as a varint length and UTF-8 bytes, and the size as a varint. Paths use `/` between names
//! and are sorted by their bytes; no path is a prefix folder of another.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Context};
use proto_core::manifest::{validate_name, ManifestHeader};

use crate::hasher::ReadAt;

/// The longest relative path a layout may hold, in bytes (Linux's `PATH_MAX` is 4096, and the
/// download's folder comes in front of it).
pub const MAX_PATH_LEN: usize = 3072;

/// Files kept open at once by one [`FolderData`].
const OPEN_FILES: usize = 64;

/// One file of a folder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderFile {
    /// Its path inside the folder, names joined by `/`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The files of a folder, in canonical order (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The files.
    pub files: Vec<FolderFile>,
}

impl Layout {
    /// The encoded layout.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.files).unwrap_or_default()
    }

    /// Decodes and checks the layout at the end of a folder manifest's `body` (after the chunk
    /// roots). The error says what is wrong, for the user.
    pub fn of_body(header: &ManifestHeader, body: &[u8]) -> Result<Layout, String> {
        let start = usize::try_from(header.hashes_len()).map_err(|_| "too large".to_owned())?;
        let bytes = body
            .get(start..)
            .filter(|b| b.len() as u64 == u64::from(header.layout_len))
            .ok_or("the folder's file list is missing")?;
        Layout::decode(bytes, header.size)
    }

    /// Decodes `bytes` and checks every rule against a folder of `size` bytes.
    pub fn decode(bytes: &[u8], size: u64) -> Result<Layout, String> {
        let (files, rest): (Vec<FolderFile>, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|_| "the folder's file list cannot be read".to_owned())?;
        if !rest.is_empty() {
            return Err("the folder's file list has bytes after its end".into());
        }
        let layout = Layout { files };
        layout.check(size)?;
        Ok(layout)
    }

    /// Every rule: safe relative paths, canonical order, no file where another needs a folder,
    /// sizes adding up to `size`.
    pub fn check(&self, size: u64) -> Result<(), String> {
        let mut folders: HashSet<&str> = HashSet::new();
        let mut total: u64 = 0;
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path)?;
            if i > 0 && self.files[i - 1].path.as_bytes() >= f.path.as_bytes() {
                return Err(format!(
                    "the folder's file list is out of order or repeats a path at '{}'",
                    f.path
                ));
            }
            let mut at = 0;
            while let Some(slash) = f.path[at..].find('/') {
                folders.insert(&f.path[..at + slash]);
                at += slash + 1;
            }
            total = total
                .checked_add(f.size)
                .ok_or("the folder's file sizes overflow")?;
        }
        if let Some(f) = self
            .files
            .iter()
            .find(|f| folders.contains(f.path.as_str()))
        {
            return Err(format!(
                "'{}' is both a file and a folder in the folder's file list",
                f.path
            ));
        }
        if total != size {
            return Err(format!(
                "the folder's files add up to {total} bytes, not the {size} its manifest says"
            ));
        }
        Ok(())
    }

    /// Bytes of all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A relative path a downloader may create: names joined by `/`, each a safe file name
/// (`validate_name`: not empty, not `.` or `..`, no separator or control character, at most
/// 255 bytes), the whole at most [`MAX_PATH_LEN`] bytes.
fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "a path in the folder is longer than {MAX_PATH_LEN} bytes"
        ));
    }
    if path.starts_with('/') {
        return Err(format!("'{path}' in the folder is an absolute path"));
    }
    for name in path.split('/') {
        validate_name(name).map_err(|e| format!("'{path}' in the folder is unsafe: {e}"))?;
    }
    Ok(())
}

/// What [`scan`] found.
pub struct Scanned {
    /// The files, in canonical order.
    pub layout: Layout,
    /// A stamp of every file's path, size and modification time: a cached manifest is still
    /// good while it is unchanged.
    pub stamp: u128,
}

/// Lists the regular files under `dir` for sharing. Symbolic links are skipped (with a
/// warning); a name that is not UTF-8, or not a safe name, is an error naming it.
pub fn scan(dir: &Path) -> anyhow::Result<Scanned> {
    use sha2::{Digest, Sha256};
    let mut found: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, rel)) = stack.pop() {
        let entries = fs::read_dir(&at).with_context(|| format!("cannot read {}", at.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", at.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| anyhow!("{} has a name that is not UTF-8", path.display()))?;
            validate_name(name).map_err(|e| anyhow!("cannot share {}: {e}", path.display()))?;
            let inner = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if kind.is_symlink() {
                tracing::warn!("{}: a symbolic link, not shared", path.display());
            } else if kind.is_dir() {
                stack.push((path, inner));
            } else if kind.is_file() {
                let meta = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", path.display()))?;
                check_path(&inner).map_err(|e| anyhow!("cannot share {}: {e}", dir.display()))?;
                found.push((inner, path, meta.len()));
            } else {
                tracing::warn!("{}: not a regular file, not shared", path.display());
            }
        }
    }
    found.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut stamp = Sha256::new();
    for (rel, path, size) in &found {
        let mtime = fs::metadata(path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        stamp.update(rel.as_bytes());
        stamp.update([0]);
        stamp.update(size.to_le_bytes());
        stamp.update(mtime.to_le_bytes());
    }
    let digest = stamp.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    let layout = Layout {
        files: found
            .iter()
            .map(|(rel, _, size)| FolderFile {
                path: rel.clone(),
                size: *size,
            })
            .collect(),
    };
    layout
        .check(layout.size())
        .map_err(|e| anyhow!("cannot share {}: {e}", dir.display()))?;
    Ok(Scanned {
        layout,
        stamp: u128::from_le_bytes(first),
    })
}

/// The files open now, most recently used last.
#[derive(Default)]
struct Open {
    files: Vec<(usize, std::sync::Arc<File>)>,
}

/// A folder's bytes as one stream, read and written in the files where they live.
pub struct FolderData {
    /// The folder (it moves once: a finished download's `OUT.part` becomes `OUT`).
    root: Mutex<PathBuf>,
    /// Each file's path in the folder, and where it starts in the stream.
    paths: Vec<PathBuf>,
    starts: Vec<u64>,
    sizes: Vec<u64>,
    writable: bool,
    open: Mutex<Open>,
    /// Files written to since the last sync.
    dirty: Mutex<BTreeSet<usize>>,
}

impl FolderData {
    /// A folder being downloaded to `root`: its subfolders made and every file created at its
    /// size (sparse), or opened as they are if they exist (a resumed download).
    pub fn create(root: &Path, layout: &Layout) -> io::Result<FolderData> {
        fs::create_dir_all(root)?;
        for f in &layout.files {
            let file = crate::store::open_creating(&root.join(&f.path))?;
            file.set_len(f.size)?;
            crate::store::reserve(&file, f.size)?;
        }
        Ok(FolderData::open(root, layout, true))
    }

    /// The files of `layout` under `root`, which exist, opened (for writing too if
    /// `writable`) as they are needed.
    pub fn open(root: &Path, layout: &Layout, writable: bool) -> FolderData {
        let mut starts = Vec::with_capacity(layout.files.len());
        let mut at = 0u64;
        for f in &layout.files {
            starts.push(at);
            at += f.size;
        }
        FolderData {
            root: Mutex::new(root.to_path_buf()),
            paths: layout
                .files
                .iter()
                .map(|f| PathBuf::from(&f.path))
                .collect(),
            starts,
            sizes: layout.files.iter().map(|f| f.size).collect(),
            writable,
            open: Mutex::default(),
            dirty: Mutex::default(),
        }
    }

    /// The folder moved to `to` (a finished download's `OUT.part` renamed): the files open
    /// now stay open, the others are opened there.
    pub fn moved(&self, to: &Path) {
        *self.root.lock().unwrap_or_else(|e| e.into_inner()) = to.to_path_buf();
    }

    /// Pieces of `len` bytes at stream offset `offset`: (file index, offset in it, length).
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let first = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let end = offset.saturating_add(len);
        (first..self.sizes.len())
            .take_while(move |&i| self.starts[i] < end)
            .filter_map(move |i| {
                let from = offset.max(self.starts[i]);
                let to = end.min(self.starts[i] + self.sizes[i]);
                (to > from).then(|| (i, from - self.starts[i], to - from))
            })
    }

    /// File `i`, open (read and write if writable), from the open set or opened now.
    fn file(&self, i: usize) -> io::Result<std::sync::Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = open.files.iter().position(|(j, _)| *j == i) {
            let entry = open.files.remove(at);
            let f = entry.1.clone();
            open.files.push(entry);
            return Ok(f);
        }
        let path = self
            .root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(&self.paths[i]);
        let f = std::sync::Arc::new(
            OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(path)?,
        );
        if open.files.len() >= OPEN_FILES {
            let (gone, file) = open.files.remove(0);
            // A file closed while dirty is synced first: the journal may vouch for it.
            if self.take_dirty(gone) {
                file.sync_data()?;
            }
        }
        open.files.push((i, f.clone()));
        Ok(f)
    }

    fn take_dirty(&self, i: usize) -> bool {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&i)
    }

    /// Writes `data` at stream offset `offset`, across files as it falls.
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        for (i, at, len) in self.pieces(offset, data.len() as u64) {
            let len = len as usize;
            self.file(i)?.write_all_at(&data[done..done + len], at)?;
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(i);
            done += len;
        }
        if done != data.len() {
            return Err(io::Error::other("a write past the end of the folder"));
        }
        Ok(())
    }

    /// Syncs every file written to since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        let dirty: Vec<usize> =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for i in dirty {
            self.file(i)?.sync_data()?;
        }
        Ok(())
    }
}

impl ReadAt for FolderData {
    /// Reads across files as the bytes fall; short only at the end of the folder.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0usize;
        for (i, at, len) in self.pieces(offset, buf.len() as u64) {
            let len = len as usize;
            self.file(i)?
                .read_exact_at(&mut buf[done..done + len], at)?;
            done += len;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[(&str, u64)]) -> Layout {
        Layout {
            files: files
                .iter()
                .map(|(p, s)| FolderFile {
                    path: (*p).to_owned(),
                    size: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn unsafe_or_inconsistent_layouts_are_refused_with_what_is_wrong() {
        let ok = layout(&[("a", 1), ("a.txt", 2), ("b/c", 3)]);
        assert_eq!(Layout::decode(&ok.encode(), 6), Ok(ok.clone()));
        let bad = |files: &[(&str, u64)], size: u64, says: &str| {
            let e = Layout::decode(&layout(files).encode(), size).unwrap_err();
            assert!(e.contains(says), "{files:?}: {e}");
        };
        bad(&[("../x", 1)], 1, "unsafe");
        bad(&[("a/../../x", 1)], 1, "unsafe");
        bad(&[("/etc/passwd", 1)], 1, "absolute");
        bad(&[("a//b", 1)], 1, "unsafe");
        bad(&[("a/./b", 1)], 1, "unsafe");
        bad(&[("a\\b", 1)], 1, "unsafe");
        bad(&[("a\nb", 1)], 1, "unsafe");
        bad(&[(&"n".repeat(256), 1)], 1, "unsafe");
        bad(&[(&"d/".repeat(2000), 1)], 1, "longer than");
        bad(&[("b", 1), ("a", 1)], 2, "out of order");
        bad(&[("a", 1), ("a", 1)], 2, "repeats");
        bad(&[("a", 1), ("a/b", 1)], 2, "both a file and a folder");
        bad(&[("a", 1)], 2, "add up to 1 bytes, not the 2");
        bad(&[("a", u64::MAX), ("b", 1)], 0, "overflow");
        let mut trailing = ok.encode();
        trailing.push(0);
        assert!(Layout::decode(&trailing, 6)
            .unwrap_err()
            .contains("after its end"));
        assert!(Layout::decode(&[0xff, 0xff], 0)
            .unwrap_err()
            .contains("cannot be read"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_layout_bytes_never_panic(bytes: Vec<u8>, size: u64) {
            let _ = Layout::decode(&bytes, size);
        }
    }

    #[test]
    fn a_stream_is_read_and_written_across_files_with_few_open() {
        let dir = std::env::temp_dir().join(format!("shoal-folder-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // 200 files of 0 to 9 bytes: more than stay open at once.
        let files: Vec<(String, u64)> = (0..200)
            .map(|i| (format!("d{}/f{i:03}", i % 3), i % 10))
            .collect();
        let mut l = Layout {
            files: files
                .iter()
                .map(|(p, s)| FolderFile {
                    path: p.clone(),
                    size: *s,
                })
                .collect(),
        };
        l.files
            .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let total = l.size();
        let data = FolderData::create(&dir, &l).unwrap();
        let stream: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        for (k, piece) in stream.chunks(13).enumerate() {
            data.write_all_at(piece, k as u64 * 13).unwrap();
        }
        data.sync().unwrap();
        assert!(data.open.lock().unwrap().files.len() <= OPEN_FILES);
        let mut back = vec![0u8; total as usize];
        assert_eq!(data.read_at(&mut back, 0).unwrap(), total as usize);
        assert_eq!(back, stream);
        // Each file holds its own bytes.
        let mut at = 0usize;
        for f in &l.files {
            let got = fs::read(dir.join(&f.path)).unwrap();
            assert_eq!(got, stream[at..at + f.size as usize], "{}", f.path);
            at += f.size as usize;
        }
        // Past the end: short.
        let mut tail = [0u8; 8];
        assert_eq!(data.read_at(&mut tail, total - 3).unwrap(), 3);
        let _ = fs::remove_dir_all(&dir);
    }
}
