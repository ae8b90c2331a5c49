//! The receive path of the peer wire protocol: availability (bitfields and haves), requests
//! to serve, rejects, leaves, and blocks whose payload streams through
//! [`verify`](super::verify)'s frontier rule to storage, stopping at every block boundary to
//! check the block.

use super::*;

impl<const W: usize> Peer<'_, W> {
    pub(super) fn on_peer_message(&mut self, id: ConnId, msg: Message) {
        match msg {
            Message::Ping(n) => self.ctl(id, Ctl::Pong(n)),
            Message::Pong(_) => {}
            Message::Bitfield { file, chunks } => self.on_bitfield(id, file, chunks),
            Message::Have { file, ranges } => {
                let Some(slot) = self.conn_slot(id, &file) else {
                    self.misbehaved(id, Offence::Unexpected);
                    return;
                };
                let count = self.chunk_count(slot);
                if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
                    self.misbehaved(id, Offence::BadRange);
                    return;
                }
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                c.announced(&ranges);
                self.offers_taken(id, slot, &ranges);
                let Some(c) = self.conns.get(id) else {
                    return;
                };
                if !c.holds_all() {
                    self.prefer_swarm(slot, &ranges);
                }
            }
            Message::Request(b) => self.on_request(id, b),
            Message::Cancel(b) => {
                if self.conn_slot(id, &b.file).is_none() {
                    self.misbehaved(id, Offence::Unexpected);
                    return;
                }
                // What is left of it: we may have sent pieces of it since it was sent.
                let gone = Blk::of(&b);
                if let Some(c) = self.conns.get_mut(id) {
                    c.serve.retain(|s| !s.is_rest_of(&gone));
                }
            }
            Message::Block(b) => self.on_block(id, b),
            Message::GetLeaves { file, chunk } => {
                if self.chunk_of(id, &file, chunk).is_some() {
                    self.ctl(id, Ctl::Leaves(chunk));
                }
            }
            Message::Leaves { file, chunk, count } => self.on_leaves(id, file, chunk, count),
            Message::Started { file, chunk } => {
                let Some(slot) = self.chunk_of(id, &file, chunk) else {
                    return;
                };
                // Its blocks come as the remote verifies them.
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                c.started_chunk(chunk);
                let range = [ChunkRange {
                    start: chunk,
                    end: chunk + 1,
                }];
                self.prefer_swarm(slot, &range);
            }
            Message::Reject { block, reason } => self.on_reject(id, block, reason),
            Message::Peers { file, addrs } => self.on_peers(id, file, &addrs),
            Message::GetManifest { file } => {
                let known = self
                    .slot_of(&file)
                    .filter(|&s| self.file(s).is_some_and(|f| f.header().is_some()));
                match known {
                    Some(slot) => self.ctl(id, Ctl::Manifest(slot)),
                    None => self.ctl(id, Ctl::NotFound(file)),
                }
            }
            Message::NotFound { .. } => self.close_now(id),
            Message::Manifest { file, header } => self.start_manifest(id, file, header),
            // The remote has a swarm key and we have none (or the other way round).
            Message::Auth { .. } | Message::Refused(Refusal::SwarmKey) => {
                if let Some(c) = self.conns.get(id) {
                    let by_remote = matches!(msg, Message::Refused(_));
                    let addr = c.listen_addr();
                    if !by_remote {
                        self.ctl(id, Ctl::Refused(Refusal::SwarmKey));
                    }
                    self.event(PeerEvent::SwarmKeyMismatch { addr, by_remote });
                    self.close_after_flush(id);
                }
            }
            _ => self.misbehaved(id, Offence::Unexpected),
        }
    }

    /// The slot of `file` if connection `id` is about it and `chunk` is one of its chunks;
    /// otherwise the remote misbehaved.
    fn chunk_of(&mut self, id: ConnId, file: &FileId, chunk: u32) -> Option<u16> {
        let Some(slot) = self.conn_slot(id, file) else {
            self.misbehaved(id, Offence::Unexpected);
            return None;
        };
        if chunk >= self.chunk_count(slot) {
            self.misbehaved(id, Offence::BadRange);
            return None;
        }
        Some(slot)
    }

    pub(super) fn on_bitfield(&mut self, id: ConnId, file: FileId, chunks: u32) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let incoming = c.role == (Role::Peer { outgoing: false });
        let slot = match c.file {
            Some(s) if self.file(s).is_some_and(|f| f.id == file) => s,
            None if incoming => {
                let known = self
                    .slot_of(&file)
                    .filter(|&s| self.file(s).is_some_and(|f| f.header().is_some()));
                let Some(s) = known else {
                    // We do not have (the manifest of) that file.
                    self.ctl(id, Ctl::NotFound(file));
                    self.close_after_flush(id);
                    return;
                };
                if self.file_conns(s) >= self.config.max_conns_per_file.saturating_mul(2) {
                    // As many connections for this file as a peer few others chose would dial
                    // (see `can_dial`): the remote goes to another holder. Else the peers
                    // everyone dials first (the seeder, the first to register) gather most of
                    // the swarm's connections and the late joiners' uplinks idle.
                    self.close_now(id);
                    return;
                }
                s
            }
            _ => {
                self.misbehaved(id, Offence::Unexpected);
                return;
            }
        };
        let count = self.chunk_count(slot);
        if chunks != count || c.bitfield_in {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        // Two connections between the same pair for the same file: keep the one opened by
        // the lower node id, so both ends agree which one goes.
        let node = c.link.hello.map(|h| h.node).unwrap_or_default();
        let outgoing = !incoming;
        let dup = self.conns.iter().find(|(other, oc)| {
            *other != id
                && oc.file == Some(slot)
                && oc.link.hello.is_some_and(|h| h.node == node)
                && oc.is_open()
        });
        if dup.is_some() {
            let opener_is_me = outgoing;
            let keep_this = if opener_is_me {
                self.config.node < node
            } else {
                node < self.config.node
            };
            if !keep_this {
                self.close_now(id);
                return;
            }
            if let Some((other, _)) = dup {
                self.close_now(other);
            }
        }
        let Ok(bits) = ChunkBitmap::new(count) else {
            return;
        };
        let addr;
        let mut reply = false;
        {
            let Some(c) = self.conns.get_mut(id) else {
                return;
            };
            c.file = Some(slot);
            c.remote_has = bits;
            c.started = 0;
            c.sink = Sink::Bitfield { pos: 0 };
            if !c.bitfield_out {
                reply = true;
            }
            addr = c.listen_addr();
        }
        if reply {
            self.ctl(id, Ctl::Bitfield(slot));
        }
        if let Some(c) = self.conns.get_mut(id) {
            if chunks == 0 {
                c.sink = Sink::None;
                c.bitfield_in = true;
            }
        }
        self.event(PeerEvent::PeerConnected { slot, addr });
        self.start_exchange(id);
    }

    pub(super) fn on_request(&mut self, id: ConnId, b: BlockRef) {
        let Some(slot) = self.conn_slot(id, &b.file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let Some(f) = self.file(slot) else {
            return;
        };
        let Some(h) = f.header() else {
            return;
        };
        let chunk_len = h.chunk_len(b.chunk);
        let held = f.have.get(b.chunk);
        let b = Blk::of(&b);
        // A block of a chunk we are fetching waits in the queue until we have verified it;
        // at most half the queue waits, so the blocks that can go always find room and a
        // full queue (which stops reading) never waits on this connection's own input.
        let waiting = || {
            self.conns.get(id).map_or(0, |c| {
                c.serve.iter().filter(|q| !self.servable(slot, q)).count()
            })
        };
        let reason = if b.chunk >= h.chunk_count()
            || b.len == 0
            || u64::from(b.offset) + u64::from(b.len) > u64::from(chunk_len)
        {
            Some(RejectReason::OutOfRange)
        } else if held {
            None
        } else if !self.servable_chunk(slot, b.chunk) || self.feeds(slot, b.chunk, id) {
            // (A remote that is itself our source for the chunk would wait on us while we
            // wait on it.)
            Some(RejectReason::NotHeld)
        } else if !self.servable(slot, &b) && waiting() >= SERVE_QUEUE / 2 {
            Some(RejectReason::Busy)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.ctl(id, Ctl::Reject(b, reason));
            return;
        }
        let slots = self.config.upload_slots;
        let free = self.slots_used < slots;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.upload_slot {
            if !free {
                self.ctl(id, Ctl::Reject(b, RejectReason::Busy));
                return;
            }
            c.upload_slot = true;
            c.last_served = self.now;
            self.slots_used += 1;
        }
        if c.serve.push_back(b).is_err() {
            // handle_recv stops reading while the queue is full, so this is a remote that
            // pipelines more than it may: refuse the excess.
            self.ctl(id, Ctl::Reject(b, RejectReason::Busy));
        }
    }

    pub(super) fn on_reject(&mut self, id: ConnId, b: BlockRef, reason: RejectReason) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.file
            .and_then(|s| self.files[s as usize].as_ref())
            .map(|f| f.id)
            != Some(b.file)
        {
            return;
        }
        c.reqs.retain(|r| r.block != Blk::of(&b));
        match reason {
            RejectReason::Busy => c.pause_until = self.now + BUSY_PAUSE,
            RejectReason::NotHeld | RejectReason::OutOfRange => c.lost_chunk(b.chunk),
        }
        if let Some(slot) = c.file {
            if let Some(i) = self.active_index(slot, b.chunk) {
                self.release_chunk_from(i, id);
            }
        }
    }

    pub(super) fn on_block(&mut self, id: ConnId, b: BlockRef) {
        let now = self.now;
        let Some(slot) = self.conn_slot(id, &b.file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let piece = Blk::of(&b);
        let pos = c
            .reqs
            .iter()
            .position(|r| r.block.answered_by(&piece) && r.sent.is_some());
        let mut active = None;
        if let Some(pos) = pos {
            if pos == 0 {
                if let Some(sent) = c.reqs.front().and_then(|r| r.sent) {
                    let sample = now - sent;
                    c.rtt = Some(c.rtt.map_or(sample, |r| r.min(sample)));
                }
            }
            // A piece of the request: the rest stays asked for, and comes next.
            match c.reqs.iter_mut().nth(pos) {
                Some(r) if r.block.len > piece.len => r.block = r.block.after(&piece),
                _ => {
                    take_at(&mut c.reqs, pos);
                }
            }
            let addr = c.listen_addr();
            let node = c.link.hello.map(|h| h.node).unwrap_or_default();
            if let Some(i) = self.active_index(slot, b.chunk) {
                let mut skipped = false;
                if let Some(a) = self.active[i].as_mut() {
                    if a.receiving.is_none() && a.frontier == b.offset {
                        if a.leaves == Leaves::Checked {
                            a.receiving = Some(id);
                            a.receiving_end = b.offset + b.len;
                            if !a.contributors.iter().any(|(c, _, _)| *c == id) {
                                let _ = a.contributors.push((id, addr, node));
                            }
                            active = Some(i);
                        } else {
                            // The block the chunk needs next, before its leaves could be
                            // checked: not taken. From a source asked for the leaves first,
                            // that means it skipped them.
                            skipped = a.leaves == Leaves::Missing && a.asked.contains(&Some(id));
                        }
                    }
                }
                if skipped && self.charge_unsolicited(id, b.len, u64::from(b.len)) {
                    return;
                }
                if active.is_none() {
                    // Not taken (a copy the frontier has passed, a stale copy of a cancelled
                    // request, or too early): whichever source no longer has a request where
                    // the chunk goes on asks again from there, so the chunk never waits on
                    // a request that was used up.
                    self.resync(i);
                }
            }
        } else {
            let excess = u64::from(b.len).saturating_sub(c.cancelled);
            c.cancelled = c.cancelled.saturating_sub(u64::from(b.len));
            // Blocks asked for and then cancelled may still come; more than that is abuse.
            if self.charge_unsolicited(id, b.len, excess) {
                return;
            }
        }
        let file_offset = self
            .file(slot)
            .and_then(|f| f.header())
            .map_or(0, |h| h.chunk_offset(b.chunk) + u64::from(b.offset));
        if let Some(c) = self.conns.get_mut(id) {
            c.sink = if b.len == 0 {
                Sink::None
            } else {
                Sink::Block {
                    active,
                    slot,
                    chunk: b.chunk,
                    file_offset,
                }
            };
        }
    }

    /// Counts `bytes` of a `len`-byte block that `id` should not have sent; true (and the
    /// remote cut off) once they pass eight blocks' worth.
    fn charge_unsolicited(&mut self, id: ConnId, len: u32, bytes: u64) -> bool {
        let limit = 8 * u64::from(self.config.block_len.max(len));
        let Some(c) = self.conns.get_mut(id) else {
            return false;
        };
        c.unsolicited += bytes;
        if c.unsolicited <= limit {
            return false;
        }
        self.misbehaved(id, Offence::Unsolicited);
        true
    }

    /// A block's body ended on connection `id`: the chunk waits for its next block.
    pub(super) fn end_block(&mut self, id: ConnId, active: Option<usize>, chunk: u32) {
        if let Some(a) = active.and_then(|i| self.active[i].as_mut()) {
            if a.receiving == Some(id) && a.chunk == chunk {
                a.receiving = None;
            }
        }
    }

    /// The leaves of `chunk`, `count` of them, follow.
    pub(super) fn on_leaves(&mut self, id: ConnId, file: FileId, chunk: u32, count: u32) {
        let Some(slot) = self.conn_slot(id, &file) else {
            self.misbehaved(id, Offence::Unexpected);
            return;
        };
        let asked = self.active_index(slot, chunk).filter(|&i| {
            self.active[i]
                .as_ref()
                .is_some_and(|a| a.asked.contains(&Some(id)))
        });
        if count == 0 {
            // It does not have them: then it has not the chunk either.
            if let Some(i) = asked {
                if let Some(c) = self.conns.get_mut(id) {
                    c.lost_chunk(chunk);
                }
                self.release_chunk_from(i, id);
            }
            return;
        }
        let want = self
            .file(slot)
            .and_then(|f| f.header())
            .map_or(0, |h| h.blocks_in(chunk));
        if count != want {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        // The first complete set is the one checked; others are read past.
        let take = asked.filter(|&i| {
            self.active[i].as_mut().is_some_and(|a| match a.leaves {
                Leaves::Missing => {
                    a.leaves = Leaves::Receiving(id);
                    true
                }
                _ => false,
            })
        });
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if asked.is_none() {
            // Leaves nobody asked for count as unsolicited bytes, like blocks.
            c.unsolicited += u64::from(count) * HASH_LEN as u64;
        }
        c.sink = Sink::Leaves {
            active: take,
            slot,
            chunk,
            pos: 0,
        };
    }

    /// How much of a body `on_body` takes at once on `id`: inline, up to the end of the block
    /// being verified, so each block is checked before a byte past it is taken.
    pub(super) fn body_room(&self, id: ConnId) -> usize {
        if self.config.block_check == BlockCheck::Deferred {
            return usize::MAX;
        }
        let Some(c) = self.conns.get(id) else {
            return usize::MAX;
        };
        let Sink::Block {
            active: Some(i),
            slot,
            chunk,
            ..
        } = c.sink
        else {
            return usize::MAX;
        };
        let Some(a) = self.active.get(i).and_then(Option::as_ref) else {
            return usize::MAX;
        };
        if a.receiving != Some(id) || a.chunk != chunk || a.slot != slot {
            return usize::MAX;
        }
        let Some(h) = self.file(slot).and_then(|f| f.header()) else {
            return usize::MAX;
        };
        let block = h.block_len();
        let end = ((a.frontier / block + 1) * block).min(h.chunk_len(chunk));
        (end.saturating_sub(a.frontier) as usize).max(1)
    }

    pub(super) fn on_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>> {
        let now = self.now;
        let c = self.conns.get_mut(id)?;
        c.rate.add(now, data.len() as u64);
        let write = match &mut c.sink {
            Sink::None => None,
            Sink::Block {
                active,
                slot,
                chunk,
                file_offset,
            } => {
                let offset = *file_offset;
                *file_offset += data.len() as u64;
                let (slot, chunk) = (*slot, *chunk);
                let target = *active;
                let sizes = self
                    .file(slot)
                    .and_then(|f| f.header())
                    .map(|h| (h.block_len(), h.chunk_len(chunk)));
                match (target, target.and_then(|i| self.active[i].as_mut()), sizes) {
                    (Some(i), Some(a), Some((block, len)))
                        if a.receiving == Some(id) && a.chunk == chunk && a.slot == slot =>
                    {
                        // `body_room` stopped the input at the block's end (inline; deferred,
                        // the adapter hashes the block once written).
                        if self.config.block_check == BlockCheck::Inline {
                            a.sha.update(data);
                        }
                        a.frontier += data.len() as u32;
                        let at_boundary = a.frontier.is_multiple_of(block) || a.frontier >= len;
                        if let Some(f) = self.files[slot as usize].as_mut() {
                            f.rate.add(now, data.len() as u64);
                        }
                        if at_boundary && !self.block_done(i, id) {
                            // The rest of this block's body is not taken.
                            if let Some(c) = self.conns.get_mut(id) {
                                if let Sink::Block { active, .. } = &mut c.sink {
                                    *active = None;
                                }
                            }
                        }
                        Some(StorageWrite {
                            key: key(slot, Region::Data),
                            offset,
                            data,
                        })
                    }
                    _ => None,
                }
            }
            Sink::Bitfield { pos } => {
                for (k, byte) in data.iter().enumerate() {
                    let base = (*pos + k as u32) * 8;
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            c.remote_has.set(base + bit);
                        }
                    }
                }
                *pos += data.len() as u32;
                None
            }
            Sink::Leaves {
                active,
                chunk,
                pos,
                slot,
            } => {
                let (at, chunk, slot) = (*pos, *chunk, *slot);
                *pos += data.len() as u32;
                let taken = (*active).filter(|&i| {
                    self.active[i]
                        .as_ref()
                        .is_some_and(|a| a.chunk == chunk && a.slot == slot)
                });
                let Some(i) = taken else {
                    if remaining == 0 {
                        self.end_body(id);
                    }
                    return None;
                };
                let leaves = self.leaves_of(i);
                for (k, byte) in data.iter().enumerate() {
                    let n = at as usize + k;
                    if let Some(l) = leaves.get_mut(n / HASH_LEN) {
                        l[n % HASH_LEN] = *byte;
                    }
                }
                let base = self
                    .file(slot)
                    .and_then(|f| f.header())
                    .map_or(0, |h| h.leaf_offset(chunk));
                if remaining == 0 {
                    self.end_body(id);
                }
                return Some(StorageWrite {
                    key: key(slot, Region::Leaves),
                    offset: base + u64::from(at),
                    data,
                });
            }
            Sink::Hashes {
                slot,
                hasher,
                offset,
            } => {
                hasher.update(data);
                let at = *offset;
                *offset += data.len() as u64;
                Some(StorageWrite {
                    key: key(*slot, Region::Hashes),
                    offset: at,
                    data,
                })
            }
        };
        if remaining == 0 {
            self.end_body(id);
        }
        write
    }

    pub(super) fn end_body(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        match core::mem::replace(&mut c.sink, Sink::None) {
            Sink::None => {}
            Sink::Block { active, chunk, .. } => self.end_block(id, active, chunk),
            Sink::Leaves {
                active: Some(i),
                chunk,
                slot,
                ..
            } => {
                let ours = self.active[i]
                    .as_ref()
                    .is_some_and(|a| a.chunk == chunk && a.slot == slot);
                if ours {
                    self.leaves_arrived(i, id);
                }
            }
            Sink::Leaves { active: None, .. } => {}
            Sink::Bitfield { .. } => {
                c.bitfield_in = true;
                let partial = !c.holds_all();
                if let (Some(slot), true) = (c.file, partial) {
                    let all = [ChunkRange {
                        start: 0,
                        end: c.remote_has.len(),
                    }];
                    self.prefer_swarm(slot, &all);
                }
            }
            Sink::Hashes { slot, hasher, .. } => {
                if let Some((s, header)) = self.pending_header.take() {
                    if s == slot {
                        self.finish_manifest(slot, hasher, header);
                    }
                }
            }
        }
    }
}
