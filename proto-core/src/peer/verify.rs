//! Verification: the frontier rule and the chunk hash check.
//!
//! Bytes of a chunk are taken strictly in order at the chunk's *frontier*: the SHA-256 is
//! updated as they arrive and they go to storage at once, so no chunk is ever buffered. Any
//! connection that was asked for the block at the frontier may supply it; copies that arrive
//! later are dropped unwritten. That one rule makes a stalled connection's chunk continue
//! elsewhere from where it stopped, and makes endgame duplicates safe.
//!
//! A whole chunk's digest is compared with its stored hash (read through
//! [`Action::ReadHash`](crate::io::Action::ReadHash)); a match is journalled and announced, a
//! mismatch is discarded, fetched again, and counted against its sender.

use super::*;

impl Active {
    /// The offset of the next byte that will be taken: the end of the block streaming in, or
    /// the frontier.
    pub(super) fn next_needed(&self) -> u32 {
        if self.receiving.is_some() {
            self.receiving_end
        } else {
            self.frontier
        }
    }
}

/// A chunk being downloaded.
pub(super) struct Active {
    pub(super) slot: u16,
    pub(super) chunk: u32,
    /// Bytes taken in order so far (hashed and written).
    pub(super) frontier: u32,
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
    pub(super) expected: Option<ChunkHash>,
    pub(super) hash_asked: bool,
    pub(super) digest: Option<[u8; 32]>,
    /// Who supplied bytes of this attempt (for blame if the hash fails).
    pub(super) contributors: Vec<(ConnId, SocketAddr, NodeId), 4>,
}

impl<const W: usize> Peer<'_, W> {
    /// A block's body ended on connection `id`.
    pub(super) fn end_block(&mut self, id: ConnId, active: Option<usize>, chunk: u32) {
        let Some(i) = active else {
            return;
        };
        let Some(slot) = self.active[i].as_ref().map(|a| a.slot) else {
            return;
        };
        let len = self.chunk_len(slot, chunk);
        let Some(a) = self.active[i].as_mut() else {
            return;
        };
        if a.receiving != Some(id) || a.chunk != chunk {
            return;
        }
        a.receiving = None;
        let Some(a) = self.active[i].as_mut() else {
            return;
        };
        if a.frontier >= len && a.digest.is_none() {
            a.digest = Some(a.sha.finalize_reset().into());
            self.try_verify(i);
        }
    }

    /// Compares a whole chunk's digest with its stored hash, once both are known.
    pub(super) fn try_verify(&mut self, i: usize) {
        let Some(a) = self.active[i].as_ref() else {
            return;
        };
        let (Some(expected), Some(digest)) = (a.expected, a.digest) else {
            return;
        };
        let Some(a) = self.active[i].take() else {
            return;
        };
        if let Some(f) = self.file_mut(a.slot) {
            f.busy.clear(a.chunk);
        }
        self.cancel_requests(a.slot, a.chunk);
        if expected.0 == digest {
            self.chunk_verified(a.slot, a.chunk);
        } else {
            self.chunk_failed(&a);
        }
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

    pub(super) fn chunk_failed(&mut self, a: &Active) {
        let Some(&(_, from, _)) = a.contributors.first() else {
            return;
        };
        self.event(PeerEvent::ChunkRejected {
            slot: a.slot,
            chunk: a.chunk,
            from,
        });
        for &(_, addr, node) in &a.contributors {
            if self.recent_bad.is_full() {
                self.recent_bad.pop_front();
            }
            let _ = self.recent_bad.push_back((a.slot, a.chunk, node));
            // With one sender the blame is certain; with several (endgame) it is shared, and
            // the chunk will not go to any of them again while another holder has it.
            if a.contributors.len() == 1 {
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
        f.unavailable_since = None;
        self.event(PeerEvent::FileComplete { slot });
        // Publishing also brings a delisted file back.
        self.want_publish(slot);
        for cand in self.candidates.iter_mut() {
            if cand.is_some_and(|c| c.slot == slot && c.conn.is_none()) {
                *cand = None;
            }
        }
    }
}
