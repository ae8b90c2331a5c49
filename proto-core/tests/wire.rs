//! Property tests for the codec: every message round-trips through framing however the bytes
//! are split, arbitrary bytes never panic or overrun, and the largest message fits a frame.

use std::net::SocketAddr;

use proptest::prelude::*;
use proto_core::link::Link;
use proto_core::manifest::{
    validate_name, Built, ManifestBuilder, ManifestError, ManifestHeader, Name, MAX_CHUNK_SIZE,
    MAX_NAME_LEN, MIN_CHUNK_SIZE,
};
use proto_core::wire::{
    decode_message, encode_frame, BlockRef, ChunkRange, FileEntry, FileId, FrameDecoder,
    FrameError, Hello, HolderItem, Item, Message, NodeId, PeerEntry, PublishRefusal, Refusal,
    RejectReason, LEN_PREFIX, MAX_BLOCK_LEN, MAX_EXCHANGE, MAX_FRAME_LEN, MAX_RANGES,
};

fn name() -> impl Strategy<Value = Name> {
    "[^/\\\\]{1,60}"
        .prop_filter("valid file name", |s| validate_name(s).is_ok())
        .prop_map(|s| Name::try_from(s.as_str()).unwrap())
}

fn node() -> impl Strategy<Value = NodeId> {
    any::<[u8; 16]>().prop_map(NodeId)
}

fn file_id() -> impl Strategy<Value = FileId> {
    any::<[u8; 32]>().prop_map(FileId)
}

/// Addresses as the wire carries them: an IPv6 scope id or flow label is local to a host and
/// is not sent.
fn sock() -> impl Strategy<Value = SocketAddr> {
    any::<SocketAddr>().prop_map(|a| SocketAddr::new(a.ip(), a.port()))
}

fn peer() -> impl Strategy<Value = PeerEntry> {
    (node(), sock()).prop_map(|(node, addr)| PeerEntry { node, addr })
}

fn ranges() -> impl Strategy<Value = heapless::Vec<ChunkRange, MAX_RANGES>> {
    prop::collection::vec((any::<u32>(), any::<u32>()), 0..=MAX_RANGES).prop_map(|v| {
        v.into_iter()
            .map(|(start, end)| ChunkRange { start, end })
            .collect()
    })
}

/// Valid headers with few chunks, so bodies stay small.
fn header() -> impl Strategy<Value = ManifestHeader> {
    (
        name(),
        10u32..=24,
        0u64..64,
        prop_oneof![Just(0u32), 1u32..200],
    )
        .prop_flat_map(|(name, log2, chunks, layout_len)| {
            let chunk = 1u64 << log2;
            let lo = chunks.saturating_sub(1) * chunk + u64::from(chunks > 0);
            (
                Just(name),
                lo..=chunks * chunk,
                Just(chunk as u32),
                Just(layout_len),
            )
        })
        .prop_map(|(name, size, chunk_size, layout_len)| ManifestHeader {
            name,
            size,
            chunk_size,
            layout_len,
        })
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        any::<u16>().prop_map(|supported| Refusal::VersionMismatch { supported }),
        Just(Refusal::DuplicateNode),
        Just(Refusal::DuplicateAddress),
        Just(Refusal::TrackerFull),
        Just(Refusal::NotRegistered),
        Just(Refusal::SwarmKey),
    ]
}

