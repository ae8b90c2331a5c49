//! The handshake's end and the active list: a connection opens (with a swarm key, once its
//! proof checks out), registers under the address it came from, is refused, and leaves with
//! everything it held.

use super::*;

impl Tracker<'_> {
    /// The handshake is done: the connection carries messages and its deadline is gone.
    pub(super) fn opened(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if let Phase::Handshake { deadline } = c.link.phase {
            self.handshakes.remove(&(deadline, id.index() as u16));
        }
        c.link.phase = Phase::Open;
        // Until it registers (a query-only connection never does).
        let since = c.link.last_rx;
        c.opened = since;
        c.stranger = self
            .strangers
            .insert((since, id.index() as u16), ())
            .is_ok();
        debug_assert!(c.stranger, "the strangers index has a place per connection");
    }

    /// The handshake's last step with a swarm key: the opener's proof, or a refusal.
    pub(super) fn check_proof(&mut self, id: ConnId, msg: Message) {
        let (Some(key), Some(c)) = (self.config.swarm_key, self.conns.get(id)) else {
            return;
        };
        let Some(theirs) = c.link.hello.map(|h| h.nonce) else {
            return;
        };
        let ours = c.link.nonce;
        let ok = match msg {
            Message::Auth { proof } => key.verify(Side::Opener, &theirs, &ours, &proof),
            _ => false,
        };
        if !ok {
            self.refuse(id, Refusal::SwarmKey);
            return;
        }
        self.opened(id);
        let proof = key.prove(Side::Acceptor, &ours, &theirs);
        self.reply(id, Reply::Auth(proof));
    }

    /// Answers `Refused(reason)`, reports it, and closes once that is sent.
    pub(super) fn refuse(&mut self, id: ConnId, reason: Refusal) {
        let Some(remote) = self.conns.get(id).map(|c| c.link.remote) else {
            return;
        };
        self.reply(id, Reply::Refused(reason));
        self.event(TrackerEvent::Refused { remote, reason });
        // A registered peer refused now (a proof where no key is configured) broke the
        // protocol; anyone else was never on the list.
        self.unregister(id, LeaveReason::Misbehaved);
        self.close_after_flush(id);
    }

    pub(super) fn register(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let remote = c.link.remote;
        let Some(hello) = c.link.hello else {
            return;
        };
        let addr = SocketAddr::new(remote.ip(), hello.listen_port);
        let refusal = if self.nodes.get(&hello.node).is_some() {
            Some(Refusal::DuplicateNode)
        } else if hello.listen_port != 0 && self.addrs.get(&addr).is_some() {
            Some(Refusal::DuplicateAddress)
        } else if self.registered >= self.peer_capacity() {
            Some(Refusal::TrackerFull)
        } else {
            let ix = id.index() as u16;
            match self.nodes.insert(hello.node, ix) {
                Ok(_) if hello.listen_port == 0 => None,
                Ok(_) => match self.addrs.insert(addr, ix) {
                    Ok(_) => None,
                    Err(_) => {
                        self.nodes.remove(&hello.node);
                        Some(Refusal::TrackerFull)
                    }
                },
                Err(_) => Some(Refusal::TrackerFull),
            }
        };
        if let Some(reason) = refusal {
            self.reply(id, Reply::Refused(reason));
            self.event(TrackerEvent::Refused { remote, reason });
            self.close_after_flush(id);
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.listed = true;
            if c.stranger {
                c.stranger = false;
                self.strangers.remove(&(c.opened, id.index() as u16));
            }
        }
        self.registered += 1;
        self.reply(id, Reply::Registered(addr));
        self.event(TrackerEvent::PeerJoined {
            node: hello.node,
            addr,
        });
    }

    /// Removes `id` from the active list and drops what it held; no-op if not registered.
    pub(super) fn unregister(&mut self, id: ConnId, reason: LeaveReason) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(addr) = c.registered() else {
            return;
        };
        c.listed = false;
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        let ix = id.index() as u16;
        if self.nodes.get(&node) == Some(&ix) {
            self.nodes.remove(&node);
        }
        if self.addrs.get(&addr) == Some(&ix) {
            self.addrs.remove(&addr);
        }
        self.registered -= 1;
        self.event(TrackerEvent::PeerLeft { node, addr, reason });
        while let Some(&(_, slot)) = self
            .held
            .range((ix, 0)..=(ix, u16::MAX))
            .next()
            .map(|(k, _)| k)
        {
            self.drop_holding(slot, ix);
            self.delist_if_incomplete(slot);
        }
    }
}
