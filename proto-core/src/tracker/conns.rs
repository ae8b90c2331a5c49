//! The tracker's connections: what each holds, and their one lifecycle: woken for output,
//! closed (at once or after its replies), reported, freed, and evicted for a newcomer by the
//! admission rule.

use super::*;

pub(crate) struct Conn {
    pub(super) link: Link,
    /// On the active list: its recorded address is [`Conn::registered`].
    pub(super) listed: bool,
    /// When its handshake finished: its key in the strangers index while `stranger`.
    pub(super) opened: Instant,
    /// Finished its handshake and has not registered: in the strangers index.
    pub(super) stranger: bool,
    pub(super) replies: Deque<Reply, REPLY_QUEUE>,
    pub(super) publish: Option<PublishRx>,
    /// Its transfer totals and rates, from its reports.
    pub(super) reported: view::Reported,
}

impl Conn {
    /// The address recorded for it, while registered: the IP its connection came from with
    /// the listen port its `Hello` announced.
    pub(super) fn registered(&self) -> Option<SocketAddr> {
        let hello = self.link.hello.filter(|_| self.listed)?;
        Some(SocketAddr::new(self.link.remote.ip(), hello.listen_port))
    }
}

impl HasLink for Conn {
    fn link(&self) -> &Link {
        &self.link
    }
    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Tracker<'_> {
    /// `id` may have a frame to send: it joins the connections the transmit visits.
    pub(super) fn wake(&mut self, id: ConnId) {
        if self.ready.insert(id.index() as u16, ()).is_err() {
            // The ready set has a place per connection (memory checked at construction).
            debug_assert!(false, "ready set full");
        }
    }

    /// Forgets `conn` at once: its socket is gone (or going, for an eviction).
    pub(super) fn drop_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if c.link.phase == Phase::Closed {
            self.pending_actions -= 1;
            self.closed.remove(&conn);
        }
        self.unregister(conn, LeaveReason::Disconnected);
        self.abandon_publish(conn);
        self.free(conn);
    }

    /// Close without sending anything more.
    pub(super) fn close_now(&mut self, id: ConnId) {
        self.close(id, false);
    }

    /// Close once the queued replies are sent.
    pub(super) fn close_after_flush(&mut self, id: ConnId) {
        self.close(id, true);
    }

    /// The one way the tracker ends a connection. A registered peer leaves the active list
    /// here if its closer did not already say why (and what it held goes with it), so no
    /// holding outlives its connection; a publish in progress is abandoned; a connection is
    /// counted for its `Close` action once.
    pub(super) fn close(&mut self, id: ConnId, flush: bool) {
        self.unregister(id, LeaveReason::Disconnected);
        self.abandon_publish(id);
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        match c.link.phase {
            Phase::Closed => return,
            Phase::Closing if flush => return,
            Phase::Handshake { deadline } => {
                self.handshakes.remove(&(deadline, id.index() as u16));
            }
            _ => {}
        }
        if flush && !c.replies.is_empty() {
            c.link.phase = Phase::Closing;
        } else {
            self.closed_now(id);
        }
    }

    /// `id` is closed: its close is to be reported by `poll_output`.
    pub(super) fn closed_now(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.link.phase = Phase::Closed;
        c.replies.clear();
        self.pending_actions += 1;
        if self.closed.insert(id, ()).is_err() {
            debug_assert!(false, "closed set full");
        }
    }

    /// Drops `id`'s entries in the per-connection indexes.
    pub(super) fn forget(&mut self, id: ConnId) {
        let ix = id.index() as u16;
        self.ready.remove(&ix);
        let Some(c) = self.conns.get(id) else {
            return;
        };
        if let Phase::Handshake { deadline } = c.link.phase {
            self.handshakes.remove(&(deadline, ix));
        }
        if c.stranger {
            self.strangers.remove(&(c.opened, ix));
        }
        let ip = c.link.remote.ip();
        match self.per_ip.get(&ip).copied() {
            Some(n) if n > 1 => {
                let _ = self.per_ip.insert(ip, n - 1);
            }
            Some(_) => {
                self.per_ip.remove(&ip);
            }
            None => {}
        }
    }

    /// Frees `id`'s slot; everything it was part of is already undone.
    pub(super) fn free(&mut self, id: ConnId) {
        self.forget(id);
        self.conns.remove(id);
    }

    /// The table is full and a connection arrives: the one that has done least makes room.
    /// First the connection longest in its handshake (it has not said `Hello`, or not proved
    /// the swarm key), then the one that finished its handshake longest ago without
    /// registering. A registered peer is never evicted: with every slot registered the
    /// newcomer is refused. Both orders are index lookups, O(log n).
    pub(super) fn evict_for_newcomer(&mut self) -> Result<ConnId, TableFull> {
        let ix = match self.handshakes.iter().next() {
            Some((&(_, ix), _)) => ix,
            None => match self.strangers.iter().next() {
                Some((&(_, ix), _)) => ix,
                None => return Err(TableFull),
            },
        };
        let victim = self.conns.id_at(usize::from(ix)).ok_or(TableFull)?;
        debug!("{:?} evicted for a newcomer", victim);
        self.drop_conn(victim);
        self.event(TrackerEvent::Overloaded(Table::Connections));
        Ok(victim)
    }
}
