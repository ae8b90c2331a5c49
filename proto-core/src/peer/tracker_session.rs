//! The tracker session: one connection to the tracker, reconnected with backoff; registration,
//! announcing every file on a fresh session, and the tracker's answers (peer lists, listings,
//! holders, manifests).

use super::*;

/// The tracker connection and what it has told us: one per peer.
pub(super) struct TrackerSession<'a> {
    /// The connection, while there is one (open or not).
    pub(super) conn: Option<ConnId>,
    /// When to reconnect after losing it.
    pub(super) retry_at: Instant,
    /// The delay before the next reconnection; doubled on each failure.
    pub(super) backoff: Duration,
    /// The address the tracker recorded for us, while registered.
    pub(super) registered: Option<SocketAddr>,
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

impl<'a> TrackerSession<'a> {
    pub(super) fn new(
        now: Instant,
        backoff: Duration,
        peer_list: ManagedSlice<'a, Option<PeerEntry>>,
    ) -> Self {
        TrackerSession {
            conn: None,
            retry_at: now,
            backoff,
            registered: None,
            peer_list,
            peer_list_len: 0,
            user_list: false,
            user_locates_untracked: None,
        }
    }
}

impl<const W: usize> Peer<'_, W> {
    pub(super) fn connect_tracker(&mut self, now: Instant) {
        let Some(addr) = self.config.tracker else {
            return;
        };
        if self.leaving || self.session.conn.is_some() {
            return;
        }
        let conn = Conn::new(
            Role::Tracker,
            addr,
            Phase::Connecting { asked: false },
            now,
            &mut self.rng,
        );
        match self.conns.insert(conn) {
            Ok(id) => self.session.conn = Some(id),
            Err(TableFull) => self.session.retry_at = now + self.config.reconnect_min,
        }
    }

    pub(super) fn tracker_open(&self) -> Option<ConnId> {
        self.session
            .conn
            .filter(|&t| self.conns.get(t).is_some_and(Conn::is_open))
    }

    /// Tells a fresh tracker session about `slot`: publish it if whole, else resend what is
    /// held and ask for what is missing.
    pub(super) fn announce_file(&mut self, slot: u16) {
        let Some(t) = self.tracker_open() else {
            return;
        };
        let now = self.now;
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        f.tracker_knows = true;
        f.tracker = HaveCursor {
            seq: f.log.end(),
            full_from: None,
        };
        let id = f.id;
        match &f.manifest {
            ManifestState::Known(_) if f.have.is_full() => self.want_publish(slot),
            ManifestState::Known(_) => {
                f.tracker.full_from = (f.have.count() > 0).then_some(0);
                // Join the swarm even with nothing yet, so other fetchers find us.
                self.ctl(t, Ctl::Join(slot));
            }
            ManifestState::Wanted { .. } => {
                f.manifest = ManifestState::Wanted { asked: Some(now) };
                self.ctl(t, Ctl::GetManifest(id));
            }
        }
    }

    /// `slot` is to be published (again): sent by the tracker connection when it has room,
    /// so sharing a thousand files never overflows a queue.
    pub(super) fn want_publish(&mut self, slot: u16) {
        if let Some(f) = self.file_mut(slot) {
            if !f.publish_pending {
                f.publish_pending = true;
                self.publishes += 1;
            }
        }
    }

    pub(super) fn on_tracker_message(&mut self, id: ConnId, msg: Message) {
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Pong(n)),
            Message::Pong(_) => {}
            Message::Registered { addr } => {
                self.session.registered = Some(addr);
                self.session.backoff = self.config.reconnect_min;
                self.event(PeerEvent::Registered { addr });
                for slot in 0..self.files.len() as u16 {
                    self.announce_file(slot);
                }
            }
            Message::Refused(reason) => {
                self.event(PeerEvent::TrackerRefused(reason));
                self.close_now(id);
            }
            Message::PeerListItem(p) => {
                // A list longer than there are places keeps its first entries; the end's
                // event tells the whole count.
                let s = &mut self.session;
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
            Message::FileItem(e) if self.session.user_list => self.event(PeerEvent::FileListed(e)),
            Message::FileListEnd { count } if self.session.user_list => {
                self.session.user_list = false;
                self.event(PeerEvent::FileListEnd { count });
            }
            Message::FileItem(_) | Message::FileListEnd { .. } => {}
            Message::HolderItem(item) => {
                if let Some(slot) = self.slot_of(&item.file) {
                    if self.file(slot).is_some_and(|f| f.fetching) {
                        self.add_candidate(slot, item.peer);
                    }
                    if self.file(slot).is_some_and(|f| f.user_locate) {
                        self.event(PeerEvent::Holder(item));
                    }
                } else if self.session.user_locates_untracked == Some(item.file) {
                    self.event(PeerEvent::Holder(item));
                }
            }
            Message::LocateEnd { file, holders } => {
                if let Some(slot) = self.slot_of(&file) {
                    let f = self.file_mut(slot);
                    let mut tell = false;
                    if let Some(f) = f {
                        f.located = true;
                        if !f.tracker_knows {
                            f.tracker_knows = true;
                            f.tracker.full_from = (f.have.count() > 0).then_some(0);
                        }
                        tell = core::mem::take(&mut f.user_locate);
                    }
                    if tell {
                        self.event(PeerEvent::LocateEnd { file, holders });
                    }
                } else if self
                    .session
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
                        f.tracker_knows = false;
                        f.located = true;
                        f.user_locate = false;
                        if let ManifestState::Wanted { .. } = f.manifest {
                            f.manifest = ManifestState::Wanted { asked: None };
                        }
                    }
                } else {
                    self.session.user_locates_untracked.take_if(|f| *f == file);
                }
                self.event(PeerEvent::NotFound { file });
            }
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }

    /// The tracker connection ended (see [`Peer::teardown`] for how `end` matters).
    pub(super) fn tracker_lost(&mut self, end: End) {
        self.session.conn = None;
        match end {
            End::Lost => {
                if self.session.registered.take().is_some() || !self.leaving {
                    self.event(PeerEvent::TrackerLost);
                }
                let jitter = self.rng.next_u64() % (self.session.backoff.total_micros() / 4 + 1);
                self.session.retry_at =
                    self.now + self.session.backoff + Duration::from_micros(jitter);
                self.session.backoff =
                    (self.session.backoff.saturating_mul(2)).min(self.config.reconnect_max);
            }
            End::Closed | End::Flushed => {
                self.session.registered = None;
                if !self.leaving {
                    self.session.retry_at = self.now + self.session.backoff;
                    self.session.backoff =
                        (self.session.backoff.saturating_mul(2)).min(self.config.reconnect_max);
                    self.event(PeerEvent::TrackerLost);
                }
            }
        }
    }
}
