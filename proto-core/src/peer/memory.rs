//! Fixed memory for a peer that allocates nothing: every table as an array the adapter owns
//! (a device's static memory, or a test's).

use core::mem::MaybeUninit;

use super::*;

/// The memory of a [`Peer`] in fixed arrays: `C` connections (the tracker's included), `F`
/// files, `W` bitmap words per file (at most `32 * W` chunks), `A` chunks in flight and the
/// leaves of `B` blocks for each (chunks of at most `B` × 16 KiB can be fetched). Pass it to
/// [`Peer::with_memory`]; [`Peer::ram_bytes`] is its size with the peer's own.
///
/// Its arrays are written when a peer is made over them, so a `static` of it needs no
/// initial image in flash (it is all `MaybeUninit`).
pub struct PeerMemory<
    const C: usize,
    const F: usize,
    const W: usize,
    const A: usize,
    const B: usize,
> {
    conns: MaybeUninit<[Slot<Conn<W>>; C]>,
    files: MaybeUninit<[Option<File<W>>; F]>,
    by_id: MaybeUninit<[Option<(FileId, u16)>; F]>,
    active: MaybeUninit<[Option<Active>; A]>,
    leaves: MaybeUninit<[[Leaf; B]; A]>,
    candidates: MaybeUninit<[Option<Candidate>; C]>,
    peer_list: MaybeUninit<[Option<PeerEntry>; C]>,
}

/// Memory for a peer small enough for a microcontroller: 4 connections, 1 file of up to 1024
/// chunks of up to 128 KiB (8 blocks), 4 chunks in flight.
pub type SmallPeerMemory = PeerMemory<4, 1, 32, 4, 8>;

impl<const C: usize, const F: usize, const W: usize, const A: usize, const B: usize>
    PeerMemory<C, F, W, A, B>
{
    /// Memory for a peer; nothing is written until a peer is made over it.
    pub const fn new() -> Self {
        PeerMemory {
            conns: MaybeUninit::uninit(),
            files: MaybeUninit::uninit(),
            by_id: MaybeUninit::uninit(),
            active: MaybeUninit::uninit(),
            leaves: MaybeUninit::uninit(),
            candidates: MaybeUninit::uninit(),
            peer_list: MaybeUninit::uninit(),
        }
    }

    pub(super) fn parts(&mut self) -> Parts<'_, W> {
        Parts {
            conns: ManagedSlice::Borrowed(
                &mut self.conns.write(core::array::from_fn(|_| Slot::new()))[..],
            ),
            files: ManagedSlice::Borrowed(
                &mut self.files.write(core::array::from_fn(|_| None))[..],
            ),
            by_id: ManagedMap::Borrowed(&mut self.by_id.write([None; F])[..]),
            active: ManagedSlice::Borrowed(
                &mut self.active.write(core::array::from_fn(|_| None))[..],
            ),
            leaves: ManagedSlice::Borrowed(
                self.leaves
                    .write([[[0; HASH_LEN]; B]; A])
                    .as_flattened_mut(),
            ),
            candidates: ManagedSlice::Borrowed(&mut self.candidates.write([None; C])[..]),
            peer_list: ManagedSlice::Borrowed(&mut self.peer_list.write([None; C])[..]),
        }
    }
}

impl<const C: usize, const F: usize, const W: usize, const A: usize, const B: usize> Default
    for PeerMemory<C, F, W, A, B>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The memory of every table, borrowed or owned.
pub(super) struct Parts<'a, const W: usize> {
    pub(super) conns: ManagedSlice<'a, Slot<Conn<W>>>,
    pub(super) files: ManagedSlice<'a, Option<File<W>>>,
    pub(super) by_id: ManagedMap<'a, FileId, u16>,
    pub(super) active: ManagedSlice<'a, Option<Active>>,
    pub(super) leaves: ManagedSlice<'a, Leaf>,
    pub(super) candidates: ManagedSlice<'a, Option<Candidate>>,
    pub(super) peer_list: ManagedSlice<'a, Option<PeerEntry>>,
}

impl<const W: usize> Parts<'static, W> {
    /// Empty heap tables, each grown on demand (feature `alloc`).
    #[cfg(feature = "alloc")]
    pub(super) fn heap() -> Self {
        use alloc::collections::BTreeMap;
        use alloc::vec::Vec;
        Parts {
            conns: ManagedSlice::Owned(Vec::new()),
            files: ManagedSlice::Owned(Vec::new()),
            by_id: ManagedMap::Owned(BTreeMap::new()),
            active: ManagedSlice::Owned(Vec::new()),
            leaves: ManagedSlice::Owned(Vec::new()),
            candidates: ManagedSlice::Owned(Vec::new()),
            peer_list: ManagedSlice::Owned(Vec::new()),
        }
    }
}
