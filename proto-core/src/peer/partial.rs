//! Serving a chunk before it is whole: the blocks of a chunk being fetched go out as they are
//! verified.
//!
//! Once a chunk's leaves are checked, its blocks can be served as they are verified
//! ([`PeerConfig::serve_partial`](super::PeerConfig::serve_partial)): the peer tells the file's
//! other connections with [`Message::Started`], a remote asks for blocks as from any holder, and a
//! request for a block not yet verified waits in the serve queue (at most half of it, so blocks
//! that can go always find room) and goes as it is verified, 16 KiB at a time: what is verified of
//! it goes at once, and the rest stays queued in its place. So bytes cross the swarm in hops of
//! 16 KiB, whatever size the requests are (the simulator's 100-peer swarm: 0.852 / 0.848 / 0.846
//! with whole requests, 0.865 / 0.863 / 0.852 in pieces). Three rules keep peers from waiting on
//! each other for the same chunk: a remote that is itself a source of our copy is refused it (and
//! refused what it waits for when it becomes one); a chunk that lost its source is continued
//! only from a peer that holds it whole (`Conn::partial` remembers who is still fetching what,
//! and a peer that started more than it remembers holds nothing whole); and a request waits at
//! most a stall timeout after the chunk last moved on. A chunk given up refuses what waits for
//! it.

use super::*;

impl<const W: usize> Peer<'_, W> {
    /// Tells the file's connections that lack `chunk` that its blocks can be asked of us now.
    pub(super) fn announce_started(&mut self, slot: u16, chunk: u32) {
        if !self.config.serve_partial {
            return;
        }
        for index in 0..self.conns.capacity() {
            let Some(id) = self.conn_for(index, slot) else {
                continue;
            };
            let tell = self.conns.get(id).is_some_and(|c| {
                c.is_open() && c.bitfield_out && c.bitfield_in && !c.remote_has.get(chunk)
            });
            if tell {
                self.ctl(id, Ctl::Started(chunk));
            }
        }
    }

    /// Whether we serve the leaves and (verified) blocks of `chunk`: it is held, or being
    /// fetched with its leaves checked, a block verified, and a source feeding it. (Without a
    /// source nothing more may come: peers waiting on each other for the same chunk would
    /// wait for ever.)
    pub(super) fn servable_chunk(&self, slot: u16, chunk: u32) -> bool {
        self.file(slot).is_some_and(|f| f.have.get(chunk))
            || (self.config.serve_partial
                && self.active_index(slot, chunk).is_some_and(|i| {
                    self.active[i]
                        .as_ref()
                        .is_some_and(|a| a.leaves == Leaves::Checked && a.has_source())
                }))
    }

    /// When the first block `c` waits for gives up: a stall timeout after its chunk last
    /// moved on (whatever fed it stopped; the remote then asks another holder).
    pub(super) fn waiting_deadline(&self, c: &Conn<W>) -> Option<Instant> {
        // Without partial serving nothing ever waits: no scan on every drain.
        if !self.config.serve_partial {
            return None;
        }
        let slot = c.file?;
        c.serve
            .iter()
            .filter(|b| !self.servable(slot, b))
            .map(|b| {
                self.active_index(slot, b.chunk)
                    .and_then(|i| self.active[i].as_ref())
                    .map_or(self.now, |a| a.progressed + self.config.stall_timeout)
            })
            .min()
    }

    /// Refuses the blocks `id` waits for whose chunks have not moved on for a stall timeout.
    pub(super) fn expire_waiting(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get(id).and_then(|c| c.file) else {
            return;
        };
        let (now, wait) = (self.now, self.config.stall_timeout);
        self.refuse(id, |p, b| {
            !p.servable(slot, b)
                && p.active_index(slot, b.chunk)
                    .and_then(|i| p.active[i].as_ref())
                    .is_none_or(|a| a.progressed + wait <= now)
        });
    }

    /// Whether connection `id` supplies our copy of `chunk`.
    pub(super) fn feeds(&self, slot: u16, chunk: u32, id: ConnId) -> bool {
        self.active_index(slot, chunk)
            .and_then(|i| self.active[i].as_ref())
            .is_some_and(|a| a.owner == Some(id) || a.dup == Some(id) || a.receiving == Some(id))
    }

    /// Connection `id` becomes a source of chunk in flight `i`: blocks of it that `id` waits
    /// for from us are refused, or each would wait on the other.
    pub(super) fn became_source(&mut self, i: usize, id: ConnId) {
        let Some((slot, chunk)) = self.active[i].as_ref().map(|a| (a.slot, a.chunk)) else {
            return;
        };
        self.refuse(id, |p, b| b.chunk == chunk && !p.servable(slot, b));
    }

    /// Whether block `b` can be sent now, all of it: its chunk is held, or verified that far.
    pub(super) fn servable(&self, slot: u16, b: &Blk) -> bool {
        self.servable_len(slot, b) >= b.len
    }

    /// How much of block `b`, from its start, can be sent now: all of it if its chunk is
    /// held, else what of it is verified. The verified mark stands on a 16 KiB block boundary
    /// (or the chunk's end), so a part sent ends on one, as [`Blk::answered_by`] asks.
    pub(super) fn servable_len(&self, slot: u16, b: &Blk) -> u32 {
        if self.file(slot).is_some_and(|f| f.have.get(b.chunk)) {
            return b.len;
        }
        if !self.config.serve_partial {
            return 0;
        }
        self.active_index(slot, b.chunk)
            .and_then(|i| self.active[i].as_ref())
            .map_or(0, |a| a.verified.saturating_sub(b.offset).min(b.len))
    }

    /// We stopped fetching `chunk` before it was whole: blocks of it that remotes asked of us
    /// and that we cannot send are refused, so they ask elsewhere.
    pub(super) fn refuse_waiting(&mut self, slot: u16, chunk: u32) {
        if !self.config.serve_partial {
            return;
        }
        for index in 0..self.conns.capacity() {
            if let Some(id) = self.conn_for(index, slot) {
                self.refuse(id, |p, b| b.chunk == chunk && !p.servable(slot, b));
            }
        }
    }

    /// Refuses (`NotHeld`) and drops the blocks `id` asked of us that `which` picks.
    fn refuse(&mut self, id: ConnId, which: impl Fn(&Self, &Blk) -> bool) {
        let picked: Vec<Blk, { super::SERVE_QUEUE }> = self
            .conns
            .get(id)
            .map(|c| c.serve.iter().copied().filter(|b| which(self, b)).collect())
            .unwrap_or_default();
        if picked.is_empty() {
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.serve.retain(|b| !picked.contains(b));
        }
        for b in picked {
            self.ctl(id, Ctl::Reject(b, RejectReason::NotHeld));
        }
    }
}
