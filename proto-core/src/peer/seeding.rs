//! What a seeder offers: super-seeding, so the seeder sends every chunk once before any twice.
//!
//! A swarm with one seeder can finish no sooner than the seeder has uploaded the file once:
//! each byte it sends twice, while some chunk has not left it yet, delays the swarm by as
//! much. Downloaders that see a complete bitfield ask the seeder for whatever is rarest to
//! them, and with dozens of connections each, a chunk the seeder just sent to one peer still
//! looks seeder-only to the many peers not connected to that one: the simulator's seeder
//! re-sent 12% of what it uploaded at 20 peers and 25% at 100 (BENCHMARKS.md, "Where the
//! seeder's upload goes").
//!
//! So a peer sharing a file whole (not one it fetched) does what BitTorrent's super-seeding does:
//! it announces an empty bitfield, then offers each downloader [`OFFERED_CHUNKS`] chunks no one has
//! been offered yet (a `Have` each), and offers the next as it serves the previous. A downloader
//! fetches what it is offered and passes it on (it serves blocks as it verifies them), and gets the
//! rest from the swarm. Once no offer is outstanding (each was announced back by the downloader it
//! went to, or that downloader left) and nothing more can be offered (every chunk was, or each
//! downloader holds all the others), the seeder announces everything to every connection and serves
//! as any complete peer: the last chunks are not left waiting. A chunk offered to a downloader that
//! left before announcing it is offered again to another (the one copy that left us may have gone
//! no further). Until then a downloader with nothing left to be offered gets the rest from the
//! swarm: telling it everything earlier had it ask the seeder again for chunks whose first copy was
//! still going out, which delayed the last first copies (BENCHMARKS.md, "Super-seeding").
//!
//! The file's `busy` bitmap, which counts chunks in flight while fetching and is unused for a
//! file shared whole, holds the chunks offered so far; a table by connection index, on the
//! heap, holds what each connection was offered and has not announced yet ([`Offer`]). A peer
//! in fixed memory has no such table and does not super-seed: a device seldom seeds a big
//! swarm first, and its RAM is spoken for (the firmware has 8 bytes to spare). A fetch that
//! completes offers nothing either: its chunks are out in the swarm already (it marks them
//! all offered).

use super::*;

/// Chunks offered to one downloader at a time. Measured in the simulator (20 peers, 64 MiB in
/// 256 KiB chunks, seeds 1-3): one 0.870 / 0.855 / 0.854, two 0.915 / 0.884 / 0.883, three
/// 0.875 / 0.868 / 0.875, four 0.864 / 0.865 / 0.865 (without super-seeding 0.852 / 0.882 /
/// 0.878). One leaves a downloader's pipeline empty while it waits for the next offer; more
/// than two spread the seeder's upload over more chunks at once, each reaching the swarm later.
pub(super) const OFFERED_CHUNKS: usize = 2;

/// Connections a file needs (this one included) before a new one is super-seeded: one or two
/// downloaders ask the seeder for everything anyway, and offering them chunk by chunk would
/// only slow them down (a single `shoal get` would wait for each offer).
pub(super) const SUPER_SEED_MIN_CONNS: usize = 3;

/// What one connection was offered and has not announced (by `Have`) yet: the next offer
/// waits for room here, so a downloader gets a new chunk as it finishes one, and one that got
/// its offer elsewhere announces it all the same.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub(super) struct Offer {
    /// The connection these offers are for (a reused index starts afresh).
    conn: Option<ConnId>,
    chunks: Vec<u32, OFFERED_CHUNKS>,
    /// Its bitfield was an empty one, and it is offered chunks (until it is told everything).
    offering: bool,
    /// The last offer found nothing it lacks that was not offered already.
    exhausted: bool,
}

