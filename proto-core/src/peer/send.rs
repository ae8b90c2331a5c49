//! What the peer sends next on a connection. Frames are rendered only when polled, into the
//! caller's buffer, from small queued descriptions and from state (the have log, the request
//! pipeline, the serve queue), so nothing is encoded ahead of time.
//!
//! Per connection, in this order: the rest of a bitfield body being sent; control frames;
//! `Have`s (to the tracker for every file, to a peer for its file); block requests (within the
//! download limit); blocks being served (within the upload slot and the upload limit).

use heapless::Vec;

use super::{bit, key, take_at, Blk, Ctl, HaveCursor, Peer, Phase, Role, FRAME_BUF_LEN};
use crate::conn::ConnId;
use crate::io::Transmit;
use crate::storage::{Region, StorageSend};
use crate::wire::{encode_frame, FileId, Hello, Message, PROTOCOL_VERSION};

impl<const W: usize> Peer<'_, W> {
    pub(super) fn next_frame(
        &mut self,
        id: ConnId,
        buf: &mut [u8; FRAME_BUF_LEN],
    ) -> Option<Transmit> {
        let c = self.conns.get(id)?;
        if c.link.blocked
            || !matches!(
                c.link.phase,
                Phase::Handshake { .. } | Phase::Open | Phase::Closing
            )
        {
            return None;
        }
        if let Some(len) = self.bitfield_piece(id, buf) {
            return Some(Transmit {
                conn: id,
                len,
                then: None,
            });
        }
        let (msg, then) = match self.conns.get_mut(id)?.ctl.pop_front() {
            Some(ctl) => self.render_ctl(id, ctl)?,
            None => {
                let c = self.conns.get(id)?;
                if c.link.phase != Phase::Open {
                    return None;
                }
                match c.role {
                    Role::Tracker(_) => self.tracker_next(id)?,
                    Role::Peer { .. } => self.peer_data(id)?,
                }
            }
        };
        if let Some(c) = self.conns.get_mut(id) {
            if c.link.phase == Phase::Closing && c.ctl.is_empty() {
                c.link.phase = Phase::Closed;
            }
        }
        // Every message fits the buffer (a wire test checks the largest of each kind).
        let len = encode_frame(&msg, buf).ok()?;
        Some(Transmit {
            conn: id,
            len,
            then,
        })
    }

    /// The next piece of a bitfield body, if one is being sent on `id`.
    pub(super) fn bitfield_piece(
        &mut self,
        id: ConnId,
        buf: &mut [u8; FRAME_BUF_LEN],
    ) -> Option<usize> {
        let (slot, pos) = self.conns.get(id)?.bitfield_body?;
        // A super-seeder's bitfield is empty: it offers chunks one by one (see `seeding`).
        let offering = self.offering(id);
        let f = self.file(slot)?;
        let total = f.have.byte_len();
        let n = (total - pos).min(FRAME_BUF_LEN as u32);
        for (k, b) in buf.iter_mut().take(n as usize).enumerate() {
            *b = if offering {
                0
            } else {
                f.have.byte(pos + k as u32)
            };
        }
        let c = self.conns.get_mut(id)?;
        c.bitfield_body = (pos + n < total).then_some((slot, pos + n));
        Some(n as usize)
    }

    pub(super) fn render_ctl(
        &mut self,
        id: ConnId,
        ctl: Ctl,
    ) -> Option<(Message, Option<StorageSend>)> {
        let msg = match ctl {
            Ctl::Hello => Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: self.config.node,
                listen_port: self.config.listen_port,
                nonce: self.conns.get(id)?.link.nonce,
            }),
            Ctl::Auth => {
                let c = self.conns.get(id)?;
                let key = self.config.swarm_key?;
                let theirs = c.link.hello?.nonce;
                Message::Auth {
                    proof: key.prove(c.side(), &c.link.nonce, &theirs),
                }
            }
            Ctl::Refused(reason) => Message::Refused(reason),
            Ctl::Register => Message::Register,
            Ctl::Ping(n) => Message::Ping(n),
            Ctl::Pong(n) => Message::Pong(n),
            Ctl::Report(nonce) => {
                // Summed over the files at hand rather than counted apart: a device has no RAM
                // to spare, and the tracker reads rates from differences anyway. Fetched:
                // the chunks verified since each file was added, at its chunk size (the last
                // may be short: no more than the bytes verified in all).
                let files = self.files.iter().flatten();
                let uploaded = files.clone().map(|f| f.bytes_uploaded).sum();
                let downloaded = files
                    .filter_map(|f| {
                        let chunk = u64::from(f.header()?.chunk_size);
                        Some((f.log.end() * chunk).min(f.bytes_done))
                    })
                    .sum();
                Message::Report {
                    nonce,
                    uploaded,
                    downloaded,
                }
            }
            Ctl::Leave => Message::Leave,
            Ctl::ListFiles => Message::ListFiles,
            Ctl::ListPeers => Message::ListPeers,
            Ctl::Locate(file) => Message::Locate { file },
            Ctl::Abandon(file) => Message::Abandon { file },
            Ctl::GetManifest(file) => Message::GetManifest { file },
            Ctl::NotFound(file) => Message::NotFound { file },
            Ctl::Reject(b, reason) => Message::Reject {
                block: b.in_file(self.conn_file(id)?),
                reason,
            },
            Ctl::Cancel(b) => Message::Cancel(b.in_file(self.conn_file(id)?)),
            Ctl::Started(chunk) => Message::Started {
                file: self.conn_file(id)?,
                chunk,
            },
            Ctl::GetLeaves(chunk) => Message::GetLeaves {
                file: self.conn_file(id)?,
                chunk,
            },
            Ctl::Leaves(chunk) => {
                let slot = self.conns.get(id)?.file?;
                let f = self.file(slot)?;
                let h = f.header()?;
                // Leaves are served from storage: a verified chunk's, or those checked of a
                // chunk being fetched (stored as they arrived).
                let count = if self.servable_chunk(slot, chunk) {
                    h.blocks_in(chunk)
                } else {
                    0
                };
                let then = StorageSend {
                    key: key(slot, Region::Leaves),
                    offset: h.leaf_offset(chunk),
                    len: u64::from(count) * crate::manifest::HASH_LEN as u64,
                };
                let msg = Message::Leaves {
                    file: f.id,
                    chunk,
                    count,
                };
                return Some((msg, (count > 0).then_some(then)));
            }
            Ctl::Peers => self.peers_sample(id)?,
            Ctl::Join(slot) => Message::Have {
                file: self.file(slot)?.id,
                ranges: Vec::new(),
            },
            Ctl::Publish(slot) | Ctl::Manifest(slot) => {
                let f = self.file(slot)?;
                let header = f.header()?.clone();
                let then = StorageSend {
                    key: key(slot, Region::Hashes),
                    offset: 0,
                    len: header.body_len(),
                };
                let then = (then.len > 0).then_some(then);
                let file = f.id;
                let msg = match ctl {
                    Ctl::Publish(_) => Message::Publish { file, header },
                    _ => Message::Manifest { file, header },
                };
                return Some((msg, then));
            }
            Ctl::Bitfield(slot) => {
                self.start_offering(id, slot);
                let f = self.file(slot)?;
                let (file, chunks, body, end) =
                    (f.id, f.have.len(), f.have.byte_len(), f.log.end());
                let c = self.conns.get_mut(id)?;
                c.bitfield_out = true;
                // Chunks verified from here on reach this remote as `Have`s.
                c.have = HaveCursor {
                    seq: end,
                    full_from: None,
                };
                c.bitfield_body = (body > 0).then_some((slot, 0));
                Message::Bitfield { file, chunks }
            }
        };
        Some((msg, None))
    }

    /// The id of the file connection `id` is about.
    pub(super) fn conn_file(&self, id: ConnId) -> Option<FileId> {
        let slot = self.conns.get(id)?.file?;
        Some(self.files[slot as usize].as_ref()?.id)
    }

    /// What a tracker connection sends when its control queue is empty: a publish that is
    /// due there, else a have-update.
    pub(super) fn tracker_next(&mut self, id: ConnId) -> Option<(Message, Option<StorageSend>)> {
        let t = self.tracker_of(id)?;
        self.sessions[t].registered?;
        if self.publishes[t] > 0 {
            let slot = self
                .files
                .iter()
                .position(|f| f.as_ref().is_some_and(|f| f.publish_pending & bit(t) != 0))?;
            if let Some(f) = self.files[slot].as_mut() {
                f.publish_pending &= !bit(t);
                self.publishes[t] -= 1;
            }
            return self.render_ctl(id, Ctl::Publish(slot as u16));
        }
        Some((self.tracker_have(t)?, None))
    }

    /// A `Have` for tracker `t`: newly verified chunks of any file it lists.
    pub(super) fn tracker_have(&mut self, t: usize) -> Option<Message> {
        for slot in 0..self.files.len() as u16 {
            let Some(f) = self.files[slot as usize].as_mut() else {
                continue;
            };
            if f.tracker_knows & bit(t) == 0 || f.header().is_none() {
                continue;
            }
            let (file, have, log) = (f.id, &f.have, &f.log);
            if let Some(ranges) = f.tracker[t].next(have, log) {
                return Some(Message::Have { file, ranges });
            }
        }
        None
    }

    /// For a peer connection: a `Have` (or a super-seeder's offer), else a request, else a
    /// block to serve.
    pub(super) fn peer_data(&mut self, id: ConnId) -> Option<(Message, Option<StorageSend>)> {
        let now = self.now;
        let slot = self.conns.get(id)?.file?;
        if let Some(offer) = self.offer(id, slot) {
            return Some((offer, None));
        }
        let c = self.conns.get(id)?;
        if c.bitfield_out {
            let f = self.files[slot as usize].as_ref()?;
            let c = self.conns.get_mut(id)?;
            if let Some(ranges) = c.have.next(&f.have, &f.log) {
                return Some((Message::Have { file: f.id, ranges }, None));
            }
        }
        let file = self.files[slot as usize].as_ref()?.id;
        let c = self.conns.get_mut(id)?;
        let may_ask = self.download.as_mut().is_none_or(|b| b.ready(now));
        if let Some(r) = c
            .reqs
            .iter_mut()
            .find(|r| r.sent.is_none())
            .filter(|_| may_ask)
        {
            r.sent = Some(now);
            if let Some(bucket) = self.download.as_mut() {
                bucket.take(u64::from(r.block.len));
            }
            return Some((Message::Request(r.block.in_file(file)), None));
        }
        if c.serve.is_empty() {
            return None;
        }
        if let Some(bucket) = self.upload.as_mut() {
            if !bucket.ready(now) {
                return None;
            }
        }
        // The first block of which something can go: held, or verified already in a chunk
        // being fetched (the others wait for it, see `Peer::on_request`). Of a block verified
        // only in part, the verified part goes now and the rest stays queued in its place:
        // a block then crosses this hop as soon as its first 16 KiB are verified here, not
        // once all of it is.
        let c = self.conns.get(id)?;
        let (next, ready) = c
            .serve
            .iter()
            .enumerate()
            .map(|(k, b)| (k, self.servable_len(slot, b)))
            .find(|&(_, n)| n > 0)?;
        let c = self.conns.get_mut(id)?;
        let queued = c.serve.iter_mut().nth(next)?;
        let b = if ready < queued.len {
            let piece = Blk {
                len: ready,
                ..*queued
            };
            *queued = queued.after(&piece);
            piece
        } else {
            take_at(&mut c.serve, next)?
        };
        c.last_served = now;
        let first = !core::mem::replace(&mut c.served, true);
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        let first = first && self.first_served(slot, node);
        let offset = self.file(slot)?.header()?.chunk_offset(b.chunk) + u64::from(b.offset);
        if let Some(bucket) = self.upload.as_mut() {
            bucket.take(u64::from(b.len));
        }
        if let Some(f) = self.file_mut(slot) {
            f.bytes_uploaded += u64::from(b.len);
            f.peers_served = f.peers_served.saturating_add(u16::from(first));
        }
        let then = StorageSend {
            key: key(slot, Region::Data),
            offset,
            len: u64::from(b.len),
        };
        Some((Message::Block(b.in_file(file)), Some(then)))
    }
}
