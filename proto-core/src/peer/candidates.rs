//! Candidates and reputation: holders to dial (a random sample, dialled at random, with backoff
//! after failures), strikes against remotes that misbehave or send bad chunks, and bans.
//!
//! Candidates come from trackers (node id and address), from peer exchange and from the user
//! (an address only: who answers there is learnt from its handshake). A shared file keeps its
//! candidates: the trackers' are what it tells in exchange.

use super::*;

/// Who told us of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A tracker, with the node id it registered: who answers at the address is known.
    Node(NodeId),
    /// A peer, in exchange: only an address to try.
    Heard,
    /// The user ([`Peer::add_peer`]): tried for as long as the fetch runs.
    User,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) slot: u16,
    /// Its node id, when a tracker said it; `None` for an address heard from a peer or given
    /// by the user.
    pub(super) node: Option<NodeId>,
    pub(super) addr: SocketAddr,
    /// Given by the user: never forgotten, however often it fails.
    pub(super) kept: bool,
    pub(super) retry_at: Instant,
    pub(super) failures: u8,
    pub(super) conn: Option<ConnId>,
}

impl<const W: usize> Peer<'_, W> {
    pub(super) fn misbehaved(&mut self, id: ConnId, offence: Offence) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let addr = c.listen_addr();
        let node = c.link.hello.map(|h| h.node);
        self.event(PeerEvent::Misbehaved { addr, offence });
        if let Some(node) = node {
            self.strike(node, addr);
        }
        self.close_now(id);
    }

    /// One strike against a remote; at `ban_after` strikes it is banned.
    pub(super) fn strike(&mut self, node: NodeId, addr: SocketAddr) {
        let ban_after = self.config.ban_after;
        let entry = self
            .reputation
            .iter_mut()
            .find(|(n, a, _)| *n == node || *a == addr);
        let strikes = match entry {
            Some(e) => {
                e.2 = e.2.saturating_add(1);
                e.2
            }
            None => {
                if self.reputation.is_full() {
                    self.reputation.pop_front();
                }
                let _ = self.reputation.push_back((node, addr, 1));
                1
            }
        };
        if strikes == ban_after {
            self.event(PeerEvent::PeerBanned { node, addr });
            for i in 0..self.conns.capacity() {
                let Some(id) = self.conns.id_at(i) else {
                    continue;
                };
                let theirs = self.conns.get(id).is_some_and(|c| {
                    c.link.hello.is_some_and(|h| h.node == node) || c.listen_addr() == addr
                });
                if theirs {
                    self.close_now(id);
                }
            }
        }
    }

    pub(super) fn banned(&self, node: NodeId, addr: SocketAddr) -> bool {
        self.banned_at(Some(node), addr)
    }

    /// Open connections to holders of files being fetched, up to the per-file limit.
    ///
    /// Each new connection goes to a candidate chosen uniformly among those eligible: the
    /// tracker lists holders in the same order for everyone, and taking them in that order
    /// would pile every fetcher onto the first few.
    pub(super) fn connect_candidates(&mut self) {
        while !self.leaving {
            // Keep one slot for the tracker and one for a peer that connects to us.
            if self.conns.len() + 2 > usize::from(self.config.max_conns) {
                return;
            }
            let places = self.candidates.len();
            let eligible = (0..places).filter(|&i| self.can_dial(i)).count();
            if eligible == 0 {
                return;
            }
            let k = (self.rng.next_u64() % eligible as u64) as usize;
            let Some(i) = (0..places).filter(|&i| self.can_dial(i)).nth(k) else {
                return;
            };
            let Some(cand) = self.candidates[i] else {
                return;
            };
            let mut conn = Conn::new(
                Role::Peer { outgoing: true },
                cand.addr,
                Phase::Connecting { asked: false },
                self.now,
                &mut self.rng,
            );
            conn.file = Some(cand.slot);
            let Ok(id) = self.conns.insert(conn) else {
                return;
            };
            if let Some(c) = self.candidates[i].as_mut() {
                c.conn = Some(id);
            }
        }
    }

    /// Whether candidate `i` may be dialled now.
    pub(super) fn can_dial(&self, i: usize) -> bool {
        let Some(cand) = self.candidates[i] else {
            return false;
        };
        if cand.conn.is_some() || cand.retry_at > self.now {
            return false;
        }
        // A fetch without its manifest yet dials too: the remote is asked for it (see
        // `greet`), which is how a fetch that knows one peer and no tracker starts.
        let wanted = self
            .file(cand.slot)
            .is_some_and(|f| f.fetching && (f.header().is_none() || !f.have.is_full()));
        // A file's connections, both ways, are at most twice the limit: a peer few others
        // chose dials up to that, or it would download from fewer sources than the rest and
        // finish last; a peer many chose dials fewer, or none (it once dialled its 16 on top
        // of what reached it, and with 64 connections allowed the simulator's 100-peer swarm
        // ran at 0.778 / 0.828 / 0.802 against 0.836 / 0.835 / 0.834 without that).
        let ours = |c: &Conn<W>| c.file == Some(cand.slot) && !matches!(c.role, Role::Tracker(_));
        let all = self.conns.iter().filter(|(_, c)| ours(c)).count();
        let already = self.conns.iter().any(|(_, c)| {
            c.file == Some(cand.slot)
                && (c.link.hello.is_some_and(|h| Some(h.node) == cand.node)
                    || c.listen_addr() == cand.addr)
        });
        let max = self.config.max_conns_per_file;
        wanted && all < max.saturating_mul(2) && !already && !self.banned_at(cand.node, cand.addr)
    }

    /// Whether the remote with this node id (if known) or at this address is banned.
    pub(super) fn banned_at(&self, node: Option<NodeId>, addr: SocketAddr) -> bool {
        self.reputation
            .iter()
            .any(|(n, a, s)| (Some(*n) == node || *a == addr) && *s >= self.config.ban_after)
    }

    /// A holder of `slot`'s file to dial, at `addr`, as `source` told of it.
    pub(super) fn add_candidate(&mut self, slot: u16, source: Source, addr: SocketAddr) {
        let (node, kept) = match source {
            Source::Node(node) => (Some(node), false),
            Source::Heard => (None, false),
            Source::User => (None, true),
        };
        if node == Some(self.config.node) || addr.port() == 0 || self.banned_at(node, addr) {
            return;
        }
        // The same node (a tracker's word) or the same address: one entry. Only a tracker
        // moves a known node to a new address.
        let same = |c: &Candidate| {
            c.slot == slot && ((node.is_some() && c.node == node) || c.addr == addr)
        };
        if let Some(c) = self.candidates.iter_mut().flatten().find(|c| same(c)) {
            if node.is_some() {
                c.node = node;
                c.addr = addr;
            }
            c.kept |= kept;
            return;
        }
        // A full table keeps a random sample: the new holder replaces a random one we are not
        // connected to. Keeping the first holders seen would give every fetcher the same ones.
        // What a peer said replaces only what a peer said, so one that lies in exchange cannot
        // push out the trackers' holders; the user's peers stay.
        let limit = usize::from(self.config.max_conns);
        let free = match vacancy(&mut self.candidates, limit) {
            Some(i) => Some(i),
            None => {
                let idle = |i: &usize| {
                    self.candidates[*i].is_some_and(|c| {
                        c.conn.is_none() && !c.kept && (source != Source::Heard || c.node.is_none())
                    })
                };
                let n = (0..self.candidates.len()).filter(idle).count();
                let pick = self.rng.next_u64() as usize;
                (n > 0)
                    .then(|| (0..self.candidates.len()).filter(idle).nth(pick % n))
                    .flatten()
            }
        };
        if let Some(i) = free {
            self.candidates[i] = Some(Candidate {
                slot,
                node,
                addr,
                kept,
                retry_at: self.now,
                failures: 0,
                conn: None,
            });
        }
    }
}
