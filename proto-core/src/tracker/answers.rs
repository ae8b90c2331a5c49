//! What the tracker sends: replies rendered into frames only when polled (so a queue holds
//! small descriptions, not bytes), streamed answers (file lists, locates, peer lists) resumed
//! from a cursor one frame at a time, and manifests sent from storage. Each frame costs
//! O(log n): cursors are keys into the tracker's ordered indexes.

use super::*;

/// A reply waiting in a connection's queue; rendered into a frame only when polled, so the
/// queue holds small descriptions instead of encoded bytes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reply {
    Hello(Nonce),
    /// Our swarm-key proof (the remote's checked out).
    Auth(auth::Proof),
    Ping(u32),
    Pong(u32),
    Registered(SocketAddr),
    Refused(Refusal),
    Published(FileId),
    PublishRefused(FileId, PublishRefusal),
    NotFound(FileId),
    /// The file list, from file slot `cursor` on, `count` items sent so far.
    Files {
        cursor: u16,
        count: u16,
    },
    /// The peer list, from connection index `cursor` on, `count` items sent so far.
    Peers {
        cursor: u32,
        count: u16,
    },
    /// A locate answer: the holders of the file in `slot` from connection index `at` on
    /// (chunk `chunk` on for the first), wrapping once from the end of the holders to `start`;
    /// `holders` sent so far.
    Locate {
        file: FileId,
        slot: u16,
        start: u16,
        at: u16,
        wrapped: bool,
        chunk: u32,
        holders: u16,
    },
    Manifest {
        file: FileId,
        slot: u16,
    },
}

