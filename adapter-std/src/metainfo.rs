//! Metainfo files (`NAME.shoal`): a file's manifest and the trackers of its swarm, saved by
//! `shoal share --save` and read by `shoal get NAME.shoal`, so a download needs no tracker
//! that still lists the file (only peers: from a tracker named, or `--peer`).
//!
//! ```text
//! "SHOALI2\n"                      magic and version
//! id (32) | header length (u16 LE) | header (postcard) | body: chunk hashes (32 each),
//!                                                        then a folder's layout
//! tracker count (u8, at most 4) | per tracker: length (u8) | "host:port"
//! ```
//!
//! The manifest part is the journal's. Reading checks everything before anything is trusted:
//! the header is valid, the hashes are exactly as many as it says and hash to the id, each
//! tracker is `host:port`, and nothing follows.

use std::path::Path;

use anyhow::{anyhow, Context};
use proto_core::link::{parse_tracker, MAX_TRACKERS};
use proto_core::manifest::FileIdHasher;

use crate::store::{decode_manifest, encode_manifest, manifest_len, write_atomically, Manifest};

// Version 2: the header has a layout length (folders).
const MAGIC: &[u8; 8] = b"SHOALI2\n";

/// What a metainfo file holds.
pub struct Metainfo {
    /// The manifest (no leaves: those come from peers, chunk by chunk).
    pub manifest: Manifest,
    /// The trackers of the swarm, in order (possibly none).
    pub trackers: Vec<String>,
}

/// Writes the metainfo of `m` with `trackers` to `path` (atomically: a crash leaves the old
/// file or the new one).
pub fn save(path: &Path, m: &Manifest, trackers: &[String]) -> anyhow::Result<()> {
    let mut bytes = MAGIC.to_vec();
    encode_manifest(&mut bytes, m);
    let trackers: Vec<&String> = trackers.iter().take(MAX_TRACKERS).collect();
    bytes.push(trackers.len() as u8);
    for t in trackers {
        let t = parse_tracker(t).map_err(|e| anyhow!("{e}"))?;
        bytes.push(t.len() as u8);
        bytes.extend_from_slice(t.as_bytes());
    }
    write_atomically(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a metainfo file; one line of error if it is not one, or is damaged.
pub fn load(path: &Path) -> anyhow::Result<Metainfo> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).map_err(|why| {
        anyhow!(
            "{} is not a usable shoal metainfo file: {why}",
            path.display()
        )
    })
}

/// Parses the bytes of a metainfo file; says why not in words.
pub fn parse(bytes: &[u8]) -> Result<Metainfo, &'static str> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("it does not start as one (made by `shoal share --save`)")?;
    let (id, header, hashes) =
        decode_manifest(rest).ok_or("its manifest is cut short or invalid")?;
    let mut hasher = FileIdHasher::new(&header);
    hasher.update(hashes);
    if hasher.finish() != Some(id) {
        return Err("its chunk hashes do not match its file id (damaged or altered)");
    }
    let mut rest = &rest[manifest_len(&header)..];
    let (&count, tail) = rest.split_first().ok_or("its tracker list is missing")?;
    rest = tail;
    if usize::from(count) > MAX_TRACKERS {
        return Err("it names more than 4 trackers");
    }
    let mut trackers = Vec::new();
    for _ in 0..count {
        let (&len, tail) = rest.split_first().ok_or("its tracker list is cut short")?;
        let (t, tail) = tail
            .split_at_checked(usize::from(len))
            .ok_or("its tracker list is cut short")?;
        let t = std::str::from_utf8(t).map_err(|_| "a tracker is not text")?;
        parse_tracker(t).map_err(|_| "a tracker is not host:port")?;
        trackers.push(t.to_owned());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err("bytes follow its end");
    }
    Ok(Metainfo {
        manifest: Manifest {
            id,
            header,
            body: hashes.to_vec(),
            leaves: crate::store::LeafSource::None,
        },
        trackers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Manifest, Vec<u8>) {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let t = proto_core::testing::manifest_of("a b.bin", &data, 16 * 1024);
        let m = Manifest {
            id: t.id,
            header: t.header,
            body: t.hashes,
            leaves: crate::store::LeafSource::None,
        };
        let dir = std::env::temp_dir().join(format!("shoal-meta-{}", std::process::id()));
        let path = dir.join("a.shoal");
        save(&path, &m, &["t1.example:7070".into(), "[::1]:7071".into()]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (m, bytes)
    }

    #[test]
    fn a_saved_file_reads_back_whole() {
        let (m, bytes) = sample();
        let got = parse(&bytes).unwrap();
        assert_eq!(got.manifest.id, m.id);
        assert_eq!(got.manifest.header, m.header);
        assert_eq!(got.manifest.body, m.body);
        assert_eq!(got.trackers, ["t1.example:7070", "[::1]:7071"]);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let (_, bytes) = sample();
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "cut at {n}");
        }
        // A changed hash or header no longer matches the id; a changed tracker byte is either
        // still a valid address (accepted: the file is not signed) or refused.
        let hashes_end = bytes.len() - (1 + 1 + 15 + 1 + 10);
        for i in 0..hashes_end {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(parse(&b).is_err(), "flipped byte {i}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(b in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&b);
            let _ = parse(&b);
            let _ = parse(&with_magic);
        }
    }
}
