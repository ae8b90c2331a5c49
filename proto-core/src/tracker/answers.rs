//! What the tracker sends: replies rendered into frames only when polled (so a queue holds
//! small descriptions, not bytes), streamed answers (file lists, locates, peer lists) resumed
//! from a cursor one frame at a time, and manifests sent from storage.

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
    /// A locate answer: from holding `cursor`, chunk `chunk` on; `holders` sent so far.
    Locate {
        file: FileId,
        slot: u16,
        cursor: u16,
        chunk: u32,
        holders: u16,
    },
    Manifest {
        file: FileId,
        slot: u16,
    },
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Tracker<C, F, H, W> {
    pub(super) fn next_frame(
        &mut self,
        id: ConnId,
        buf: &mut [u8; FRAME_BUF_LEN],
    ) -> Option<Transmit> {
        let c = self.conns.get_mut(id)?;
        if c.link.blocked || c.link.phase == Phase::Closed || !c.has_output() {
            return None;
        }
        let (msg, then) = if let Some(reply) = c.replies.pop_front() {
            let (msg, next, then) = self.render(reply);
            if let Some(next) = next {
                // Put the rest of a stream back at the front; there is room, we just popped.
                let c = self.conns.get_mut(id)?;
                let _ = c.replies.push_front(next);
            }
            (msg, then)
        } else {
            if c.push.is_none() {
                c.push = Some((0, 0));
                c.push_dirty = false;
            }
            let (cursor, count) = c.push?;
            let next = (cursor as usize..C).find_map(|i| {
                let id = self.conns.id_at(i)?;
                let c = self.conns.get(id)?;
                let addr = c.registered?;
                Some((
                    i,
                    PeerEntry {
                        node: c.link.hello?.node,
                        addr,
                    },
                ))
            });
            let c = self.conns.get_mut(id)?;
            match next {
                Some((i, entry)) => {
                    c.push = Some((i as u16 + 1, count + 1));
                    (Message::PeerListItem(entry), None)
                }
                None => {
                    c.push = None;
                    (Message::PeerListEnd { count }, None)
                }
            }
        };
        let c = self.conns.get_mut(id)?;
        if c.link.phase == Phase::Closing && c.replies.is_empty() {
            c.link.phase = Phase::Closed;
            self.pending_actions += 1;
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
                let next = (cursor as usize..F).find_map(|i| match &self.files[i] {
                    FileState::Listed(file, header) => Some((i, *file, header)),
                    _ => None,
                });
                let Some((i, file, header)) = next else {
                    return (Message::FileListEnd { count }, None, None);
                };
                let (mut holders, mut seeders) = (0u16, 0u16);
                for h in self
                    .holdings
                    .iter()
                    .flatten()
                    .filter(|h| h.slot == i as u16)
                {
                    holders += 1;
                    seeders += u16::from(h.chunks.is_full());
                }
                let entry = FileEntry {
                    file,
                    name: header.name.clone(),
                    size: header.size,
                    chunk_size: header.chunk_size,
                    chunks: header.chunk_count(),
                    holders,
                    seeders,
                };
                let next = Reply::Files {
                    cursor: i as u16 + 1,
                    count: count + 1,
                };
                return (Message::FileItem(entry), Some(next), None);
            }
            Reply::Locate {
                file,
                slot,
                cursor,
                chunk,
                holders,
            } => return self.render_locate(file, slot, cursor, chunk, holders),
            Reply::Manifest { file, slot } => match &self.files[slot as usize] {
                FileState::Listed(id, header) if *id == file => {
                    let then = StorageSend {
                        key: hashes_key(slot),
                        offset: 0,
                        len: header.hashes_len(),
                    };
                    let msg = Message::Manifest {
                        file,
                        header: header.clone(),
                    };
                    return (msg, None, (then.len > 0).then_some(then));
                }
                // Delisted between the request and now.
                _ => Message::NotFound { file },
            },
        };
        (msg, None, None)
    }

    pub(super) fn render_locate(
        &self,
        file: FileId,
        slot: u16,
        cursor: u16,
        chunk: u32,
        holders: u16,
    ) -> (Message, Option<Reply>, Option<StorageSend>) {
        let end = Message::LocateEnd { file, holders };
        if !matches!(&self.files[slot as usize], FileState::Listed(id, _) if *id == file) {
            return (end, None, None);
        }
        let next = (cursor as usize..H).find_map(|i| {
            let h = self.holdings[i].as_ref().filter(|h| h.slot == slot)?;
            let c = self.conns.get(h.conn)?;
            Some((
                i,
                h,
                PeerEntry {
                    node: c.link.hello?.node,
                    addr: c.registered?,
                },
            ))
        });
        let Some((i, h, peer)) = next else {
            return (end, None, None);
        };
        let mut ranges = heapless::Vec::new();
        let mut from = chunk;
        let mut more = false;
        while let Some(r) = h.chunks.next_range(from) {
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
                cursor: i as u16,
                chunk: from,
                holders,
            }
        } else {
            Reply::Locate {
                file,
                slot,
                cursor: i as u16 + 1,
                chunk: 0,
                holders: holders + 1,
            }
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
