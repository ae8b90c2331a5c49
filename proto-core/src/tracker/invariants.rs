//! What must hold between any two inputs, checked by [`Tracker::check_invariants`]: in debug
//! builds on entry to every input and at the end of every drain, and by the fuzz target after
//! every step. Every check is O(n log n) in the size of the tables, so debug builds stay
//! usable with thousands of peers.

use super::*;

impl Tracker<'_> {
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
            .filter(|(_, f)| matches!(f, FileState::Discard))
            .count();
        assert_eq!(
            self.pending_actions,
            self.closed.len() + discards,
            "pending_actions counts closed connections and discarded files"
        );
        assert_eq!(
            closed,
            self.closed.len(),
            "the closed set names every closed connection"
        );
        assert_eq!(
            self.holders.len(),
            self.held.len(),
            "both holding indexes agree"
        );
        assert_eq!(self.holders.len(), self.bits.used(), "a bitmap per holding");
        for (&(slot, ix), h) in self.holders.iter() {
            assert!(
                self.held.get(&(ix, slot)).is_some(),
                "both holding indexes agree"
            );
            assert!(
                matches!(self.file(slot), Some(FileState::Listed(_))),
                "a holding is of a listed file"
            );
            let id = ConnId::from_parts(ix, h.generation);
            assert!(
                self.conns.get(id).is_some_and(|c| c.registered().is_some()),
                "a holding is a registered peer's"
            );
            let counted = (0..h.len)
                .filter(|&i| bitmap::get(self.bits.words(h.piece), h.len, i))
                .count();
            assert_eq!(counted, h.count as usize, "a holding counts its chunks");
        }
        let mut listed = 0;
        for (id, f) in self.files.iter() {
            let FileState::Listed(l) = f else { continue };
            listed += 1;
            let slot = id.index() as u16;
            assert_eq!(
                self.by_id.get(&l.file),
                Some(&slot),
                "a listed file is indexed"
            );
            let (mut holders, mut complete) = (0, 0);
            for (_, h) in self.holders.range((slot, 0)..=(slot, u16::MAX)) {
                holders += 1;
                complete += u32::from(h.is_full());
            }
            assert_eq!(
                (holders, complete),
                (l.holders, l.complete),
                "holder counts"
            );
            assert!(
                l.complete > 0,
                "a listed file has an online complete holder"
            );
        }
        assert_eq!(
            listed,
            self.by_id.len(),
            "the file index names only listed files"
        );
        let mut registered = 0;
        let mut in_handshake = 0;
        let mut strangers = 0;
        for (id, c) in self.conns.iter() {
            let ix = id.index() as u16;
            if let Phase::Handshake { deadline } = c.link.phase {
                in_handshake += 1;
                assert!(
                    self.handshakes.get(&(deadline, ix)).is_some(),
                    "a connection in its handshake has its deadline indexed"
                );
            }
            if !c.replies.is_empty() && !c.link.blocked && c.link.phase != Phase::Closed {
                assert!(
                    self.ready.get(&ix).is_some(),
                    "a connection with replies to send is in the ready set"
                );
            }
            if c.stranger {
                strangers += 1;
                assert!(
                    self.strangers.get(&(c.opened, ix)).is_some() && !c.listed,
                    "a stranger is indexed and unregistered"
                );
            }
            if c.link.phase == Phase::Closed {
                assert!(
                    self.closed.get(&id).is_some(),
                    "a closed connection is to be reported"
                );
            }
            if let Some(addr) = c.registered() {
                registered += 1;
                let node = c.link.hello.map(|h| h.node).unwrap_or_default();
                assert_eq!(
                    self.nodes.get(&node),
                    Some(&ix),
                    "a peer is indexed by node id"
                );
                if addr.port() != 0 {
                    assert_eq!(
                        self.addrs.get(&addr),
                        Some(&ix),
                        "a peer is indexed by address"
                    );
                }
            }
            if let Some(Target::New(slot)) = c.publish.as_ref().map(|p| p.target) {
                assert!(
                    matches!(self.file(slot), Some(FileState::Pending(_))),
                    "a new publish writes into a pending slot"
                );
            }
        }
        assert_eq!(
            in_handshake,
            self.handshakes.len(),
            "the deadline index names only connections in their handshake"
        );
        assert_eq!(
            strangers,
            self.strangers.len(),
            "the strangers index names only strangers"
        );
        assert_eq!(registered, self.registered, "registered peers are counted");
        assert_eq!(
            registered,
            self.nodes.len(),
            "the node index names only peers"
        );
        assert!(
            registered <= self.peer_capacity(),
            "no more registered peers than allowed"
        );
        let per_ip: usize = self.per_ip.iter().map(|(_, &n)| usize::from(n)).sum();
        assert_eq!(
            per_ip,
            self.conns.len(),
            "every connection is counted for its IP"
        );
        // The operator's views agree with the counters and indexes they are read from.
        assert_eq!(
            self.peers().count(),
            registered,
            "a view per registered peer"
        );
        let held: u32 = self.peers().map(|p| p.files).sum();
        assert_eq!(held as usize, self.held.len(), "peer views count holdings");
        let mut files = 0;
        for f in self.files() {
            files += 1;
            let (mut holders, mut complete) = (0, 0);
            for h in self.holders(&f.file) {
                holders += 1;
                complete += u32::from(h.chunks == h.of);
                assert!(h.chunks <= h.of, "a holder holds at most every chunk");
            }
            assert_eq!((holders, complete), (f.holders, f.complete), "holder views");
        }
        assert_eq!(files, listed, "a view per listed file");
    }
}
