//! The handshake: Hellos both ways, then (with a swarm key) the proofs of [`crate::auth`], and
//! the first requests of an opener once the connection is open. Every message of a connection
//! passes here first and goes on to the tracker session or the peer wire protocol.

use super::*;

impl<const W: usize> Peer<'_, W> {
    /// An opener's first requests on a connection: register with the tracker, or offer our
    /// bitfield to a peer; or, while the fetch has no manifest, ask the peer for it first
    /// (the bitfield follows once it is checked, see `finish_manifest`).
    pub(super) fn greet(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        match (c.role, c.file) {
            (Role::Tracker(_), _) if self.config.register => self.ctl(conn, Ctl::Register),
            (Role::Peer { outgoing: true }, Some(slot)) => match self.file(slot) {
                Some(f) if f.header().is_some() => self.ctl(conn, Ctl::Bitfield(slot)),
                Some(f) => {
                    let id = f.id;
                    self.ctl(conn, Ctl::GetManifest(id));
                }
                None => {}
            },
            _ => {}
        }
    }

    pub(super) fn on_message(&mut self, id: ConnId, msg: Message) {
        let banned = match (&msg, self.conns.get(id)) {
            (Message::Hello(h), Some(c)) => {
                self.banned(h.node, SocketAddr::new(c.link.remote.ip(), h.listen_port))
            }
            _ => false,
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let role = c.role;
        if c.link.hello.is_none() {
            let Message::Hello(h) = msg else {
                self.misbehaved(id, Offence::Unexpected);
                return;
            };
            if h.version != PROTOCOL_VERSION || h.node == self.config.node || banned {
                self.close_now(id);
                return;
            }
            c.link.hello = Some(h);
            let side = c.side();
            if side == Side::Acceptor {
                self.ctl(id, Ctl::Hello);
            }
            match (self.config.swarm_key.is_some(), side) {
                (false, _) => self.opened(id),
                // The opener proves first; the acceptor waits for that proof (see `auth`).
                (true, Side::Opener) => self.ctl(id, Ctl::Auth),
                (true, Side::Acceptor) => {}
            }
            return;
        }
        if matches!(c.link.phase, Phase::Handshake { .. }) {
            self.check_proof(id, msg);
            return;
        }
        match role {
            Role::Tracker(_) => self.on_tracker_message(id, msg),
            Role::Peer { .. } => self.on_peer_message(id, msg),
        }
    }

    /// The handshake is done: the connection can carry requests.
    pub(super) fn opened(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.link.phase = Phase::Open;
        let (role, tracker) = (c.role, c.link.remote);
        if self.config.swarm_key.is_some() {
            self.greet(id);
        }
        if let Role::Tracker(_) = role {
            self.event(PeerEvent::TrackerReady { tracker });
        }
    }

    /// With a swarm key, after the Hellos: the remote's proof, or the end of the connection.
    pub(super) fn check_proof(&mut self, id: ConnId, msg: Message) {
        let (Some(key), Some(c)) = (self.config.swarm_key, self.conns.get(id)) else {
            return;
        };
        let Some(theirs) = c.link.hello.map(|h| h.nonce) else {
            return;
        };
        let side = c.side();
        let addr = c.listen_addr();
        let role = c.role;
        match msg {
            Message::Auth { proof } if key.verify(side.other(), &theirs, &c.link.nonce, &proof) => {
                if side == Side::Acceptor {
                    self.ctl(id, Ctl::Auth);
                }
                self.opened(id);
            }
            // The acceptor refused our proof (or has no key).
            Message::Refused(reason) if side == Side::Opener => {
                match role {
                    Role::Tracker(_) => self.event(PeerEvent::TrackerRefused(reason)),
                    Role::Peer { .. } => self.event(PeerEvent::SwarmKeyMismatch {
                        addr,
                        by_remote: true,
                    }),
                }
                self.close_now(id);
            }
            _ => {
                if side == Side::Acceptor {
                    self.ctl(id, Ctl::Refused(Refusal::SwarmKey));
                }
                if let Role::Peer { .. } = role {
                    self.event(PeerEvent::SwarmKeyMismatch {
                        addr,
                        by_remote: false,
                    });
                }
                self.close_after_flush(id);
            }
        }
    }
}
