//! What must hold between any two inputs, checked by [`Tracker::check_invariants`]: in debug
//! builds on entry to every input and at the end of every drain, and by the fuzz target after
//! every step.

use super::*;

impl<const C: usize, const F: usize, const H: usize, const W: usize> Tracker<C, F, H, W> {
    /// Panics, naming the rule, if the tracker's state is inconsistent.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let closed = self
            .conns
            .iter()
            .filter(|(_, c)| c.link.phase == Phase::Closed)
            .count();
        let discards = self
            .files
            .iter()
            .filter(|f| matches!(f, FileState::Discard))
            .count();
        assert_eq!(
            self.pending_actions,
            closed + discards,
            "pending_actions counts closed connections and discarded files"
        );
        for (i, h) in self.holdings.iter().enumerate() {
            let Some(h) = h else { continue };
            assert!(
                matches!(self.files[h.slot as usize], FileState::Listed(..)),
                "a holding is of a listed file"
            );
            assert!(
                self.conns
                    .get(h.conn)
                    .is_some_and(|c| c.registered.is_some()),
                "a holding is a registered peer's"
            );
            assert!(
                !self.holdings[i + 1..]
                    .iter()
                    .flatten()
                    .any(|o| o.conn == h.conn && o.slot == h.slot),
                "one holding per peer and file"
            );
        }
        for (slot, f) in self.files.iter().enumerate() {
            if matches!(f, FileState::Listed(..)) {
                assert!(
                    self.holdings
                        .iter()
                        .flatten()
                        .any(|h| h.slot == slot as u16 && h.chunks.is_full()),
                    "a listed file has an online complete holder"
                );
            }
        }
        let registered = self
            .conns
            .iter()
            .filter(|(_, c)| c.registered.is_some())
            .count();
        assert!(
            registered <= self.config.max_peers.min(C),
            "no more registered peers than allowed"
        );
        for (_, c) in self.conns.iter() {
            if let Some(Target::New(slot)) = c.publish.as_ref().map(|p| p.target) {
                assert!(
                    matches!(self.files[slot as usize], FileState::Pending(_)),
                    "a new publish writes into a pending slot"
                );
            }
        }
    }
}
