//! What must hold between any two inputs, checked by [`Peer::check_invariants`]: in debug
//! builds on entry to every input and at the end of every drain, and by the fuzz targets after
//! every step. Hand-kept counters are compared with the tables they count, and every
//! cross-reference (a chunk in flight, a candidate's connection, the tracker session) with
//! what it points at.

use super::*;

impl<const W: usize> Peer<'_, W> {
    /// Panics, naming the rule, if the peer's state is inconsistent. Cheap enough for every
    /// step of a fuzz run: one pass over the connections, files and chunks in flight.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let used = self.conns.iter().filter(|(_, c)| c.upload_slot).count();
        assert_eq!(
            self.slots_used, used,
            "slots_used counts the upload slots held"
        );
        assert!(
            self.slots_used <= self.config.upload_slots,
            "no more upload slots than configured"
        );
        for (i, a) in self.in_flight() {
            let Some(f) = self.file(a.slot) else {
                panic!("a chunk in flight belongs to a file");
            };
            assert!(f.busy.get(a.chunk), "a chunk in flight is marked busy");
            assert!(!f.have.get(a.chunk), "a held chunk is not in flight");
            assert!(
                a.frontier <= self.chunk_len(a.slot, a.chunk),
                "the frontier stays inside its chunk"
            );
            let block = self
                .file(a.slot)
                .and_then(|f| f.header())
                .map_or(1, |h| h.block_len());
            assert!(
                a.verified <= a.checking && a.checking <= a.frontier,
                "blocks are verified only once taken and asked about"
            );
            assert!(
                self.config.block_check == BlockCheck::Deferred || a.frontier - a.verified <= block,
                "inline, at most one block is taken and not yet verified"
            );
            assert!(
                a.verified.is_multiple_of(block),
                "the verified mark is on a block boundary"
            );
            assert!(
                a.frontier == 0 || a.leaves == Leaves::Checked,
                "no byte of a chunk is taken before its leaves are checked"
            );
            assert_eq!(
                self.active_index(a.slot, a.chunk),
                Some(i),
                "a chunk is in flight once"
            );
            for src in [a.owner, a.dup, a.receiving].into_iter().flatten() {
                assert!(self.conns.get(src).is_some(), "a chunk's sources are live");
            }
        }
        for (slot, f) in self.files.iter().enumerate() {
            let Some(f) = f else { continue };
            let in_flight = self
                .in_flight()
                .filter(|(_, a)| a.slot == slot as u16)
                .count();
            if f.fetching {
                assert_eq!(
                    f.busy.count() as usize,
                    in_flight,
                    "busy chunks are the chunks in flight"
                );
            } else {
                assert_eq!(in_flight, 0, "a shared file has nothing in flight");
                assert!(
                    self.config.super_seed || f.busy.count() == 0 || f.busy.is_full(),
                    "a shared file's busy chunks are its super-seeding offers, or all of them \
                     (a completed fetch)"
                );
            }
        }
        assert!(
            self.candidates.iter().flatten().count() <= usize::from(self.config.max_conns),
            "the candidate table stays within its bound"
        );
        assert!(self.hint_budget <= exchange::BUDGET_MAX);
        for cand in self.candidates.iter().flatten() {
            assert!(self.file(cand.slot).is_some(), "a candidate is for a file");
            if let Some(id) = cand.conn {
                assert!(
                    self.conns.get(id).is_some(),
                    "a candidate's connection is live"
                );
            }
        }
        for t in 0..MAX_TRACKERS {
            let live = self
                .conns
                .iter()
                .filter(|(_, c)| c.role == Role::Tracker(t as u8) && c.link.phase != Phase::Closed)
                .count();
            assert!(live <= 1, "one connection per tracker at a time");
            let s = &self.sessions[t];
            if let Some(id) = s.conn {
                assert!(
                    self.conns
                        .get(id)
                        .is_some_and(|c| c.role == Role::Tracker(t as u8)),
                    "a session's connection is that tracker's"
                );
            }
            assert!(
                s.registered.is_none() || s.conn.is_some(),
                "registered only with a tracker connection"
            );
            assert!(
                self.config.trackers.get(t).is_some() || s.conn.is_none(),
                "no connection to a tracker not configured"
            );
            assert_eq!(
                usize::from(self.publishes[t]),
                self.files
                    .iter()
                    .flatten()
                    .filter(|f| f.publish_pending & bit(t) != 0)
                    .count(),
                "every pending publish is counted"
            );
        }
        assert!(
            self.timers().get(Timer::Ping).is_some(),
            "the ping timer is always armed"
        );
        assert_eq!(
            usize::from(self.discards),
            self.files
                .iter()
                .flatten()
                .filter(|f| f.discard_hashes)
                .count(),
            "every pending hash discard is counted"
        );
        assert!(
            self.files
                .iter()
                .flatten()
                .all(|f| self.by_id.get(&f.id).is_some()),
            "every file is indexed by id"
        );
        assert_eq!(
            self.by_id.len(),
            self.files.iter().flatten().count(),
            "the id index names only files"
        );
    }
}
