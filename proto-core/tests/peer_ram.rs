//! A peer in fixed memory costs its own `size_of` and its memory's; the figures are quoted in
//! the peer module docs.

use proto_core::peer::{HostPeer, SmallPeer, SmallPeerMemory};

#[test]
fn worst_case_ram_matches_the_documented_figures() {
    // These numbers are quoted in proto-core/src/peer/mod.rs; update both together.
    let small = SmallPeer::ram_bytes::<4, 1, 4, 8>();
    assert_eq!(
        small,
        std::mem::size_of::<SmallPeer>() + std::mem::size_of::<SmallPeerMemory>()
    );
    assert_eq!(small, 24_152);
    // What the host peer's compile-time tables were (64 connections, 16 files, 128 chunks
    // in flight, here of up to 256 KiB: 16 leaves each), now in fixed memory: a host gives
    // heap memory that grows instead.
    assert_eq!(HostPeer::ram_bytes::<64, 16, 128, 16>(), 428_704);
}
