//! The tracker sessions: one connection to each configured tracker, reconnected with backoff;
//! registration, announcing every file on a fresh session, and the trackers' answers (peer
//! lists, listings, holders, manifests).
//!
//! Trackers need no coordination: each keeps soft state that its peers re-tell it after a
//! restart, so a peer simply tells every tracker it is registered with everything it holds,
//! and asks every one of them for holders. Which trackers: `trackers_per_peer` of them, by its
//! own ranking (see [`PeerConfig::trackers_per_peer`]), the next standing in for one that is
//! down. The user's own queries (list, locate) go to the first tracker that is up.

use super::*;

/// One tracker's connection and what it said: one per configured tracker, in the same place.
#[derive(Clone, Copy)]
pub(super) struct TrackerSession {
    /// The connection, while there is one (open or not).
    pub(super) conn: Option<ConnId>,
    /// When to reconnect after losing it.
    pub(super) retry_at: Instant,
    /// The delay before the next reconnection; doubled on each failure.
    pub(super) backoff: Duration,
    /// The address this tracker recorded for us, while registered.
    pub(super) registered: Option<SocketAddr>,
    /// The last attempt failed, or the connection was lost, and it has not registered us
    /// since: the next tracker in our ranking stands in for it.
    pub(super) down: bool,
}

/// What the user asked the trackers, and the answers kept for the user.
pub(super) struct Queries<'a> {
    /// The last peer list asked for (as many entries as there are places; the event says
    /// how many the tracker has), filled as it arrives: the first `peer_list_len` places.
    pub(super) peer_list: ManagedSlice<'a, Option<PeerEntry>>,
    pub(super) peer_list_len: usize,
    /// The user asked for the file list: its answers are events.
    pub(super) user_list: bool,
    /// A user's locate of a file this peer neither shares nor fetches.
    pub(super) user_locates_untracked: Option<FileId>,
}

/// The most entries of a peer list kept on a host (a device keeps as many as its memory has).
const PEER_LIST_MAX: usize = 1024;

impl TrackerSession {
    pub(super) fn new(now: Instant, backoff: Duration) -> Self {
        TrackerSession {
            conn: None,
            retry_at: now,
            backoff,
            registered: None,
            down: false,
        }
    }
}

impl<'a> Queries<'a> {
    pub(super) fn new(peer_list: ManagedSlice<'a, Option<PeerEntry>>) -> Self {
        Queries {
            peer_list,
            peer_list_len: 0,
            user_list: false,
            user_locates_untracked: None,
        }
    }
}

/// The bit of tracker `t` in a file's per-tracker flags.
pub(super) const fn bit(t: usize) -> u8 {
    1 << t
}

