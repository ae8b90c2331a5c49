//! The scheduler: which block to ask which connection for, and what happens when a chunk is
//! whole. This is the one place the peer decides.
//!
//! Every connection for a file being fetched keeps a pipeline of block requests as deep as its
//! measured rate times its round trip (at least four blocks, at most
//! [`PeerConfig::max_in_flight`](super::PeerConfig::max_in_flight)). Faster connections drain
//! their pipeline sooner and so come back for work more often: they get more work without a
//! separate rule. When a pipeline has room, in this order:
//!
//! 1. more blocks of a chunk this connection is already fetching;
//! 2. a started chunk whose source went away ("finish started chunks first"), continuing at its
//!    frontier;
//! 3. a new chunk: the rarest among the connected peers' availability, ties broken at random
//!    (uniformly among the equally rare, so fetchers rarely pick the same chunk). Rarity
//!    counts the holders that are still fetching first: a chunk only whole-file holders have is
//!    the rarest, so a seed's upload goes to chunks the swarm has nowhere else before it goes
//!    to chunks already circulating (and a request to a seed for a chunk that a fetcher then
//!    announces is moved to that fetcher if nothing of it has arrived yet);
//! 4. endgame: when every missing chunk is already in flight, a duplicate of another
//!    connection's chunk, if this connection would deliver its rest far sooner than its owner
//!    (see [`ENDGAME_FASTER`]) or the chunk has not moved for a stall timeout. Whichever copy of each block arrives first is taken; on
//!    completion the other connection's requests for it are cancelled.
//!
//! A connection that leaves its requests unanswered for
//! [`PeerConfig::stall_timeout`](super::PeerConfig::stall_timeout) loses its chunks to the
//! others (step 2) and gets no new work for a while. A chunk that fails its hash is fetched
//! again from another holder where one exists.

use heapless::Vec;
use rand_xoshiro::rand_core::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{Active, Blk, Conn, Ctl, Peer, Phase, Req};
use crate::bitmap::ChunkBitmap;
use crate::conn::ConnId;
use crate::table::vacancy;
use crate::time::Instant;
use crate::wire::{ChunkRange, NodeId};

/// How many times sooner than a chunk's owner an endgame duplicate must expect to deliver its
/// rest. Measured in the simulator (64 MiB in 256 KiB chunks; BENCHMARKS.md, "Endgame"): 20
/// and 100 peers gain 0.01 to 0.02 at any factor from 1 to 64 (fewer duplicates share the
/// downlinks of the last half-second). Large, so a duplicate is asked only of a link far
/// faster than the owner.
const ENDGAME_FASTER: u64 = 16;
/// Connections whose availability counts towards a chunk's rarity.
const OFFERS: usize = 32;
/// A chunk's rarity as one number, so "rarer" is "smaller": the partial holders counted from
/// this bit up, all holders below it (at most `OFFERS`, so they never carry into it).
const PARTIAL_SHIFT: u32 = 6;
const HOLDERS_MASK: u32 = (1 << PARTIAL_SHIFT) - 1;

/// 32 counters side by side, one per chunk of a bitmap word, bit-sliced: `planes[k]` holds bit
/// `k` of every counter, so one addition updates all 32 in a dozen word operations.
#[derive(Default)]
struct LaneCounts {
    planes: [u32; 2 * PARTIAL_SHIFT as usize],
}

impl LaneCounts {
    /// Adds `1 << at` to each counter whose bit is set in `lanes`.
    fn add(&mut self, lanes: u32, at: u32) {
        let mut carry = lanes;
        for plane in self.planes.iter_mut().skip(at as usize) {
            if carry == 0 {
                return;
            }
            let next = *plane & carry;
            *plane ^= carry;
            carry = next;
        }
    }

    /// The counter of lane `b`.
    fn lane(&self, b: u32) -> u32 {
        self.planes
            .iter()
            .enumerate()
            .map(|(k, plane)| ((plane >> b) & 1) << k)
            .sum()
    }

    /// The lanes of `among` whose counters are the smallest among them: from the top bit
    /// down, keep those with a 0 there whenever any has.
    fn least(&self, among: u32) -> u32 {
        let mut m = among;
        for plane in self.planes.iter().rev() {
            let zero = m & !plane;
            if zero != 0 {
                m = zero;
            }
        }
        m
    }
}