impl Tracker<'_> {
    pub(super) fn next_frame(
        &mut self,
        id: ConnId,
        buf: &mut [u8; FRAME_BUF_LEN],
    ) -> Option<Transmit> {
        let c = self.conns.get_mut(id)?;
        if c.link.blocked || c.link.phase == Phase::Closed || c.replies.is_empty() {
            return None;
        }
        let reply = c.replies.pop_front()?;
        let (msg, next, then) = self.render(reply);
        if let Some(next) = next {
            // Put the rest of a stream back at the front; there is room, we just popped.
            let c = self.conns.get_mut(id)?;
            let _ = c.replies.push_front(next);
        }
        let c = self.conns.get_mut(id)?;
        if c.link.phase == Phase::Closing && c.replies.is_empty() {
            self.closed_now(id);
        }
        // Every message fits FRAME_BUF_LEN (checked by a test over the largest of each kind).
        let len = encode_frame(&msg, buf).ok()?;
        Some(Transmit {
            conn: id,
            len,
            then,
        })
    }

    /// The frame for `reply`, the rest of the stream it starts (if any), and bytes to send
    /// from storage after it.
    pub(super) fn render(&self, reply: Reply) -> (Message, Option<Reply>, Option<StorageSend>) {
        let msg = match reply {
            Reply::Hello(nonce) => Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: self.config.node,
                listen_port: 0,
                nonce,
            }),
            Reply::Auth(proof) => Message::Auth { proof },
            Reply::Ping(n) => Message::Ping(n),
            Reply::Pong(n) => Message::Pong(n),
            Reply::Registered(addr) => Message::Registered { addr },
            Reply::Refused(r) => Message::Refused(r),
            Reply::Published(file) => Message::Published { file },
            Reply::PublishRefused(file, reason) => Message::PublishRefused { file, reason },
            Reply::NotFound(file) => Message::NotFound { file },
            Reply::Files { cursor, count } => {
                let next = (usize::from(cursor)..self.files.capacity()).find_map(|i| {
                    match self.file(i as u16)? {
                        FileState::Listed(l) => Some((i, l)),
                        _ => None,
                    }
                });
                let Some((i, l)) = next else {
                    return (Message::FileListEnd { count }, None, None);
                };
                let entry = FileEntry {
                    file: l.file,
                    name: l.header.name.clone(),
                    size: l.header.size,
                    chunk_size: l.header.chunk_size,
                    chunks: l.header.chunk_count(),
                    holders: l.holders.try_into().unwrap_or(u16::MAX),
                    seeders: l.complete.try_into().unwrap_or(u16::MAX),
                };
                let next = Reply::Files {
                    cursor: i as u16 + 1,
                    count: count.saturating_add(1),
                };
                return (Message::FileItem(entry), Some(next), None);
            }
            Reply::Peers { cursor, count } => {
                let next = (cursor as usize..self.conns.capacity()).find_map(|i| {
                    let c = self.conns.get(self.conns.id_at(i)?)?;
                    let addr = c.registered()?;
                    Some((
                        i,
                        PeerEntry {
                            node: c.link.hello?.node,
                            addr,
                        },
                    ))
                });
                let Some((i, entry)) = next else {
                    return (Message::PeerListEnd { count }, None, None);
                };
                let next = Reply::Peers {
                    cursor: i as u32 + 1,
                    count: count.saturating_add(1),
                };
                return (Message::PeerListItem(entry), Some(next), None);
            }
            Reply::Locate { .. } => return self.render_locate(reply),
            Reply::Manifest { file, slot } => match self.file(slot) {
                Some(FileState::Listed(l)) if l.file == file => {
                    let then = StorageSend {
                        key: hashes_key(slot),
                        offset: 0,
                        len: l.header.body_len(),
                    };
                    let msg = Message::Manifest {
                        file,
                        header: l.header.clone(),
                    };
                    return (msg, None, (then.len > 0).then_some(then));
                }
                // Delisted between the request and now.
                _ => Message::NotFound { file },
            },
        };
        (msg, None, None)
    }

    /// The start of a locate answer for the file in `slot`: its holders from where the last
    /// answer began, one further, so successive askers are told different holders first.
    pub(super) fn start_locate(&mut self, file: FileId, slot: u16) -> Reply {
        let Some(FileState::Listed(l)) = self.file(slot) else {
            return Reply::NotFound(file);
        };
        let from = l.locate_from;
        let next = self
            .holders
            .range((slot, from.wrapping_add(1))..=(slot, u16::MAX))
            .next()
            .map_or(0, |(&(_, ix), _)| ix);
        let start = if from == u16::MAX { 0 } else { from };
        if let Some(FileState::Listed(l)) = self.file_mut(slot) {
            l.locate_from = next;
        }
        Reply::Locate {
            file,
            slot,
            start,
            at: start,
            wrapped: false,
            chunk: 0,
            holders: 0,
        }
    }

    /// One holder of a locate answer (or part of one, if its chunks need more ranges than a
    /// frame holds), or its end.
    pub(super) fn render_locate(
        &self,
        reply: Reply,
    ) -> (Message, Option<Reply>, Option<StorageSend>) {
        let Reply::Locate {
            file,
            slot,
            start,
            mut at,
            mut wrapped,
            chunk,
            holders,
        } = reply
        else {
            return (
                Message::NotFound {
                    file: FileId::default(),
                },
                None,
                None,
            );
        };
        let end = Message::LocateEnd { file, holders };
        if !matches!(self.file(slot), Some(FileState::Listed(l)) if l.file == file)
            || holders >= self.config.locate_holders
        {
            return (end, None, None);
        }
        let found = loop {
            let hit = if wrapped {
                self.holders.range((slot, at)..(slot, start)).next()
            } else {
                self.holders.range((slot, at)..=(slot, u16::MAX)).next()
            };
            match hit {
                Some((&(_, ix), h)) => break Some((ix, *h)),
                None if !wrapped && start > 0 => {
                    wrapped = true;
                    at = 0;
                }
                None => break None,
            }
        };
        let Some((ix, h)) = found else {
            return (end, None, None);
        };
        let peer = self
            .conns
            .id_at(usize::from(ix))
            .filter(|id| id.generation() == h.generation)
            .and_then(|id| self.conns.get(id))
            .and_then(|c| {
                Some(PeerEntry {
                    node: c.link.hello?.node,
                    addr: c.registered()?,
                })
            });
        let after = |holders| Reply::Locate {
            file,
            slot,
            start,
            at: ix.wrapping_add(1),
            wrapped: wrapped || ix == u16::MAX,
            chunk: 0,
            holders,
        };
        let Some(peer) = peer else {
            // Cannot happen (a holding is a registered connection's); skip it if it does.
            return self.render_locate(after(holders));
        };
        let words = self.bits.words(h.piece);
        let mut ranges = heapless::Vec::new();
        let mut from = chunk;
        let mut more = false;
        while let Some(r) = bitmap::next_range(words, h.len, from) {
            if ranges.push(r).is_err() {
                more = true;
                break;
            }
            from = r.end;
        }
        let next = if more {
            Reply::Locate {
                file,
                slot,
                start,
                at: ix,
                wrapped,
                chunk: from,
                holders,
            }
        } else {
            after(holders + 1)
        };
        let item = HolderItem {
            file,
            peer,
            ranges,
            more,
        };
        (Message::HolderItem(item), Some(next), None)
    }
}
