//! Verification: the frontier rule, a chunk's leaves, and the check of every block.
//!
//! Bytes of a chunk are taken strictly in order at the chunk's *frontier*: they are hashed as
//! they arrive and go to storage at once, so no block is ever buffered. Any connection that
//! was asked for the block at the frontier may supply it; copies that arrive later are dropped
//! unwritten. That one rule makes a stalled connection's chunk continue elsewhere from where
//! it stopped, and makes endgame duplicates safe.
//!
//! Before any byte of a chunk is taken, its *leaves* (the SHA-256 of each of its 16 KiB
//! blocks, see [`crate::manifest`]) are fetched and checked against the chunk's root (read
//! from storage with [`Action::ReadHash`](crate::io::Action::ReadHash)). Until they are
//! checked, every source of the chunk asks for them right before its first block request
//! (32 bytes per 16 KiB block, so asking twice costs little): its blocks then cannot overtake
//! its leaves on the stream, and no round trip is lost. The first complete set that arrives is
//! the one checked. The receive path then stops at every block boundary (`handle_recv` takes
//! no byte past it) and compares the block's digest with its leaf:
//!
//! - a match moves the chunk's verified mark; the last block completes the chunk, which is
//!   journalled and announced at once;
//! - a mismatch costs that block: the frontier goes back to the block's start, its sender gets
//!   a strike, and the chunk continues from another holder where one exists. (Storage that
//!   cannot write a block again in place, flash, sets
//!   [`PeerConfig::rewrite_blocks`](super::PeerConfig::rewrite_blocks) to false: there the chunk
//!   starts over, so that its first write erases its sector again.)
//!
//! Leaves that do not match the root are thrown away and asked for elsewhere, with a strike
//! against their sender.
//!
//! Where a block's digest comes from is [`PeerConfig::block_check`](super::PeerConfig):
//! inline, the peer hashes the bytes as they stream through and checks each block as its last
//! byte arrives (the receive path then stops at every block boundary). Deferred, the peer
//! takes bytes past unverified blocks, and `next_check` hands each block, once written, to the
//! adapter ([`Action::HashBlock`]) whose answer comes back through `block_hashed`, in order.
//! Both end in `block_checked`, the one place a block passes or fails. A failed block sends
//! the frontier back to it (bytes past it were never verified, so nothing trusted is lost) and
//! gives the chunk a new *epoch*: a digest asked for before then names the old epoch in its
//! [`BlockTicket`](crate::io::BlockTicket) and is ignored, so an answer can never verify bytes
//! written after it was asked. Deferred, blame for a bad block goes to every connection that
//! supplied bytes since the last verified block (one, unless a source changed meanwhile; with
//! more the blame is shared, as in endgame).

use super::*;

/// Where a chunk's leaves stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Leaves {
    /// None yet (asked of the connections in [`Active::asked`]).
    Missing,
    /// Streaming in from this connection (a set from any other is dropped meanwhile).
    Receiving(ConnId),
    /// All arrived from this connection; waiting for the chunk's root to check them.
    Arrived(ConnId),
    /// Checked against the root: blocks are taken.
    Checked,
}

/// A chunk being downloaded.
pub(super) struct Active {
    pub(super) slot: u16,
    pub(super) chunk: u32,
    /// Bytes taken in order so far (hashed and written).
    pub(super) frontier: u32,
    /// Bytes verified: the end of the last block that matched its leaf.
    pub(super) verified: u32,
    /// With [`BlockCheck::Deferred`]: the end of the blocks handed to the adapter to hash
    /// (`verified <= checking <= frontier`). Inline, it follows `verified`.
    pub(super) checking: u32,
    /// Names this chunk's bytes since it started or last went back, for
    /// [`BlockTicket`]: a digest asked for before that is not about the bytes there now.
    pub(super) epoch: u32,
    /// The digest of the block being taken.
    pub(super) sha: Sha256,
    /// The connection whose block at the frontier is streaming in now, and where that block
    /// ends.
    pub(super) receiving: Option<ConnId>,
    pub(super) receiving_end: u32,
    pub(super) owner: Option<ConnId>,
    /// Next offset to ask the owner for.
    pub(super) owner_next: u32,
    /// An endgame duplicate source.
    pub(super) dup: Option<ConnId>,
    pub(super) dup_next: u32,
    /// The chunk's root, once read from storage.
    pub(super) expected: Option<ChunkHash>,
    pub(super) hash_asked: bool,
    pub(super) leaves: Leaves,
    /// The sources asked for the leaves (a chunk has at most two: owner and duplicate).
    pub(super) asked: [Option<ConnId>; 2],
    /// Who supplied bytes of the block being taken (for blame if it fails).
    pub(super) contributors: Vec<(ConnId, SocketAddr, NodeId), 4>,
    /// When the chunk started or last verified a block.
    pub(super) progressed: Instant,
}