impl<const W: usize> Peer<'_, W> {
    pub(super) fn after_command(&mut self, now: Instant) {
        self.enter(now);
        self.schedule();
    }

    /// Connect to holders, drop connections where neither side wants anything, and fill every
    /// connection's pipeline.
    pub(super) fn schedule(&mut self) {
        self.connect_candidates();
        for i in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(i) else {
                continue;
            };
            let idle = self.conns.get(id).is_some_and(|c| {
                c.is_open()
                    && c.bitfield_in
                    && c.holds_all()
                    && c.serve.is_empty()
                    && c.file
                        .and_then(|s| self.file(s))
                        .is_some_and(|f| f.complete())
            });
            // Each close is an event: while the queue is short of room the rest wait for the
            // next input (a completed peer may hold dozens of such connections at once).
            if idle && self.event_room() {
                // Both ends hold the whole file: nothing will ever cross this connection.
                self.close_now(id);
            }
        }
        for index in 0..self.conns.capacity() {
            if let Some(id) = self.conns.id_at(index) {
                self.fill(id);
            }
        }
    }

    /// How many bytes connection `c` should have asked for and not yet received: its rate
    /// times its round trip, and at least one block.
    ///
    /// Every byte asked for and not yet received waits in some queue, most of them in the
    /// uplink that serves it, so a block crosses a hop as late as the bytes queued ahead of it
    /// there (Little's law: the wait is the bytes in flight over the rate). A pipeline deeper
    /// than the link needs adds that wait to every hop without moving a byte more. The
    /// simulator's 100-peer swarm ran at 0.811 / 0.800 / 0.812 with rate x (2 RTT + 100 ms)
    /// and at least 4 blocks, and runs at 0.852 / 0.848 / 0.846 with this; half the peers ten
    /// times slower went from 0.87 to 0.98 (BENCHMARKS.md, "Pipeline depth").
    pub(super) fn pipeline_bytes(&self, c: &Conn<W>) -> u64 {
        let block = u64::from(self.config.block_len);
        let bdp = c
            .rate
            .rate(self.now)
            .saturating_mul(c.rtt_or_guess().total_micros())
            / 1_000_000;
        bdp.max(block)
            .min(u64::from(self.config.max_in_flight).max(block))
    }

    pub(super) fn fill(&mut self, id: ConnId) {
        loop {
            let Some(c) = self.conns.get(id) else {
                return;
            };
            if !c.is_open() || !c.bitfield_in || c.pause_until > self.now || c.reqs.is_full() {
                return;
            }
            let Some(slot) = c.file else {
                return;
            };
            let wanted = self
                .file(slot)
                .is_some_and(|f| f.fetching && f.header().is_some());
            if !wanted || c.in_flight_bytes() >= self.pipeline_bytes(c) {
                return;
            }
            if let Some(i) = self.assigned_with_room(id) {
                self.request_next(i, id);
            } else if let Some(i) = self.orphan_for(id, slot) {
                if let Some(a) = self.active[i].as_mut() {
                    a.owner = Some(id);
                    a.owner_next = a.frontier;
                }
                self.became_source(i, id);
            } else if let Some(chunk) = self.pick_rarest(id, slot) {
                if !self.start_chunk(slot, chunk, id) {
                    return;
                }
            } else if let Some(i) = self.endgame_for(id, slot) {
                if let Some(a) = self.active[i].as_mut() {
                    a.dup = Some(id);
                    a.dup_next = a.next_needed();
                }
                self.became_source(i, id);
            } else {
                return;
            }
        }
    }

    pub(super) fn active_index(&self, slot: u16, chunk: u32) -> Option<usize> {
        self.active.iter().position(|a| {
            a.as_ref()
                .is_some_and(|a| a.slot == slot && a.chunk == chunk)
        })
    }

    pub(super) fn chunk_len(&self, slot: u16, chunk: u32) -> u32 {
        self.file(slot)
            .and_then(|f| f.header())
            .map_or(0, |h| h.chunk_len(chunk))
    }

    /// A chunk `id` fetches (as owner or duplicate) with blocks not yet asked for.
    pub(super) fn assigned_with_room(&self, id: ConnId) -> Option<usize> {
        self.active.iter().position(|a| {
            a.as_ref().is_some_and(|a| {
                let len = self.chunk_len(a.slot, a.chunk);
                (a.owner == Some(id) && a.owner_next < len)
                    || (a.dup == Some(id) && a.dup_next < len)
            })
        })
    }

    pub(super) fn request_next(&mut self, i: usize, id: ConnId) {
        let block_len = self.config.block_len;
        let Some(a) = self.active[i].as_ref() else {
            return;
        };
        let (slot, chunk) = (a.slot, a.chunk);
        let len = self.chunk_len(slot, chunk);
        if self.file(slot).is_none() {
            return;
        }
        let Some(a) = self.active[i].as_mut() else {
            return;
        };
        if a.must_ask_leaves(id) {
            // The leaves go first on this connection: its blocks cannot overtake them.
            a.asked_leaves(id);
            self.ctl(id, Ctl::GetLeaves(chunk));
        }
        let Some(a) = self.active[i].as_mut() else {
            return;
        };
        let next = if a.owner == Some(id) {
            &mut a.owner_next
        } else {
            &mut a.dup_next
        };
        // Never ask again for bytes already taken.
        let start = (*next).max(a.frontier);
        let take = block_len.min(len - start.min(len));
        *next = start + take;
        if take == 0 {
            return;
        }
        let block = Blk {
            chunk,
            offset: start,
            len: take,
        };
        if let Some(c) = self.conns.get_mut(id) {
            // `fill` checked there is room.
            let _ = c.reqs.push_back(Req { block, sent: None });
        }
    }

    /// The chunks in flight, with their index in the table.
    pub(super) fn in_flight(&self) -> impl Iterator<Item = (usize, &Active)> {
        self.active
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
    }

    /// A started chunk with no source that `id` can continue; the furthest along first.
    pub(super) fn orphan_for(&self, id: ConnId, slot: u16) -> Option<usize> {
        let c = self.conns.get(id)?;
        self.in_flight()
            .filter(|(_, a)| {
                a.slot == slot
                    && !a.has_source()
                    && c.holds_whole(a.chunk)
                    && !self.avoid(id, slot, a.chunk)
            })
            .max_by_key(|(_, a)| a.frontier)
            .map(|(i, _)| i)
    }

    /// The rarest chunk `id` offers that is neither held nor in flight.
    pub(super) fn pick_rarest(&mut self, id: ConnId, slot: u16) -> Option<u32> {
        // A local copy: the scan below borrows the tables while it draws numbers.
        let mut rng = self.rng.clone();
        let pick = self.pick_rarest_with(id, slot, &mut rng);
        self.rng = rng;
        pick
    }

    pub(super) fn pick_rarest_with(
        &self,
        id: ConnId,
        slot: u16,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Option<u32> {
        let c = self.conns.get(id)?;
        let f = self.file(slot)?;
        let count = f.header()?.chunk_count();
        // No place for another chunk in flight: every place taken, and none can be added.
        let active_full = self.active.len() >= usize::from(self.config.max_active)
            && self.active.iter().all(Option::is_some);
        if count == 0 || active_full {
            return None;
        }
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        // The rarest candidates, one of them taken uniformly at random: taking "the first
        // rarest after a random start" would favour the chunk right after a run everyone
        // holds, and every fetcher would pick the same one. Two passes (count the rarest,
        // then walk to a random one of them) cost one random number per pick.
        // The availability of every open connection for this file, gathered once.
        // At most OFFERS of them: a file has at most `max_conns_per_file` connections of
        // ours plus those that reached us, and a rarity estimate needs no more.
        let offers: Vec<(&ChunkBitmap<W>, bool), OFFERS> = self
            .conns
            .iter()
            .filter(|(_, o)| o.file == Some(slot) && o.is_open() && o.bitfield_in)
            .map(|(_, o)| (&o.remote_has, !o.holds_all()))
            .take(OFFERS)
            .collect();
        // Chunks this remote sent us a bad copy of lately: it supplies them only if no one
        // else has them.
        let bad: Vec<u32, 8> = self
            .recent_bad
            .iter()
            .filter(|&&(s, _, n)| s == slot && n == node)
            .map(|&(_, chunk, _)| chunk)
            .collect();
        // The rarest candidates of word `w` (32 chunks) and their rarity. Rarity counts peers
        // still fetching first: a chunk only whole-file holders have is the rarest of all,
        // since they are the swarm's only supply of it. The counts of all 32 chunks are
        // added at once, bit-sliced, so a pick costs a few operations per word and offer
        // rather than per chunk (a 1 GiB file has 4,096 chunks, picked 4,096 times).
        let rarest_in = |w: usize| -> Option<(u32, u32)> {
            let mut cand = c.remote_has.word(w) & !f.have.word(w) & !f.busy.word(w);
            if cand == 0 {
                return None;
            }
            let mut rarity = LaneCounts::default();
            for (has, part) in &offers {
                let holds = has.word(w) & cand;
                rarity.add(holds, 0);
                if *part {
                    rarity.add(holds, PARTIAL_SHIFT);
                }
            }
            for &chunk in &bad {
                if chunk as usize / 32 == w {
                    let b = chunk % 32;
                    if rarity.lane(b) & HOLDERS_MASK > 1 {
                        cand &= !(1 << b);
                    }
                }
            }
            let least = rarity.least(cand);
            (least != 0).then(|| (least, rarity.lane(least.trailing_zeros())))
        };
        let words = count.div_ceil(32) as usize;
        let (mut rarest, mut ties) = (u32::MAX, 0u64);
        for (mask, rarity) in (0..words).filter_map(rarest_in) {
            if rarity < rarest {
                (rarest, ties) = (rarity, 0);
            }
            if rarity == rarest {
                ties += u64::from(mask.count_ones());
            }
        }
        if ties == 0 {
            return None;
        }
        let mut k = rng.next_u64() % ties;
        for w in 0..words {
            let Some((mut mask, _)) = rarest_in(w).filter(|&(_, r)| r == rarest) else {
                continue;
            };
            let n = u64::from(mask.count_ones());
            if k >= n {
                k -= n;
                continue;
            }
            for _ in 0..k {
                mask &= mask - 1;
            }
            return Some(w as u32 * 32 + mask.trailing_zeros());
        }
        None
    }

    /// A partial holder now offers `ranges`: chunks among them that we asked a complete source
    /// for, and of which nothing has arrived yet, are cancelled there and go back to the pool,
    /// to be fetched from the swarm (the rule of step 3, kept as availability changes).
    pub(super) fn prefer_swarm(&mut self, slot: u16, ranges: &[ChunkRange]) {
        for i in 0..self.active.len() {
            let Some(a) = self.active[i].as_ref() else {
                continue;
            };
            if a.slot != slot || a.frontier > 0 || a.receiving.is_some() {
                continue;
            }
            if !ranges.iter().any(|r| (r.start..r.end).contains(&a.chunk)) {
                continue;
            }
            let Some(owner) = a.owner else {
                continue;
            };
            let chunk = a.chunk;
            let now = self.now;
            // Only while the seed cannot have begun to answer: a request out for longer than
            // a round trip has its blocks on the way, and cancelling it wastes them (behind a
            // slow downlink, most of the download: half the simulator's peers ten times
            // slower ran at 0.507 with the cancels, 0.876 without them).
            let untouched = self.conns.get(owner).is_some_and(|c| {
                let rtt = c.rtt_or_guess();
                c.holds_all()
                    && c.reqs
                        .iter()
                        .filter(|r| r.block.chunk == chunk)
                        .all(|r| r.sent.is_none_or(|t| now - t < rtt))
            });
            if untouched && a.dup.is_none() {
                self.release_chunk_from(i, owner);
            }
        }
    }

    pub(super) fn failed_from(&self, slot: u16, chunk: u32, node: NodeId) -> bool {
        self.recent_bad
            .iter()
            .any(|&(s, c, n)| s == slot && c == chunk && n == node)
    }

    /// Whether `id` sent a bad copy of part of `chunk` lately while another open connection
    /// offers it: then that one supplies it.
    pub(super) fn avoid(&self, id: ConnId, slot: u16, chunk: u32) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        self.failed_from(slot, chunk, node)
            && self.conns.iter().any(|(other, o)| {
                other != id
                    && o.file == Some(slot)
                    && o.is_open()
                    && o.bitfield_in
                    && o.remote_has.get(chunk)
            })
    }

    pub(super) fn start_chunk(&mut self, slot: u16, chunk: u32, owner: ConnId) -> bool {
        let Some(free) = vacancy(&mut self.active, usize::from(self.config.max_active)) else {
            return false;
        };
        let epoch = self.next_epoch();
        self.active[free] = Some(Active::new(slot, chunk, owner, self.now, epoch));
        if let Some(f) = self.file_mut(slot) {
            f.busy.set(chunk);
        }
        true
    }

    /// Whether `c` would deliver the rest of chunk `a` [`ENDGAME_FASTER`] times sooner than
    /// its owner, by their measured rates; or the owner has no rate measured yet, or the
    /// chunk has not moved for a stall timeout (an owner that answers other requests but
    /// never this chunk's, which the connection's own stall check does not see). A duplicate
    /// shares our downlink with the owner's copy, and the owner's blocks already on the way
    /// are wasted when the duplicate wins: it pays only against an owner far slower, or stuck.
    fn much_sooner(&self, c: &Conn<W>, a: &Active) -> bool {
        let Some(owner) = a.owner.and_then(|o| self.conns.get(o)) else {
            return true;
        };
        let theirs = owner.rate.rate(self.now);
        if theirs == 0 {
            return true;
        }
        if self.now - a.progressed >= self.config.stall_timeout {
            return true;
        }
        let ours = c.rate.rate(self.now);
        if ours == 0 {
            return false;
        }
        let rest = u64::from(self.chunk_len(a.slot, a.chunk).saturating_sub(a.frontier));
        let rtt = c.rtt_or_guess().total_micros();
        let their_eta = rest.saturating_mul(1_000_000) / theirs;
        let our_eta = rest.saturating_mul(1_000_000) / ours + rtt;
        our_eta.saturating_mul(ENDGAME_FASTER) < their_eta
    }

    /// Endgame: a chunk in flight from another connection that `id` could also supply, much
    /// sooner than that one will. Only once every missing chunk of the file is in flight.
    pub(super) fn endgame_for(&self, id: ConnId, slot: u16) -> Option<usize> {
        let f = self.file(slot)?;
        let count = f.header()?.chunk_count();
        if f.have.count() + f.busy.count() < count {
            return None;
        }
        let c = self.conns.get(id)?;
        self.in_flight()
            .filter(|(_, a)| {
                a.slot == slot
                    && a.owner.is_some()
                    && a.owner != Some(id)
                    && a.dup.is_none()
                    && c.holds_whole(a.chunk)
                    && !self.avoid(id, slot, a.chunk)
                    && self.much_sooner(c, a)
            })
            .min_by_key(|(_, a)| a.frontier)
            .map(|(i, _)| i)
    }

    /// Drops every request for `chunk` of `slot`; those already sent are cancelled.
    pub(super) fn cancel_requests(&mut self, slot: u16, chunk: u32) {
        for i in 0..self.conns.capacity() {
            if let Some(id) = self.conn_for(i, slot) {
                self.drop_requests(id, |b| b.chunk == chunk);
            }
        }
    }

    /// Drops the requests of `id` that match; those already sent are cancelled.
    pub(super) fn drop_requests(&mut self, id: ConnId, matches: impl Fn(&Blk) -> bool) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let live = c.is_open();
        let mut cancels: Vec<Blk, { super::REQ_QUEUE }> = Vec::new();
        c.reqs.retain(|r| {
            if !matches(&r.block) {
                return true;
            }
            if r.sent.is_some() && live {
                let _ = cancels.push(r.block);
            }
            false
        });
        if let Some(c) = self.conns.get_mut(id) {
            c.cancelled += cancels.iter().map(|b| u64::from(b.len)).sum::<u64>();
        }
        for b in cancels {
            self.ctl(id, Ctl::Cancel(b));
        }
    }

    /// Connection `id` stops supplying chunk `i` (it refused a block of it).
    pub(super) fn release_chunk_from(&mut self, i: usize, id: ConnId) {
        let Some(a) = self.active[i].as_ref() else {
            return;
        };
        let chunk = a.chunk;
        self.drop_requests(id, |b| b.chunk == chunk);
        self.unassign(i, id);
    }

    pub(super) fn unassign(&mut self, i: usize, id: ConnId) {
        let Some(a) = self.active[i].as_mut() else {
            return;
        };
        if a.owner == Some(id) {
            a.owner = None;
        }
        if a.dup == Some(id) {
            a.dup = None;
        }
        if a.receiving == Some(id) {
            a.receiving = None;
        }
        a.forget_source(id);
        // A chunk nobody started goes back to the pool, to be picked by rarity again.
        if !a.has_source() && a.frontier == 0 && a.receiving.is_none() {
            let (slot, chunk) = (a.slot, a.chunk);
            self.active[i] = None;
            if let Some(f) = self.file_mut(slot) {
                f.busy.clear(chunk);
            }
            self.refuse_waiting(slot, chunk);
            return;
        }
        if !a.has_source() {
            // No source left: nothing more will come for those waiting on us.
            let (slot, chunk) = (a.slot, a.chunk);
            self.refuse_waiting(slot, chunk);
        }
        self.resync(i);
    }

    /// After a source left chunk `i`: a remaining source none of whose requests starts where
    /// the next byte is needed would never be taken again (its blocks are cut elsewhere), so
    /// its requests for the chunk are dropped and it asks again from there.
    pub(super) fn resync(&mut self, i: usize) {
        let Some(a) = self.active[i].as_ref() else {
            return;
        };
        let (chunk, need, receiving) = (a.chunk, a.next_needed(), a.receiving);
        for source in [a.owner, a.dup].into_iter().flatten() {
            if Some(source) == receiving {
                continue;
            }
            let lined_up = self.conns.get(source).is_some_and(|c| {
                c.reqs
                    .iter()
                    .any(|r| r.block.chunk == chunk && r.block.offset == need)
            });
            if lined_up {
                continue;
            }
            self.drop_requests(source, |b| b.chunk == chunk);
            if let Some(a) = self.active[i].as_mut() {
                if a.owner == Some(source) {
                    a.owner_next = need;
                } else {
                    a.dup_next = need;
                }
            }
        }
    }

    /// Connection `id` supplies nothing from now on (it closed or stalled): its chunks move.
    pub(super) fn release_work(&mut self, id: ConnId, cancel: bool) {
        if cancel {
            self.drop_requests(id, |_| true);
        } else if let Some(c) = self.conns.get_mut(id) {
            c.reqs.clear();
        }
        for i in 0..self.active.len() {
            self.unassign(i, id);
        }
    }

    /// Connections whose requests went unanswered too long lose their work for a while.
    pub(super) fn check_stalls(&mut self, now: Instant) {
        let timeout = self.config.stall_timeout;
        for i in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(i) else {
                continue;
            };
            let stalled = self.conns.get(id).is_some_and(|c| {
                c.link.phase == Phase::Open
                    && c.reqs.iter().any(|r| r.sent.is_some())
                    && now - c.link.last_rx >= timeout
            });
            self.expire_waiting(id);
            if !stalled {
                continue;
            }
            self.release_work(id, true);
            if let Some(c) = self.conns.get_mut(id) {
                c.pause_until = now + timeout;
                // Give it a fresh chance to show progress once the pause is over.
                c.link.last_rx = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The bit-sliced counters agree with 32 plain ones, and `least` finds the lanes
        /// holding the smallest of them.
        #[test]
        fn lane_counts_match_plain_counting(
            adds in proptest::collection::vec((any::<u32>(), any::<bool>()), 0..40),
            among in any::<u32>(),
        ) {
            let mut sliced = LaneCounts::default();
            let mut plain = [0u32; 32];
            for &(lanes, partial) in &adds {
                sliced.add(lanes, 0);
                if partial {
                    sliced.add(lanes, PARTIAL_SHIFT);
                }
                for (b, n) in plain.iter_mut().enumerate() {
                    if lanes & (1 << b) != 0 {
                        *n += 1 + if partial { 1 << PARTIAL_SHIFT } else { 0 };
                    }
                }
            }
            for (b, n) in plain.iter().enumerate() {
                prop_assert_eq!(sliced.lane(b as u32), *n);
            }
            let min = (0..32).filter(|b| among & (1 << b) != 0).map(|b| plain[b]).min();
            let want = (0..32)
                .filter(|&b| among & (1 << b) != 0 && Some(plain[b]) == min)
                .fold(0u32, |m, b| m | (1 << b));
            prop_assert_eq!(sliced.least(among), want);
        }
    }
}
