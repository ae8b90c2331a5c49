//! Peer exchange: connected peers tell each other where else the peers of the same file are,
//! so a swarm keeps finding itself while every tracker is down, and a fetch that knows one peer
//! reaches the rest.
//!
//! What is told is a random sample of at most [`MAX_EXCHANGE`] of the peers of the file whose
//! node the sender knows: those it is connected to (at the address it sees each at: the IP its
//! connection comes from, with the listen port its handshake announced), then those a tracker
//! named (a peer keeps them after its fetch completes, for this). It goes when a connection
//! starts (the bitfields have crossed) and every [`SEND_ROUNDS`] ping rounds after.
//!
//! What is heard is a hint, never trusted beyond "try this address": it becomes a candidate
//! without a node id (the handshake says who answers), it never replaces a candidate a tracker
//! gave, and it is forgotten after two failed dials. Only one message per connection is taken
//! every [`TAKE_ROUNDS`] ping rounds, and all connections together draw on one budget of
//! [`BUDGET_MAX`] addresses refilled by [`MAX_EXCHANGE`] each ping round (a liar that
//! reconnects gets no fresh allowance); the rest is read and ignored. So a peer that lies, with
//! as many connections as it likes, costs its victim one candidate table (bounded by
//! [`PeerConfig::max_conns`]) and at most two dials per address taken: at the default 5 s
//! ping, 32 addresses at once and 1.6 a second after.

use super::*;
use crate::wire::MAX_EXCHANGE;

/// Ping rounds between two samples sent on one connection: a minute at the default 5 s.
const SEND_ROUNDS: u8 = 12;
/// Ping rounds before the next sample from one connection is taken: half a minute.
const TAKE_ROUNDS: u8 = 6;
/// The most addresses heard in exchange that can be taken at once (all connections together).
pub(super) const BUDGET_MAX: u16 = 4 * MAX_EXCHANGE as u16;

impl<const W: usize> Peer<'_, W> {
    /// A connection's bitfields have crossed: tell it of the other peers of its file.
    pub(super) fn start_exchange(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            if c.ctl.push_back(Ctl::Peers).is_ok() {
                c.pex_out = 0;
            }
        }
    }

    /// One ping round on connection `id`: count the rounds, and send a new sample when due.
    pub(super) fn exchange_round(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.role.is_peer() || !c.bitfield_in {
            return;
        }
        c.pex_in = c.pex_in.saturating_add(1);
        c.pex_out = c.pex_out.saturating_add(1);
        if c.pex_out >= SEND_ROUNDS && c.ctl.push_back(Ctl::Peers).is_ok() {
            c.pex_out = 0;
        }
    }

    /// The sample for connection `id`: the peers of its file it has open connections to
    /// (those whose remote accepts connections), then candidates whose node a tracker named,
    /// each from a random place on; never the remote itself, nor an address only heard of
    /// (we do not pass on what we have not seen answer).
    pub(super) fn peers_sample(&mut self, id: ConnId) -> Option<Message> {
        let c = self.conns.get(id)?;
        let (slot, remote) = (c.file?, c.listen_addr());
        let file = self.file(slot)?.id;
        let mut addrs: Vec<SocketAddr, MAX_EXCHANGE> = Vec::new();
        let places = self.conns.capacity();
        let start = self.rng.next_u64() as usize;
        for k in 0..places {
            let Some(c) = self
                .conns
                .id_at((start + k) % places)
                .and_then(|o| self.conns.get(o))
            else {
                continue;
            };
            let listens = c.link.hello.is_some_and(|h| h.listen_port != 0);
            let told = c.file == Some(slot) && c.bitfield_in && c.is_open() && listens;
            if told && c.listen_addr() != remote && addrs.push(c.listen_addr()).is_err() {
                break;
            }
        }
        let places = self.candidates.len();
        for k in 0..places {
            let Some(c) = self.candidates[(start + k) % places] else {
                continue;
            };
            let told = c.slot == slot && c.node.is_some() && c.addr != remote;
            let fresh = !addrs.contains(&c.addr) && !self.banned_at(c.node, c.addr);
            if told && fresh && addrs.push(c.addr).is_err() {
                break;
            }
        }
        Some(Message::Peers { file, addrs })
    }

    /// Connection `id` told us of other peers of `file`.
    pub(super) fn on_peers(&mut self, id: ConnId, file: FileId, addrs: &[SocketAddr]) {
        let Some(slot) = self.conn_slot(id, &file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.pex_in < TAKE_ROUNDS {
            return;
        }
        c.pex_in = 0;
        let wanted = self
            .file(slot)
            .is_some_and(|f| f.fetching && !f.have.is_full());
        if !wanted {
            return;
        }
        let take = addrs.len().min(usize::from(self.hint_budget));
        self.hint_budget -= take as u16;
        for &addr in &addrs[..take] {
            self.add_candidate(slot, Source::Heard, addr);
        }
    }

    /// A ping round refills the budget of addresses taken from exchange.
    pub(super) fn refill_hints(&mut self) {
        self.hint_budget = (self.hint_budget + MAX_EXCHANGE as u16).min(BUDGET_MAX);
    }
}