impl<const W: usize> Peer<'_, W> {
    /// Whether `slot` is a file this peer may super-seed: shared whole (not fetched), with
    /// super-seeding on.
    fn seeds_whole(&self, slot: u16) -> bool {
        self.config.super_seed
            && self
                .file(slot)
                .is_some_and(|f| !f.fetching && f.header().is_some())
    }

    /// Whether `slot` is being super-seeded: shared whole, and some chunk not offered yet.
    pub(super) fn super_seeding(&self, slot: u16) -> bool {
        self.seeds_whole(slot) && self.file(slot).is_some_and(|f| !f.busy.is_full())
    }

    /// Our bitfield is about to go out on `id`: whether it is an empty one, with chunks
    /// offered after it (the file is super-seeded and has enough connections), decided here
    /// for the connection's life.
    pub(super) fn start_offering(&mut self, id: ConnId, slot: u16) -> bool {
        let offering = self.super_seeding(slot) && self.file_conns(slot) >= SUPER_SEED_MIN_CONNS;
        match self.offers_of(id) {
            Some(o) => {
                o.offering = offering;
                offering
            }
            None => false,
        }
    }

    /// Whether connection `id` is offered chunks (its bitfield was empty).
    pub(super) fn offering(&self, id: ConnId) -> bool {
        #[cfg(feature = "alloc")]
        return self
            .offers
            .get(id.index())
            .is_some_and(|o| o.conn == Some(id) && o.offering);
        #[cfg(not(feature = "alloc"))]
        {
            let _ = id;
            false
        }
    }

    /// The offers of connection `id`, made (growing the table) if needed.
    #[cfg(feature = "alloc")]
    fn offers_of(&mut self, id: ConnId) -> Option<&mut Offer> {
        let i = id.index();
        if self.offers.len() <= i {
            self.offers.resize(i + 1, Offer::default());
        }
        let o = self.offers.get_mut(i)?;
        if o.conn != Some(id) {
            *o = Offer {
                conn: Some(id),
                chunks: Vec::new(),
                offering: false,
                exhausted: false,
            };
        }
        Some(o)
    }

    /// Without a heap there are no offers (and no super-seeding: see the module docs).
    #[cfg(not(feature = "alloc"))]
    fn offers_of(&mut self, _: ConnId) -> Option<&mut Offer> {
        None
    }

    /// The remote on `id` announced `ranges` of `slot`'s file: offers among them are taken.
    pub(super) fn offers_taken(&mut self, id: ConnId, slot: u16, ranges: &[ChunkRange]) {
        #[cfg(feature = "alloc")]
        if let Some(o) = self
            .offers
            .get_mut(id.index())
            .filter(|o| o.conn == Some(id) && !o.chunks.is_empty())
        {
            o.chunks
                .retain(|c| !ranges.iter().any(|r| (r.start..r.end).contains(c)));
            if o.chunks.is_empty() {
                self.end_offers(slot);
            }
        }
        #[cfg(not(feature = "alloc"))]
        let _ = (id, slot, ranges);
    }

    /// Connection `id` ended: the chunks it was offered and had not announced go back to be
    /// offered to another downloader (else the one copy that left the seeder, perhaps half of
    /// it, was all the swarm would see of them until super-seeding ends).
    pub(super) fn withdraw_offers(&mut self, id: ConnId, slot: u16) {
        #[cfg(feature = "alloc")]
        {
            let Some(o) = self
                .offers
                .get_mut(id.index())
                .filter(|o| o.conn == Some(id))
            else {
                return;
            };
            let chunks = core::mem::take(&mut o.chunks);
            if let Some(f) = self.file_mut(slot) {
                for chunk in chunks {
                    f.busy.clear(chunk);
                }
            }
        }
        #[cfg(not(feature = "alloc"))]
        let _ = (id, slot);
    }

    /// Tells every connection of `slot` everything once super-seeding has nothing left to do
    /// there (see the module docs): no live connection holds an offer it has not announced,
    /// and every chunk was offered or every offered-to connection holds all the others.
    pub(super) fn end_offers(&mut self, slot: u16) {
        #[cfg(feature = "alloc")]
        {
            if !self.seeds_whole(slot) {
                return;
            }
            let all_offered = !self.super_seeding(slot);
            let (mut offering, mut waiting) = (false, false);
            for o in &self.offers {
                let live = o.conn.is_some_and(|id| {
                    self.conns
                        .get(id)
                        .is_some_and(|c| c.file == Some(slot) && c.is_open())
                });
                if !live || !o.offering {
                    continue;
                }
                offering = true;
                waiting |= !o.chunks.is_empty() || !(all_offered || o.exhausted);
            }
            if offering && !waiting {
                self.announce_all(slot);
            }
        }
        #[cfg(not(feature = "alloc"))]
        let _ = slot;
    }

    /// A `Have` offering connection `id` its next chunk, if the file is super-seeded and the
    /// connection has room for another offer.
    pub(super) fn offer(&mut self, id: ConnId, slot: u16) -> Option<Message> {
        if !self.offering(id) || !self.super_seeding(slot) {
            return None;
        }
        let c = self.conns.get(id)?;
        // After our bitfield (an empty one), while there is room for an offer.
        if !c.bitfield_out || c.bitfield_body.is_some() || self.offers_of(id)?.chunks.is_full() {
            return None;
        }
        let draw = self.rng.next_u64();
        let f = self.file(slot)?;
        let c = self.conns.get(id)?;
        // A chunk not offered yet, that the remote does not hold (another seeder's), the
        // first at or after a random one, wrapping: downloaders get different chunks in no
        // fixed order. A file with no chunks is never super-seeded (its bitmap is full).
        let len = f.busy.len();
        let start = (draw % u64::from(len)) as u32;
        let free = |w: u32| !f.busy.word(w as usize) & !c.remote_has.word(w as usize);
        let words = len.div_ceil(32);
        let chunk = (0..=words).find_map(|k| {
            let w = (start / 32 + k) % words;
            let mut bits = free(w);
            if k == 0 {
                bits &= u32::MAX << (start % 32);
            }
            let chunk = w * 32 + bits.trailing_zeros();
            (bits != 0 && chunk < len).then_some(chunk)
        });
        let Some(chunk) = chunk else {
            // The remote holds every chunk not offered yet (another seeder gave them): it gets
            // the rest from the swarm, until `end_offers` tells it everything.
            let o = self.offers_of(id)?;
            if !o.exhausted {
                o.exhausted = true;
                self.end_offers(slot);
            }
            return None;
        };
        let file = f.id;
        if let Some(f) = self.file_mut(slot) {
            f.busy.set(chunk);
        }
        // Room checked above.
        let _ = self.offers_of(id)?.chunks.push(chunk);
        let mut ranges = Vec::new();
        let _ = ranges.push(ChunkRange {
            start: chunk,
            end: chunk + 1,
        });
        Some(Message::Have { file, ranges })
    }

    /// Super-seeding is over: tell every connection of `slot` that we hold the whole file, as
    /// a complete peer's bitfield would have.
    #[cfg(feature = "alloc")]
    fn announce_all(&mut self, slot: u16) {
        for i in 0..self.conns.capacity() {
            if let Some(id) = self.conn_for(i, slot) {
                self.tell_all(id, slot);
            }
        }
    }

    /// Tells connection `id`, if it is offered chunks, every chunk of `slot` we hold; it is
    /// offered nothing more.
    #[cfg(feature = "alloc")]
    fn tell_all(&mut self, id: ConnId, slot: u16) {
        if !self.offering(id) {
            return;
        }
        if let Some(o) = self.offers_of(id) {
            o.offering = false;
        }
        let Some(end) = self.file(slot).map(|f| f.log.end()) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(id).filter(|c| c.bitfield_out) {
            c.have = HaveCursor {
                seq: end,
                full_from: Some(0),
            };
        }
    }
}
