//! Fixed memory for a tracker that allocates nothing: every table as an array the adapter
//! owns (a device's static memory, or a test's).

use super::*;

/// The memory of a [`Tracker`] in fixed arrays: `C` connections, `F` files, `H` holdings and
/// `W` bitmap words per holding (at most `32 * W` chunks per file). Pass it to
/// [`Tracker::with_memory`]; [`Tracker::ram_bytes`] is its size with the tracker's own.
pub struct TrackerMemory<const C: usize, const F: usize, const H: usize, const W: usize> {
    conns: [Slot<Conn>; C],
    files: [Slot<FileState>; F],
    words: [[u32; W]; H],
    by_id: [Option<(FileId, u16)>; F],
    holders: [Option<((u16, u16), Holding)>; H],
    held: [Option<((u16, u16), ())>; H],
    nodes: [Option<(NodeId, u16)>; C],
    addrs: [Option<(SocketAddr, u16)>; C],
    per_ip: [Option<(IpAddr, u16)>; C],
    handshakes: [Option<((Instant, u16), ())>; C],
    ready: [Option<(u16, ())>; C],
    closed: [Option<(ConnId, ())>; C],
    strangers: [Option<((Instant, u16), ())>; C],
    /// Events between drains: one per connection (a ping round that times every peer out
    /// says so once each); more are counted as lost.
    events: [Option<TrackerEvent>; C],
}

/// Memory for a tracker small enough for a microcontroller: 16 connections, 8 files, 32
/// holdings, 1024 chunks per file.
pub type SmallTrackerMemory = TrackerMemory<16, 8, 32, 32>;

impl<const C: usize, const F: usize, const H: usize, const W: usize> TrackerMemory<C, F, H, W> {
    /// Empty tables.
    pub fn new() -> Self {
        TrackerMemory {
            conns: core::array::from_fn(|_| Slot::EMPTY),
            files: core::array::from_fn(|_| Slot::EMPTY),
            words: [[0; W]; H],
            by_id: [None; F],
            holders: [None; H],
            held: [None; H],
            nodes: [None; C],
            addrs: [None; C],
            per_ip: [None; C],
            handshakes: [None; C],
            ready: [None; C],
            closed: [None; C],
            strangers: [None; C],
            events: core::array::from_fn(|_| None),
        }
    }

    pub(super) fn parts(&mut self) -> Parts<'_> {
        Parts {
            conns: ManagedSlice::Borrowed(&mut self.conns[..]),
            files: ManagedSlice::Borrowed(&mut self.files[..]),
            words: ManagedSlice::Borrowed(self.words.as_flattened_mut()),
            by_id: ManagedMap::Borrowed(&mut self.by_id[..]),
            holders: ManagedMap::Borrowed(&mut self.holders[..]),
            held: ManagedMap::Borrowed(&mut self.held[..]),
            nodes: ManagedMap::Borrowed(&mut self.nodes[..]),
            addrs: ManagedMap::Borrowed(&mut self.addrs[..]),
            per_ip: ManagedMap::Borrowed(&mut self.per_ip[..]),
            handshakes: ManagedMap::Borrowed(&mut self.handshakes[..]),
            ready: ManagedMap::Borrowed(&mut self.ready[..]),
            closed: ManagedMap::Borrowed(&mut self.closed[..]),
            strangers: ManagedMap::Borrowed(&mut self.strangers[..]),
            events: ManagedSlice::Borrowed(&mut self.events[..]),
        }
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Default
    for TrackerMemory<C, F, H, W>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The memory of every table, borrowed or owned.
pub(super) struct Parts<'a> {
    pub(super) conns: Mem<'a, Conn>,
    pub(super) files: Mem<'a, FileState>,
    pub(super) words: ManagedSlice<'a, u32>,
    pub(super) by_id: ManagedMap<'a, FileId, u16>,
    pub(super) holders: ManagedMap<'a, (u16, u16), Holding>,
    pub(super) held: ManagedMap<'a, (u16, u16), ()>,
    pub(super) nodes: ManagedMap<'a, NodeId, u16>,
    pub(super) addrs: ManagedMap<'a, SocketAddr, u16>,
    pub(super) per_ip: ManagedMap<'a, IpAddr, u16>,
    pub(super) handshakes: ManagedMap<'a, (Instant, u16), ()>,
    pub(super) ready: ManagedMap<'a, u16, ()>,
    pub(super) closed: ManagedMap<'a, ConnId, ()>,
    pub(super) strangers: ManagedMap<'a, (Instant, u16), ()>,
    pub(super) events: ManagedSlice<'a, Option<TrackerEvent>>,
}

impl Parts<'static> {
    /// Empty heap tables, each grown on demand (feature `alloc`).
    #[cfg(feature = "alloc")]
    pub(super) fn heap() -> Self {
        use alloc::collections::BTreeMap;
        use alloc::vec::Vec;
        Parts {
            conns: ManagedSlice::Owned(Vec::new()),
            files: ManagedSlice::Owned(Vec::new()),
            words: ManagedSlice::Owned(Vec::new()),
            by_id: ManagedMap::Owned(BTreeMap::new()),
            holders: ManagedMap::Owned(BTreeMap::new()),
            held: ManagedMap::Owned(BTreeMap::new()),
            nodes: ManagedMap::Owned(BTreeMap::new()),
            addrs: ManagedMap::Owned(BTreeMap::new()),
            per_ip: ManagedMap::Owned(BTreeMap::new()),
            handshakes: ManagedMap::Owned(BTreeMap::new()),
            ready: ManagedMap::Owned(BTreeMap::new()),
            closed: ManagedMap::Owned(BTreeMap::new()),
            strangers: ManagedMap::Owned(BTreeMap::new()),
            events: ManagedSlice::Owned(Vec::new()),
        }
    }
}