fn publish_refusal() -> impl Strategy<Value = PublishRefusal> {
    prop_oneof![
        any::<u32>().prop_map(|max| PublishRefusal::TooManyChunks { max }),
        Just(PublishRefusal::TrackerFull),
        Just(PublishRefusal::Invalid(ManifestError::BadName)),
        Just(PublishRefusal::NotRegistered),
        Just(PublishRefusal::StorageFailed),
        Just(PublishRefusal::IdMismatch),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), node(), any::<u16>(), any::<[u8; 16]>()).prop_map(
            |(version, node, listen_port, nonce)| {
                Message::Hello(Hello {
                    version,
                    node,
                    listen_port,
                    nonce,
                })
            }
        ),
        any::<[u8; 32]>().prop_map(|proof| Message::Auth { proof }),
        any::<u32>().prop_map(Message::Ping),
        any::<u32>().prop_map(Message::Pong),
        any::<(u32, u64, u64)>().prop_map(|(nonce, uploaded, downloaded)| Message::Report {
            nonce,
            uploaded,
            downloaded
        }),
        file_id().prop_map(|file| Message::Abandon { file }),
        Just(Message::Register),
        sock().prop_map(|addr| Message::Registered { addr }),
        refusal().prop_map(Message::Refused),
        Just(Message::Leave),
        peer().prop_map(Message::PeerListItem),
        any::<u16>().prop_map(|count| Message::PeerListEnd { count }),
        (file_id(), header()).prop_map(|(file, header)| Message::Publish { file, header }),
        file_id().prop_map(|file| Message::Published { file }),
        (file_id(), publish_refusal())
            .prop_map(|(file, reason)| Message::PublishRefused { file, reason }),
        Just(Message::ListFiles),
        (
            file_id(),
            name(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(file, name, size, chunk_size, chunks, holders, seeders)| {
                Message::FileItem(FileEntry {
                    file,
                    name,
                    size,
                    chunk_size,
                    chunks,
                    holders,
                    seeders,
                })
            }),
        any::<u16>().prop_map(|count| Message::FileListEnd { count }),
        file_id().prop_map(|file| Message::Locate { file }),
        (file_id(), peer(), ranges(), any::<bool>()).prop_map(|(file, peer, ranges, more)| {
            Message::HolderItem(HolderItem {
                file,
                peer,
                ranges,
                more,
            })
        }),
        (file_id(), any::<u16>()).prop_map(|(file, holders)| Message::LocateEnd { file, holders }),
        file_id().prop_map(|file| Message::GetManifest { file }),
        (file_id(), header()).prop_map(|(file, header)| Message::Manifest { file, header }),
        file_id().prop_map(|file| Message::NotFound { file }),
        (file_id(), ranges()).prop_map(|(file, ranges)| Message::Have { file, ranges }),
        (file_id(), 0u32..5000).prop_map(|(file, chunks)| Message::Bitfield { file, chunks }),
        block().prop_map(Message::Request),
        block().prop_map(Message::Block),
        block().prop_map(Message::Cancel),
        (file_id(), prop::collection::vec(sock(), 0..=MAX_EXCHANGE)).prop_map(|(file, a)| {
            Message::Peers {
                file,
                addrs: a.into_iter().collect(),
            }
        }),
        (
            block(),
            prop_oneof![
                Just(RejectReason::NotHeld),
                Just(RejectReason::Busy),
                Just(RejectReason::OutOfRange)
            ]
        )
            .prop_map(|(block, reason)| Message::Reject { block, reason }),
    ]
}

/// Blocks with small lengths, so bodies stay small.
fn block() -> impl Strategy<Value = BlockRef> {
    (file_id(), any::<u32>(), any::<u32>(), 0u32..3000).prop_map(|(file, chunk, offset, len)| {
        BlockRef {
            file,
            chunk,
            offset,
            len,
        }
    })
}

/// Decodes `bytes` fed in pieces of the given sizes (cycled); returns items with bodies joined
/// and whether the decoder ended between frames.
type Decoded = (Vec<(Message, Vec<u8>)>, bool);

