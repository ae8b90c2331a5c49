//! Golden bytes: one encoded example of every wire message (and of every refusal and reject
//! reason), frozen as hex. Postcard numbers enum variants by declaration order, so reordering
//! or inserting a variant would silently change the protocol; this test turns that into a
//! failure. A deliberate change of the wire bumps `PROTOCOL_VERSION` and updates the table.

use proto_core::manifest::{ManifestError, ManifestHeader, Name};
use proto_core::wire::{
    encode_frame, BlockRef, ChunkRange, FileEntry, FileId, Hello, HolderItem, Message, NodeId,
    PeerEntry, PublishRefusal, Refusal, RejectReason, PROTOCOL_VERSION,
};

/// Each variant's position; no wildcard, so a new variant does not compile until it is here.
fn tag(m: &Message) -> usize {
    match m {
        Message::Hello(_) => 0,
        Message::Ping(_) => 1,
        Message::Pong(_) => 2,
        Message::Register => 3,
        Message::Registered { .. } => 4,
        Message::Refused(_) => 5,
        Message::Leave => 6,
        Message::PeerListItem(_) => 7,
        Message::PeerListEnd { .. } => 8,
        Message::Publish { .. } => 9,
        Message::Published { .. } => 10,
        Message::PublishRefused { .. } => 11,
        Message::ListFiles => 12,
        Message::FileItem(_) => 13,
        Message::FileListEnd { .. } => 14,
        Message::Locate { .. } => 15,
        Message::HolderItem(_) => 16,
        Message::LocateEnd { .. } => 17,
        Message::GetManifest { .. } => 18,
        Message::Manifest { .. } => 19,
        Message::NotFound { .. } => 20,
        Message::Have { .. } => 21,
        Message::Bitfield { .. } => 22,
        Message::Request(_) => 23,
        Message::Block(_) => 24,
        Message::Cancel(_) => 25,
        Message::Reject { .. } => 26,
        Message::Auth { .. } => 27,
        Message::ListPeers => 28,
        Message::GetLeaves { .. } => 29,
        Message::Leaves { .. } => 30,
        Message::Started { .. } => 31,
        Message::Peers { .. } => 32,
        Message::Report { .. } => 33,
        Message::Abandon { .. } => 34,
    }
}
const VARIANTS: usize = 35;

fn examples() -> Vec<Message> {
    let file = FileId([0xf1; 32]);
    let node = NodeId([0x0d; 16]);
    let addr = "10.1.2.3:7000".parse().unwrap();
    let peer = PeerEntry { node, addr };
    let header = ManifestHeader::new("a.bin", 100_000, 16 * 1024).unwrap();
    let block = BlockRef {
        file,
        chunk: 3,
        offset: 16384,
        len: 16384,
    };
    let mut ranges = heapless::Vec::new();
    ranges.push(ChunkRange { start: 1, end: 4 }).unwrap();
    let mut v = vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            node,
            listen_port: 7000,
            nonce: [0x5a; 16],
        }),
        Message::Ping(7),
        Message::Pong(7),
        Message::Register,
        Message::Registered { addr },
        Message::Leave,
        Message::PeerListItem(peer),
        Message::PeerListEnd { count: 2 },
        Message::Publish {
            file,
            header: header.clone(),
        },
        Message::Published { file },
        Message::ListFiles,
        Message::FileItem(FileEntry {
            file,
            name: Name::try_from("a.bin").unwrap(),
            size: 100_000,
            chunk_size: 16384,
            chunks: 7,
            holders: 3,
            seeders: 1,
        }),
        Message::FileListEnd { count: 1 },
        Message::Locate { file },
        Message::HolderItem(HolderItem {
            file,
            peer,
            ranges: ranges.clone(),
            more: false,
        }),
        Message::LocateEnd { file, holders: 1 },
        Message::GetManifest { file },
        Message::Manifest { file, header },
        Message::NotFound { file },
        Message::Have { file, ranges },
        Message::Bitfield { file, chunks: 7 },
        Message::Request(block),
        Message::Block(block),
        Message::Cancel(block),
        Message::Auth { proof: [0xa7; 32] },
        Message::ListPeers,
        Message::GetLeaves { file, chunk: 7 },
        Message::Leaves {
            file,
            chunk: 7,
            count: 16,
        },
        Message::Started { file, chunk: 7 },
        Message::Peers {
            file,
            addrs: [addr, "[fe80::1]:7001".parse().unwrap()]
                .into_iter()
                .collect(),
        },
        Message::Report {
            nonce: 7,
            uploaded: 1 << 40,
            downloaded: 300,
        },
        Message::Abandon { file },
        Message::Manifest {
            file,
            header: ManifestHeader::folder("dir", 100_000, 16 * 1024, 300).unwrap(),
        },
    ];
    for r in [
        Refusal::VersionMismatch { supported: 1 },
        Refusal::DuplicateNode,
        Refusal::DuplicateAddress,
        Refusal::TrackerFull,
        Refusal::NotRegistered,
        Refusal::SwarmKey,
    ] {
        v.push(Message::Refused(r));
    }
    for reason in [
        PublishRefusal::TooManyChunks { max: 1024 },
        PublishRefusal::TrackerFull,
        PublishRefusal::Invalid(ManifestError::BadName),
        PublishRefusal::NotRegistered,
        PublishRefusal::StorageFailed,
        PublishRefusal::IdMismatch,
    ] {
        v.push(Message::PublishRefused { file, reason });
    }
    for reason in [
        RejectReason::NotHeld,
        RejectReason::Busy,
        RejectReason::OutOfRange,
    ] {
        v.push(Message::Reject { block, reason });
    }
    v
}

