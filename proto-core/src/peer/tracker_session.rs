//! The tracker session: one connection to the tracker, reconnected with backoff; registration,
//! announcing every file on a fresh session, and the tracker's answers (peer lists, listings,
//! holders, manifests).

use super::*;

impl<const C: usize, const F: usize, const W: usize, const A: usize> Peer<C, F, W, A> {
    pub(super) fn connect_tracker(&mut self, now: Instant) {
        let Some(addr) = self.config.tracker else {
            return;
        };
        if self.leaving || self.tracker.is_some() {
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
            Ok(id) => self.tracker = Some(id),
            Err(TableFull) => self.tracker_retry_at = now + self.config.reconnect_min,
        }
    }

    pub(super) fn tracker_open(&self) -> Option<ConnId> {
        self.tracker
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
            ManifestState::Known(_) if f.have.is_full() => f.publish_pending = true,
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
        if let Some(f) = self.file_mut(slot) {
            if f.publish_pending {
                f.publish_pending = false;
                self.ctl(t, Ctl::Publish(slot));
            }
        }
    }

    pub(super) fn on_tracker_message(&mut self, id: ConnId, msg: Message) {
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Pong(n)),
            Message::Pong(_) => {}
            Message::Registered { addr } => {
                self.registered = Some(addr);
                self.tracker_backoff = self.config.reconnect_min;
                self.event(PeerEvent::Registered { addr });
                for slot in 0..F as u16 {
                    self.announce_file(slot);
                }
            }
            Message::Refused(reason) => {
                self.event(PeerEvent::TrackerRefused(reason));
                self.close_now(id);
            }
            Message::PeerListItem(p) => {
                let _ = self.peer_list_next.push(p);
            }
            Message::PeerListEnd { count } => {
                if usize::from(count) == self.peer_list_next.len() {
                    core::mem::swap(&mut self.peer_list, &mut self.peer_list_next);
                    self.event(PeerEvent::PeerList { count });
                }
                self.peer_list_next.clear();
            }
            Message::Published { file } => self.event(PeerEvent::Published { file }),
            Message::PublishRefused { file, reason } => {
                self.event(PeerEvent::PublishRefused { file, reason })
            }
            Message::FileItem(e) if self.user_list => self.event(PeerEvent::FileListed(e)),
            Message::FileListEnd { count } if self.user_list => {
                self.user_list = false;
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
                } else if self.user_locates_untracked == Some(item.file) {
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
                    self.user_locates_untracked.take_if(|f| *f == file);
                }
                self.event(PeerEvent::NotFound { file });
            }
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }
}
