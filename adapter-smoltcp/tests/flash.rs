//! The flash store's rules: in-order writes erase each sector once, a reset keeps exactly what
//! was verified, and files that cannot be laid out are refused up front.

mod common;

use adapter_smoltcp::flash::{Flash, FlashError, FlashStore, RamFlash};
use adapter_smoltcp::{Storage, StorageError};
use common::*;
use proto_core::node::Node;
use proto_core::peer::{PeerConfig, PeerEvent, SmallPeer};
use proto_core::storage::{Region, StorageKey};
use proto_core::time::Instant;
use proto_core::wire::NodeId;

const HASHES: StorageKey = StorageKey {
    slot: 0,
    region: Region::Hashes,
};
const DATA: StorageKey = StorageKey {
    slot: 0,
    region: Region::Data,
};

/// Writes chunk `c` of `f` in small in-order pieces, as the core does.
fn write_chunk(store: &mut PeerStore, f: &TestFile, c: u32, upto: u32) {
    let start = f.header.chunk_offset(c);
    let len = f.header.chunk_len(c).min(upto) as usize;
    for (i, piece) in f.data[start as usize..start as usize + len]
        .chunks(1000)
        .enumerate()
    {
        store.write(DATA, start + (i * 1000) as u64, piece).unwrap();
    }
}

/// What the driver does with every event the peer hands out: journal it in the store.
fn note(store: &mut PeerStore, e: &PeerEvent) -> Result<(), (StorageKey, StorageError)> {
    <SmallPeer<'static> as Node>::journal(e, store)
}

fn fetched_manifest(store: &mut PeerStore, f: &TestFile) {
    store.write(HASHES, 0, &f.hashes).unwrap();
    note(
        store,
        &PeerEvent::ManifestReceived {
            slot: 0,
            file: f.id,
            header: f.header.clone(),
        },
    )
    .unwrap();
}

#[test]
fn raw_flash_refuses_programming_over_data() {
    let mut flash = fresh_flash();
    flash.program(10, &[1, 2, 3]).unwrap();
    assert_eq!(flash.program(11, &[9]), Err(FlashError::NotErased));
    flash.erase(0).unwrap();
    flash.program(11, &[9]).unwrap();
    assert_eq!(
        flash.program(FLASH as u32 - 1, &[1, 2]),
        Err(FlashError::OutOfBounds)
    );
}

#[test]
fn a_reset_keeps_verified_chunks_and_drops_the_half_written_one() {
    let f = test_file(100_000, 16 * 1024, 9);
    let mut store = FlashStore::open(fresh_flash(), MAX_CHUNKS).unwrap();
    fetched_manifest(&mut store, &f);
    for c in [0, 3, 1] {
        write_chunk(&mut store, &f, c, u32::MAX);
        note(&mut store, &PeerEvent::ChunkVerified { slot: 0, chunk: c }).unwrap();
    }
    // Chunk 2 is half written when the power goes.
    write_chunk(&mut store, &f, 2, 5000);
    let flash = store.into_flash();

    let mut store = FlashStore::open(flash, MAX_CHUNKS).unwrap();
    assert_eq!(store.manifest().map(|(id, _)| id), Some(f.id));
    assert_eq!(store.verified(), 3);
    let mut peer = device_peer(PeerConfig::new(NodeId([1; 16]), 0, None), Instant::ZERO);
    let slot = store.resume(Instant::ZERO, &mut peer).unwrap().unwrap();
    let p = peer.progress(slot).unwrap();
    assert_eq!(p.chunks_done, 3);
    // The half-written chunk is rewritten from its start: its sectors are erased again and it
    // ends up exact.
    write_chunk(&mut store, &f, 2, u32::MAX);
    let (_, bytes) = stored_file(store.into_flash(), &f);
    let c2 = f.header.chunk_offset(2) as usize..f.header.chunk_offset(3) as usize;
    assert_eq!(bytes[c2.clone()], f.data[c2]);
}

#[test]
fn in_order_writes_erase_each_sector_once() {
    let f = test_file(64 * 1024, 16 * 1024, 3);
    let mut store = FlashStore::open(fresh_flash(), MAX_CHUNKS).unwrap();
    fetched_manifest(&mut store, &f);
    let before = store.into_flash();
    let erases = before.erases;
    let mut store = FlashStore::open(before, MAX_CHUNKS).unwrap();
    for c in 0..4 {
        write_chunk(&mut store, &f, c, u32::MAX);
    }
    let flash = store.into_flash();
    // 64 KiB of data in 4 KiB sectors.
    assert_eq!(flash.erases - erases, 16);
}

#[test]
fn a_new_file_clears_the_old_journal_before_its_hashes_land() {
    let a = test_file(50_000, 16 * 1024, 1);
    let b = test_file(50_000, 16 * 1024, 2);
    let mut store = FlashStore::open(fresh_flash(), MAX_CHUNKS).unwrap();
    fetched_manifest(&mut store, &a);
    note(&mut store, &PeerEvent::ChunkVerified { slot: 0, chunk: 0 }).unwrap();
    // A reset while b's hashes stream in must not resume a with b's hashes.
    store.write(HASHES, 0, &b.hashes[..40]).unwrap();
    let store = FlashStore::open(store.into_flash(), MAX_CHUNKS).unwrap();
    assert!(store.manifest().is_none());
    assert_eq!(store.verified(), 0);
}

#[test]
fn files_the_flash_cannot_hold_are_refused() {
    let mut store = FlashStore::open(fresh_flash(), MAX_CHUNKS).unwrap();
    // Chunks smaller than a sector cannot be rewritten alone.
    let small = test_file(10_000, 1024, 1);
    store.write(HASHES, 0, &small.hashes).unwrap();
    let e = note(
        &mut store,
        &PeerEvent::ManifestReceived {
            slot: 0,
            file: small.id,
            header: small.header.clone(),
        },
    );
    assert_eq!(
        e.map_err(|(_, e)| e),
        Err(StorageError::ChunkNotSectorAligned)
    );
    // Bigger than the data region.
    let big = test_file(FLASH, 64 * 1024, 1);
    store.write(HASHES, 0, &big.hashes).unwrap();
    let e = note(
        &mut store,
        &PeerEvent::ManifestReceived {
            slot: 0,
            file: big.id,
            header: big.header.clone(),
        },
    );
    assert_eq!(e.map_err(|(_, e)| e), Err(StorageError::OutOfSpace));
    // A flash too small for even the journal.
    assert!(FlashStore::open(RamFlash::new(vec![0u8; 8192], SECTOR), MAX_CHUNKS).is_err());
}