impl Active {
    /// A chunk with nothing of it asked for yet.
    pub(super) fn new(slot: u16, chunk: u32, owner: ConnId, now: Instant, epoch: u32) -> Self {
        Active {
            slot,
            chunk,
            frontier: 0,
            verified: 0,
            checking: 0,
            epoch,
            sha: Sha256::new(),
            receiving: None,
            receiving_end: 0,
            owner: Some(owner),
            owner_next: 0,
            dup: None,
            dup_next: 0,
            expected: None,
            hash_asked: false,
            leaves: Leaves::Missing,
            asked: [None; 2],
            contributors: Vec::new(),
            progressed: now,
        }
    }

    /// The offset of the next byte that will be taken: the end of the block streaming in, or
    /// the frontier.
    pub(super) fn next_needed(&self) -> u32 {
        if self.receiving.is_some() {
            self.receiving_end
        } else {
            self.frontier
        }
    }

    /// Whether connection `id` must ask for the leaves before its next block request.
    pub(super) fn must_ask_leaves(&self, id: ConnId) -> bool {
        self.leaves != Leaves::Checked && !self.asked.contains(&Some(id))
    }

    /// Notes that `id` was asked for the leaves, in place of a source that left.
    pub(super) fn asked_leaves(&mut self, id: ConnId) {
        let (owner, dup) = (self.owner, self.dup);
        let place = self
            .asked
            .iter_mut()
            .find(|a| a.is_none_or(|c| Some(c) != owner && Some(c) != dup));
        if let Some(place) = place {
            *place = Some(id);
        }
    }

    /// Whether a connection feeds this chunk (its owner or an endgame duplicate); without one,
    /// nothing more comes for it until another takes it on.
    pub(super) fn has_source(&self) -> bool {
        self.owner.is_some() || self.dup.is_some()
    }

    /// Connection `id` no longer supplies this chunk.
    pub(super) fn forget_source(&mut self, id: ConnId) {
        for a in &mut self.asked {
            if *a == Some(id) {
                *a = None;
            }
        }
        if self.leaves == Leaves::Receiving(id) {
            self.leaves = Leaves::Missing;
        }
    }
}