fn decode_split(bytes: &[u8], pieces: &[usize]) -> Result<Decoded, FrameError> {
    let mut d = FrameDecoder::new(1 << 26);
    let mut out: Vec<(Message, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < bytes.len() {
        let n = pieces[k % pieces.len()].max(1);
        k += 1;
        let mut piece = &bytes[pos..(pos + n).min(bytes.len())];
        pos += piece.len();
        while !piece.is_empty() {
            let (used, item) = d.decode(piece)?;
            assert!(used <= piece.len());
            piece = &piece[used..];
            match item {
                Some(Item::Message(m)) => out.push((m, Vec::new())),
                Some(Item::Body { data, .. }) => out.last_mut().unwrap().1.extend_from_slice(data),
                None => assert!(piece.is_empty(), "decoder stopped early without an item"),
            }
        }
    }
    Ok((out, d.is_idle()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips_through_frames_under_any_split(
        msgs in prop::collection::vec(message(), 1..8),
        pieces in prop::collection::vec(1usize..300, 1..6),
        body_byte in any::<u8>(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for m in &msgs {
            let mut buf = [0u8; LEN_PREFIX + MAX_FRAME_LEN];
            let n = encode_frame(m, &mut buf).unwrap();
            stream.extend_from_slice(&buf[..n]);
            let body = vec![body_byte; m.body_len().unwrap() as usize];
            stream.extend_from_slice(&body);
            expected.push((m.clone(), body));
        }
        // A whole stream decodes to the same messages and bodies and leaves the decoder idle.
        prop_assert_eq!(decode_split(&stream, &pieces).unwrap(), (expected, true));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_overrun(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        pieces in prop::collection::vec(1usize..64, 1..4),
    ) {
        // Either items or a typed error: both are fine, a panic is not. However the bytes are
        // split, the outcome is the same.
        let a = decode_split(&bytes, &pieces);
        let b = decode_split(&bytes, &[bytes.len().max(1)]);
        prop_assert_eq!(a, b);
        let _ = decode_message(&bytes);
    }

    #[test]
    fn mutated_valid_frames_decode_or_fail_cleanly(
        m in message(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut buf = [0u8; LEN_PREFIX + MAX_FRAME_LEN];
        let n = encode_frame(&m, &mut buf).unwrap();
        let mut frame = buf[LEN_PREFIX..n].to_vec();
        for (i, x) in flips {
            let len = frame.len();
            frame[i % len] ^= x;
        }
        let _ = decode_message(&frame);
    }

    #[test]
    fn manifest_header_round_trips(h in header()) {
        let mut buf = [0u8; LEN_PREFIX + MAX_FRAME_LEN];
        let m = Message::Manifest { file: FileId([1; 32]), header: h.clone() };
        let n = encode_frame(&m, &mut buf).unwrap();
        prop_assert_eq!(decode_message(&buf[LEN_PREFIX..n]).unwrap(), m);
        prop_assert!(h.validate().is_ok());
        prop_assert_eq!(
            (0..h.chunk_count()).map(|i| u64::from(h.chunk_len(i))).sum::<u64>(),
            h.size
        );
    }

    #[test]
    fn manifest_id_does_not_depend_on_how_the_file_is_fed(
        data in prop::collection::vec(any::<u8>(), 0..80_000),
        cuts in prop::collection::vec(1usize..20_000, 1..5),
    ) {
        // 32 KiB chunks of two 16 KiB blocks: cuts fall inside blocks, between blocks and
        // between chunks.
        let header = ManifestHeader::new("f", data.len() as u64, 32 * 1024).unwrap();
        let whole = {
            let mut b = ManifestBuilder::new(header.clone());
            b.update(&data, |_| {}).unwrap();
            b.finish().unwrap()
        };
        let mut b = ManifestBuilder::new(header);
        let mut rest = &data[..];
        let mut k = 0;
        let mut seen = 0;
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].min(rest.len());
            k += 1;
            b.update(&rest[..n], |built| {
                if let Built::Chunk { index, .. } = built {
                    assert_eq!(index, seen);
                    seen += 1;
                }
            })
            .unwrap();
            rest = &rest[n..];
        }
        prop_assert_eq!(b.finish().unwrap(), whole);
    }

    #[test]
    fn links_round_trip(id in file_id(), n in prop::option::of(name()), port in any::<u16>(),
                        host in "[a-z0-9][a-z0-9.-]{0,30}") {
        let mut trackers = heapless::Vec::new();
        trackers.push(heapless::String::try_from(format!("{host}:{port}").as_str()).unwrap()).unwrap();
        let link = Link { file: id, trackers, name: n };
        prop_assert_eq!(Link::parse(&link.to_string()).unwrap(), link);
    }

    #[test]
    fn link_parsing_never_panics(text in ".{0,300}") {
        let _ = Link::parse(&text);
        let _ = Link::parse(&format!("shoal:{text}"));
    }
}

#[test]
fn the_largest_instance_of_every_message_fits_a_frame() {
    let big_name = Name::try_from("\u{10FFFF}".repeat(MAX_NAME_LEN / 4).as_str()).unwrap();
    let max_addr: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
        .parse()
        .unwrap();
    let peer = PeerEntry {
        node: NodeId([0xff; 16]),
        addr: max_addr,
    };
    let id = FileId([0xff; 32]);
    let max_ranges = (0..MAX_RANGES)
        .map(|_| ChunkRange {
            start: u32::MAX,
            end: u32::MAX,
        })
        .collect();
    let header = ManifestHeader {
        name: big_name.clone(),
        size: u64::MAX,
        chunk_size: u32::MAX,
        layout_len: u32::MAX,
    };
    let all = [
        Message::Hello(Hello {
            version: u16::MAX,
            node: NodeId([0xff; 16]),
            listen_port: u16::MAX,
            nonce: [0xff; 16],
        }),
        Message::Registered { addr: max_addr },
        Message::Auth { proof: [0xff; 32] },
        Message::PeerListItem(peer),
        Message::Publish {
            file: id,
            header: header.clone(),
        },
        Message::PublishRefused {
            file: id,
            reason: PublishRefusal::TooManyChunks { max: u32::MAX },
        },
        Message::FileItem(FileEntry {
            file: id,
            name: big_name,
            size: u64::MAX,
            chunk_size: u32::MAX,
            chunks: u32::MAX,
            holders: u16::MAX,
            seeders: u16::MAX,
        }),
        Message::HolderItem(HolderItem {
            file: id,
            peer,
            ranges: max_ranges,
            more: true,
        }),
        Message::Manifest { file: id, header },
        Message::Have {
            file: id,
            ranges: (0..MAX_RANGES)
                .map(|_| ChunkRange {
                    start: u32::MAX,
                    end: u32::MAX,
                })
                .collect(),
        },
        Message::Peers {
            file: id,
            addrs: (0..MAX_EXCHANGE).map(|_| max_addr).collect(),
        },
        Message::Report {
            nonce: u32::MAX,
            uploaded: u64::MAX,
            downloaded: u64::MAX,
        },
    ];
    for m in &all {
        let mut buf = [0u8; LEN_PREFIX + MAX_FRAME_LEN];
        let n = encode_frame(m, &mut buf).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert!(n <= LEN_PREFIX + MAX_FRAME_LEN);
    }
}

#[test]
fn frame_limits_are_enforced() {
    // A length prefix over the limit fails at once, before any frame byte is buffered.
    let mut d = FrameDecoder::new(0);
    let too_long = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes();
    assert_eq!(d.decode(&too_long), Err(FrameError::TooLong));
    // A body longer than the decoder accepts is refused.
    let h = ManifestHeader::new("a", 64 * 1024, 1024).unwrap();
    let mut buf = [0u8; LEN_PREFIX + MAX_FRAME_LEN];
    let n = encode_frame(
        &Message::Manifest {
            file: FileId([0; 32]),
            header: h,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        FrameDecoder::new(64 * 32 - 1).decode(&buf[..n]),
        Err(FrameError::BadBody)
    );
    assert!(matches!(
        FrameDecoder::new(64 * 32).decode(&buf[..n]),
        Ok((_, Some(Item::Message(_))))
    ));
    // An invalid header in a message with a body cannot be trusted for its length.
    let bad = ManifestHeader {
        name: "a".try_into().unwrap(),
        size: 1,
        chunk_size: 1000,
        layout_len: 0,
    };
    let n = encode_frame(
        &Message::Manifest {
            file: FileId([0; 32]),
            header: bad,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        FrameDecoder::new(1 << 20).decode(&buf[..n]),
        Err(FrameError::BadBody)
    );
    // Blocks and bitfields over the limits cannot be followed.
    let b = BlockRef {
        file: FileId([0; 32]),
        chunk: 0,
        offset: 0,
        len: MAX_BLOCK_LEN + 1,
    };
    let n = encode_frame(&Message::Block(b), &mut buf).unwrap();
    assert_eq!(
        FrameDecoder::new(u64::MAX).decode(&buf[..n]),
        Err(FrameError::BadBody)
    );
    let n = encode_frame(
        &Message::Bitfield {
            file: FileId([0; 32]),
            chunks: u32::MAX,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        FrameDecoder::new(u64::MAX).decode(&buf[..n]),
        Err(FrameError::BadBody)
    );
    // A block's payload follows its header raw, and is handed back as slices of the input.
    let b = BlockRef { len: 5, ..b };
    let n = encode_frame(&Message::Block(b), &mut buf).unwrap();
    let mut stream = buf[..n].to_vec();
    stream.extend_from_slice(b"hello");
    let mut d = FrameDecoder::new(1024);
    let (used, item) = d.decode(&stream).unwrap();
    assert_eq!(item, Some(Item::Message(Message::Block(b))));
    assert_eq!(
        d.decode(&stream[used..]).unwrap(),
        (
            5,
            Some(Item::Body {
                data: &b"hello"[..],
                remaining: 0
            })
        )
    );
    // Trailing bytes inside a frame are an error, not ignored.
    let n = encode_frame(&Message::Ping(1), &mut buf).unwrap();
    let mut frame = buf[LEN_PREFIX..n].to_vec();
    frame.push(0);
    assert_eq!(decode_message(&frame), Err(FrameError::TrailingBytes));
    // Encoding into a buffer that is too small is an error.
    assert!(encode_frame(&Message::Ping(1), &mut [0u8; 3]).is_err());
    assert_eq!(MIN_CHUNK_SIZE.count_ones() + MAX_CHUNK_SIZE.count_ones(), 2);
}