fn encoded(m: &Message) -> String {
    let mut buf = [0u8; 600];
    let n = encode_frame(m, &mut buf).unwrap();
    hex::encode(&buf[..n])
}

#[test]
fn every_message_kind_has_a_golden_example() {
    let mut seen = [false; VARIANTS];
    for m in examples() {
        seen[tag(&m)] = true;
    }
    assert!(seen.iter().all(|s| *s), "a message kind has no example");
}

#[test]
fn every_message_encodes_to_its_golden_bytes() {
    let got: Vec<String> = examples().iter().map(encoded).collect();
    if std::env::var_os("SHOAL_PRINT_GOLDEN").is_some() {
        for g in &got {
            println!("    \"{g}\",");
        }
    }
    assert_eq!(got.len(), GOLDEN.len());
    for (i, (g, want)) in got.iter().zip(GOLDEN).enumerate() {
        assert_eq!(
            g,
            want,
            "example {i} ({:?}) changed on the wire",
            examples()[i]
        );
    }
}

const GOLDEN: &[&str] = &[
    "2400000000050d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0dd8365a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    "020000000107",
    "020000000207",
    "0100000003",
    "0800000004000a010203d836",
    "0100000006",
    "18000000070d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d000a010203d836",
    "020000000802",
    "2e00000009f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f105612e62696ea08d0680800100",
    "210000000af1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1",
    "010000000c",
    "300000000df1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f105612e62696ea08d06808001070301",
    "020000000e01",
    "210000000ff1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1",
    "3c00000010f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d000a010203d83601010400",
    "2200000011f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f101",
    "2100000012f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1",
    "2e00000013f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f105612e62696ea08d0680800100",
    "2100000014f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1",
    "2400000015f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1010104",
    "2200000016f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f107",
    "2800000017f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f103808001808001",
    "2800000018f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f103808001808001",
    "2800000019f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f103808001808001",
    "210000001ba7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7",
    "010000001c",
    "220000001df1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f107",
    "230000001ef1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10710",
    "220000001ff1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f107",
    "3c00000020f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f102000a010203d83601fe800000000000000000000000000001d936",
    "0a0000002107808080808020ac02",
    "2100000022f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1",
    "2d00000013f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f103646972a08d06808001ac02",
    "03000000050001",
    "020000000501",
    "020000000502",
    "020000000503",
    "020000000504",
    "020000000505",
    "240000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1008008",
    "220000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f101",
    "230000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10202",
    "220000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f103",
    "220000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f104",
    "220000000bf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f105",
    "290000001af1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10380800180800100",
    "290000001af1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10380800180800101",
    "290000001af1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f10380800180800102",
];