impl<const W: usize> Peer<'_, W> {
    /// The leaves of chunk in flight `i`, as many as its chunk has blocks.
    pub(super) fn leaves_of(&mut self, i: usize) -> &mut [Leaf] {
        let stride = self.leaf_stride();
        let start = i * stride;
        let end = start + stride;
        if self.leaves.len() < end {
            // Heap memory grows as chunks are started; fixed memory has every place already
            // (`leaf_stride` divides it among the chunks in flight).
            #[cfg(feature = "alloc")]
            if let ManagedSlice::Owned(v) = &mut self.leaves {
                v.resize(end, [0; HASH_LEN]);
            }
        }
        self.leaves.get_mut(start..end).unwrap_or_default()
    }

    /// Leaves per chunk in flight: the most blocks a chunk may have on this peer.
    pub(super) fn leaf_stride(&self) -> usize {
        usize::from(self.config.max_chunk_blocks)
    }

    /// A chunk's leaves arrived whole from `from`.
    pub(super) fn leaves_arrived(&mut self, i: usize, from: ConnId) {
        if let Some(a) = self.active[i].as_mut() {
            if a.leaves == Leaves::Receiving(from) {
                a.leaves = Leaves::Arrived(from);
                self.check_leaves(i);
            }
        }
    }

    /// Checks arrived leaves against the chunk's root, once both are known.
    pub(super) fn check_leaves(&mut self, i: usize) {
        let Some(a) = self.active[i].as_ref() else {
            return;
        };
        let (Leaves::Arrived(from), Some(expected)) = (a.leaves, a.expected) else {
            return;
        };
        let (slot, chunk) = (a.slot, a.chunk);
        let Some(h) = self.file(slot).and_then(|f| f.header()) else {
            return;
        };
        let (count, width) = (h.blocks_in(chunk) as usize, h.blocks_per_chunk());
        let root = merkle_root(self.leaves_of(i).get(..count).unwrap_or_default(), width);
        if root == expected.0 {
            if let Some(a) = self.active[i].as_mut() {
                a.leaves = Leaves::Checked;
            }
            self.announce_started(slot, chunk);
            return;
        }
        if let Some(a) = self.active[i].as_mut() {
            a.leaves = Leaves::Missing;
        }
        if let Some((addr, node)) = self.conns.get(from).map(|c| {
            let node = c.link.hello.map(|h| h.node).unwrap_or_default();
            (c.listen_addr(), node)
        }) {
            self.blame(slot, chunk, &[(from, addr, node)]);
        }
        self.release_chunk_from(i, from);
    }

    /// The bytes of chunk `i` up to its frontier complete a block. Inline, its digest is
    /// ready: it is checked now. Deferred, the adapter is asked for it by `next_check`.
    /// Returns false if it failed (the rest of `from`'s block is then not taken).
    pub(super) fn block_done(&mut self, i: usize, from: ConnId) -> bool {
        if self.config.block_check == BlockCheck::Deferred {
            return true;
        }
        let Some(a) = self.active[i].as_mut() else {
            return false;
        };
        let digest: Leaf = a.sha.finalize_reset().into();
        let end = a.frontier;
        self.block_checked(i, end, digest, Some(from))
    }

    /// The next block to hand to the adapter for hashing, with [`BlockCheck::Deferred`]: a
    /// whole block below the frontier of a chunk not yet asked about.
    pub(super) fn next_check(&mut self) -> Option<Action> {
        // Only while its answer has room for its events: an adapter that answers at once
        // (before the drain reaches the events) never has a digest refused.
        if self.config.block_check != BlockCheck::Deferred || !self.event_room() {
            return None;
        }
        for idx in 0..self.active.len() {
            let Some(a) = self.active[idx].as_ref() else {
                continue;
            };
            if a.checking >= a.frontier {
                continue;
            }
            let (slot, chunk, from) = (a.slot, a.chunk, a.checking);
            let Some(h) = self.file(slot).and_then(|f| f.header()) else {
                continue;
            };
            let (block, len) = (h.block_len(), h.chunk_len(chunk));
            let end = ((from / block + 1) * block).min(len);
            let offset = h.chunk_offset(chunk) + u64::from(from);
            let Some(a) = self.active[idx].as_mut() else {
                continue;
            };
            if a.frontier < end {
                continue;
            }
            a.checking = end;
            return Some(Action::HashBlock {
                key: key(slot, Region::Data),
                offset,
                len: end - from,
                ticket: BlockTicket {
                    slot,
                    chunk,
                    end,
                    epoch: a.epoch,
                },
            });
        }
        None
    }

    /// A digest the adapter computed for [`Action::HashBlock`]. One for a chunk that has gone
    /// back, started over or finished since it was asked is ignored. Returns whether the
    /// chunk finished or went back: only then is there anything new to schedule (a block that
    /// passed changes no request; blocks waiting to be served go out with the next poll).
    pub(super) fn block_hashed(&mut self, ticket: BlockTicket, digest: Leaf) -> bool {
        let Some(i) = self.active_index(ticket.slot, ticket.chunk) else {
            return false;
        };
        let Some(a) = self.active[i].as_ref() else {
            return false;
        };
        let block = self
            .file(a.slot)
            .and_then(|f| f.header())
            .map_or(1, |h| h.block_len());
        // Only the block that starts at the verified mark, in this epoch and asked about: an
        // answer for any other (stale, or given twice) is ignored.
        let next = ticket.end > a.verified && (ticket.end - 1) / block * block == a.verified;
        if a.epoch != ticket.epoch || !next || ticket.end > a.checking {
            return false;
        }
        // Blame goes to whoever supplied the bytes past the verified mark.
        let from = a.contributors.first().map(|&(c, _, _)| c);
        let passed = self.block_checked(i, ticket.end, digest, from);
        !passed || self.active[i].is_none()
    }

    /// The block of chunk `i` ending at `end` has this digest: compare it with its leaf.
    /// Returns false if it failed (the chunk then goes back to the block's start, or to the
    /// chunk's start where blocks cannot be rewritten; `from`, its sender, gives the chunk up).
    fn block_checked(&mut self, i: usize, end: u32, digest: Leaf, from: Option<ConnId>) -> bool {
        let Some(a) = self.active[i].as_ref() else {
            return false;
        };
        let (slot, chunk) = (a.slot, a.chunk);
        let Some(h) = self.file(slot).and_then(|f| f.header()) else {
            return false;
        };
        let (len, block) = (h.chunk_len(chunk), h.block_len());
        let k = ((end - 1) / block) as usize;
        let leaf = self.leaves_of(i).get(k).copied();
        let Some(a) = self.active[i].as_mut() else {
            return false;
        };
        if Some(digest) == leaf {
            a.verified = end;
            a.checking = a.checking.max(end);
            a.progressed = self.now;
            // Who supplied the bytes still unverified stays on the list for blame: inline
            // that is only the connection streaming now, if any.
            if a.frontier == end {
                let receiving = a.receiving;
                a.contributors.retain(|&(c, _, _)| Some(c) == receiving);
            }
            if end >= len {
                self.complete_chunk(i);
            }
            return true;
        }
        let restart = if self.config.rewrite_blocks {
            a.verified
        } else {
            a.verified = 0;
            0
        };
        a.frontier = restart;
        a.checking = restart;
        a.receiving = None;
        let who = core::mem::take(&mut a.contributors);
        // Digests asked for before now are about bytes no longer trusted.
        let epoch = self.next_epoch();
        if let Some(a) = self.active[i].as_mut() {
            a.epoch = epoch;
        }
        self.blame(slot, chunk, &who);
        match from {
            Some(from) => self.release_chunk_from(i, from),
            // Every sender has gone: those left ask again from where the chunk went back to.
            None => self.resync(i),
        }
        false
    }

    /// A number no chunk in flight has as its epoch.
    pub(super) fn next_epoch(&mut self) -> u32 {
        self.epochs = self.epochs.wrapping_add(1);
        self.epochs
    }

    /// Every block of chunk `i` is verified.
    fn complete_chunk(&mut self, i: usize) {
        let Some(a) = self.active[i].take() else {
            return;
        };
        if let Some(f) = self.file_mut(a.slot) {
            f.busy.clear(a.chunk);
        }
        self.cancel_requests(a.slot, a.chunk);
        self.chunk_verified(a.slot, a.chunk);
    }

    pub(super) fn chunk_verified(&mut self, slot: u16, chunk: u32) {
        let len = u64::from(self.chunk_len(slot, chunk));
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        if !f.have.set(chunk) {
            return;
        }
        f.log.push(chunk);
        f.bytes_done += len;
        self.event(PeerEvent::ChunkVerified { slot, chunk });
        if let Some(p) = self.progress(slot) {
            self.event(PeerEvent::Progress(p));
        }
        if self.file(slot).is_some_and(|f| f.have.is_full()) {
            self.complete_file(slot);
        }
    }

    /// A block or the leaves of `chunk` failed, supplied by `who`: an event, a strike when
    /// the blame is certain (one sender), and a note so the chunk goes elsewhere if it can.
    pub(super) fn blame(&mut self, slot: u16, chunk: u32, who: &[(ConnId, SocketAddr, NodeId)]) {
        let Some(&(_, from, _)) = who.first() else {
            return;
        };
        self.event(PeerEvent::ChunkRejected { slot, chunk, from });
        for &(_, addr, node) in who {
            if self.recent_bad.is_full() {
                self.recent_bad.pop_front();
            }
            let _ = self.recent_bad.push_back((slot, chunk, node));
            // With one sender the blame is certain; with several (endgame) it is shared, and
            // the chunk will not go to any of them again while another holder has it.
            if who.len() == 1 {
                self.strike(node, addr);
            }
        }
    }

    /// Every chunk is verified: the fetch becomes a share.
    pub(super) fn complete_file(&mut self, slot: u16) {
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        f.fetching = false;
        // Its chunks are out in the swarm already: nothing is left to super-seed.
        f.busy.fill();
        f.unavailable_since = None;
        self.event(PeerEvent::FileComplete { slot });
        // Publishing also brings a delisted file back.
        for t in 0..self.config.trackers.iter().count() {
            self.want_publish(t, slot);
        }
        // The candidates stay: no longer dialled, they are the peers told in exchange.
    }
}