impl<const W: usize> Peer<'_, W> {
    /// The trackers to hold connections to, in our ranking: the first ones, until
    /// `trackers_per_peer` of them are not down (see [`PeerConfig::trackers_per_peer`]).
    pub(super) fn wanted_trackers(&self) -> Vec<usize, MAX_TRACKERS> {
        let k = usize::from(self.config.trackers_per_peer.max(1));
        let mut up = 0;
        let mut wanted = Vec::new();
        for &t in &self.tracker_order {
            if up >= k || self.leaving {
                break;
            }
            let t = usize::from(t);
            let _ = wanted.push(t);
            up += usize::from(!self.sessions[t].down);
        }
        wanted
    }

    /// Connects to every wanted tracker that has no connection and is due a retry.
    pub(super) fn connect_trackers(&mut self, now: Instant) {
        for t in self.wanted_trackers() {
            let Some(addr) = self.config.trackers.get(t) else {
                continue;
            };
            let s = &self.sessions[t];
            if s.conn.is_some() || s.retry_at > now {
                continue;
            }
            let conn = Conn::new(
                Role::Tracker(t as u8),
                addr,
                Phase::Connecting { asked: false },
                now,
                &mut self.rng,
            );
            match self.conns.insert(conn) {
                Ok(id) => self.sessions[t].conn = Some(id),
                Err(TableFull) => self.sessions[t].retry_at = now + self.config.reconnect_min,
            }
        }
    }

    /// A tracker connection that is open, for the user's queries: the first one up.
    pub(super) fn tracker_open(&self) -> Option<ConnId> {
        (0..MAX_TRACKERS).find_map(|t| self.tracker_conn(t))
    }

    /// Tracker `t`'s connection, if it is open.
    pub(super) fn tracker_conn(&self, t: usize) -> Option<ConnId> {
        self.sessions[t]
            .conn
            .filter(|&id| self.conns.get(id).is_some_and(Conn::is_open))
    }

    /// Tracker `t`'s connection, if we are registered there.
    pub(super) fn tracker_registered(&self, t: usize) -> Option<ConnId> {
        self.sessions[t].registered?;
        self.tracker_conn(t)
    }

    /// The connections of the trackers we are registered with.
    pub(super) fn registered_trackers(&self) -> Vec<ConnId, MAX_TRACKERS> {
        (0..MAX_TRACKERS)
            .filter_map(|t| self.tracker_registered(t))
            .collect()
    }

    /// Which tracker connection `id` is, if it is one.
    pub(super) fn tracker_of(&self, id: ConnId) -> Option<usize> {
        match self.conns.get(id)?.role {
            Role::Tracker(t) => Some(usize::from(t)),
            Role::Peer { .. } => None,
        }
    }

    /// Tells a fresh session with tracker `t` about `slot`: publish it if whole, else resend
    /// what is held and ask for what is missing.
    pub(super) fn announce_file(&mut self, t: usize, slot: u16) {
        let Some(tc) = self.tracker_conn(t) else {
            return;
        };
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        f.tracker_knows |= bit(t);
        f.tracker[t] = HaveCursor {
            seq: f.log.end(),
            full_from: None,
        };
        match &f.manifest {
            ManifestState::Known(_) if f.have.is_full() => self.want_publish(t, slot),
            ManifestState::Known(_) => {
                f.tracker[t].full_from = (f.have.count() > 0).then_some(0);
                // Join the swarm even with nothing yet, so other fetchers find us.
                self.ctl(tc, Ctl::Join(slot));
            }
            // One tracker at a time is asked for a manifest (it is the whole hash list);
            // another is asked if that one does not know it (see `file_tick`).
            ManifestState::Wanted { .. } => self.ask_manifest(slot, tc),
        }
    }

    /// Asks connection `conn` for `slot`'s manifest, unless it was asked for just now.
    pub(super) fn ask_manifest(&mut self, slot: u16, conn: ConnId) {
        let now = self.now;
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        let ManifestState::Wanted { asked } = f.manifest else {
            return;
        };
        if asked.is_none_or(|at| now - at >= FIRST_LOCATE_DELAY) {
            f.manifest = ManifestState::Wanted { asked: Some(now) };
            let id = f.id;
            self.ctl(conn, Ctl::GetManifest(id));
        }
    }

    /// `slot` is to be published (again) to tracker `t`: sent by that connection when it has
    /// room, so sharing a thousand files never overflows a queue.
    pub(super) fn want_publish(&mut self, t: usize, slot: u16) {
        if let Some(f) = self.file_mut(slot) {
            if f.publish_pending & bit(t) == 0 {
                f.publish_pending |= bit(t);
                self.publishes[t] += 1;
            }
        }
    }

    pub(super) fn on_tracker_message(&mut self, id: ConnId, msg: Message) {
        let Some(t) = self.tracker_of(id) else {
            return;
        };
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Report(n)),
            Message::Pong(_) => {}
            Message::Registered { addr } => {
                self.sessions[t].registered = Some(addr);
                self.sessions[t].down = false;
                self.sessions[t].backoff = self.config.reconnect_min;
                let tracker = self.conns.get(id).map_or(addr, |c| c.link.remote);
                self.event(PeerEvent::Registered { addr, tracker });
                for slot in 0..self.files.len() as u16 {
                    self.announce_file(t, slot);
                }
            }
            Message::Refused(reason) => {
                self.event(PeerEvent::TrackerRefused(reason));
                self.close_now(id);
            }
            Message::PeerListItem(p) => {
                // A list longer than there are places keeps its first entries; the end's
                // event tells the whole count.
                let s = &mut self.queries;
                if let Some(place) = vacancy(&mut s.peer_list, PEER_LIST_MAX) {
                    s.peer_list[place] = Some(p);
                    s.peer_list_len = s.peer_list_len.max(place + 1);
                }
            }
            Message::PeerListEnd { count } => self.event(PeerEvent::PeerList { count }),
            Message::Published { file } => self.event(PeerEvent::Published { file }),
            Message::PublishRefused { file, reason } => {
                self.event(PeerEvent::PublishRefused { file, reason })
            }
            Message::FileItem(e) if self.queries.user_list => self.event(PeerEvent::FileListed(e)),
            Message::FileListEnd { count } if self.queries.user_list => {
                self.queries.user_list = false;
                self.event(PeerEvent::FileListEnd { count });
            }
            Message::FileItem(_) | Message::FileListEnd { .. } => {}
            Message::HolderItem(item) => {
                if let Some(slot) = self.slot_of(&item.file) {
                    if self.file(slot).is_some_and(|f| f.fetching) {
                        self.add_candidate(slot, Source::Node(item.peer.node), item.peer.addr);
                    }
                    if self.file(slot).is_some_and(|f| f.user_locate) {
                        self.event(PeerEvent::Holder(item));
                    }
                } else if self.queries.user_locates_untracked == Some(item.file) {
                    self.event(PeerEvent::Holder(item));
                }
            }
            Message::LocateEnd { file, holders } => {
                if let Some(slot) = self.slot_of(&file) {
                    let f = self.file_mut(slot);
                    let mut tell = false;
                    if let Some(f) = f {
                        f.located = true;
                        if f.tracker_knows & bit(t) == 0 {
                            f.tracker_knows |= bit(t);
                            f.tracker[t].full_from = (f.have.count() > 0).then_some(0);
                        }
                        tell = core::mem::take(&mut f.user_locate);
                    }
                    if tell {
                        self.event(PeerEvent::LocateEnd { file, holders });
                    }
                } else if self
                    .queries
                    .user_locates_untracked
                    .take_if(|f| *f == file)
                    .is_some()
                {
                    self.event(PeerEvent::LocateEnd { file, holders });
                }
            }
            Message::NotFound { file } => {
                if let Some(slot) = self.slot_of(&file) {
                    if let Some(f) = self.file_mut(slot) {
                        f.tracker_knows &= !bit(t);
                        f.located = true;
                        f.user_locate = false;
                        if let ManifestState::Wanted { .. } = f.manifest {
                            f.manifest = ManifestState::Wanted { asked: None };
                        }
                    }
                } else {
                    self.queries.user_locates_untracked.take_if(|f| *f == file);
                }
                self.event(PeerEvent::NotFound { file });
            }
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }

    /// Tracker `t`'s connection ended (see [`Peer::teardown`] for how `end` matters).
    pub(super) fn tracker_lost(&mut self, t: usize, end: End) {
        let tracker = self.config.trackers.get(t);
        let s = &mut self.sessions[t];
        s.conn = None;
        s.down = !self.leaving;
        let was_registered = s.registered.take().is_some();
        let lost = match end {
            End::Lost => {
                let jitter = self.rng.next_u64() % (s.backoff.total_micros() / 4 + 1);
                s.retry_at = self.now + s.backoff + Duration::from_micros(jitter);
                s.backoff = (s.backoff.saturating_mul(2)).min(self.config.reconnect_max);
                was_registered || !self.leaving
            }
            End::Closed | End::Flushed => {
                if !self.leaving {
                    s.retry_at = self.now + s.backoff;
                    s.backoff = (s.backoff.saturating_mul(2)).min(self.config.reconnect_max);
                }
                !self.leaving
            }
        };
        if let (true, Some(tracker)) = (lost, tracker) {
            self.event(PeerEvent::TrackerLost { tracker });
        }
    }
}
