//! The peer's worst-case RAM is its `size_of`, quoted in the peer module docs.

use proto_core::peer::{HostPeer, SmallPeer};

#[test]
fn worst_case_ram_matches_the_documented_figures() {
    // These numbers are quoted in proto-core/src/peer/mod.rs; update both together.
    assert_eq!(SmallPeer::ram_bytes(), 22_448);
    assert_eq!(HostPeer::ram_bytes(), 361_112);
    assert_eq!(std::mem::size_of::<SmallPeer>(), SmallPeer::ram_bytes());
}
