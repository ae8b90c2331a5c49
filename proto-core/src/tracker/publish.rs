//! Publishing and holdings: a publish's hashes streamed to storage and checked against the
//! file id, the file table, who holds which chunks (have-updates), and delisting when the last
//! complete holder goes.

use super::*;

/// Where a publish's body (the chunk hashes) goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// A new file: hashes are written to this pending slot.
    New(u16),
    /// Already listed in this slot: hashes are only checked.
    Known(u16),
    /// Refused before the body: it is read and dropped.
    Skip,
}

pub(super) struct PublishRx {
    pub(super) file: FileId,
    pub(super) hasher: FileIdHasher,
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) storage_failed: bool,
}

impl Tracker<'_> {
    pub(super) fn start_publish(&mut self, id: ConnId, file: FileId, header: ManifestHeader) {
        let registered = self.conns.get(id).is_some_and(|c| c.registered().is_some());
        let mut target = Target::Skip;
        let refusal = if !registered {
            Some(PublishRefusal::NotRegistered)
        } else if header.chunk_count() > self.config.max_chunks {
            Some(PublishRefusal::TooManyChunks {
                max: self.config.max_chunks,
            })
        } else if let Some(slot) = self.listed_slot(&file) {
            target = Target::Known(slot);
            None
        } else if let Ok(id) = self.files.insert(FileState::Pending(header.clone())) {
            target = Target::New(id.index() as u16);
            None
        } else {
            Some(PublishRefusal::TrackerFull)
        };
        if let Some(reason) = refusal {
            self.refuse_publish(id, file, reason);
        }
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        // The decoder has validated the header; the body (if any) follows.
        c.publish = Some(PublishRx {
            file,
            hasher: FileIdHasher::new(&header),
            target,
            offset: 0,
            storage_failed: false,
        });
        if header.chunk_count() == 0 {
            self.finish_publish(id);
        }
    }

    pub(super) fn on_publish_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>> {
        let c = self.conns.get_mut(id)?;
        let rx = c.publish.as_mut()?;
        rx.hasher.update(data);
        let offset = rx.offset;
        rx.offset += data.len() as u64;
        let write = match rx.target {
            Target::New(slot) if !rx.storage_failed => Some(StorageWrite {
                key: hashes_key(slot),
                offset,
                data,
            }),
            _ => None,
        };
        if remaining == 0 {
            self.finish_publish(id);
        }
        write
    }

    pub(super) fn finish_publish(&mut self, id: ConnId) {
        let Some(rx) = self.conns.get_mut(id).and_then(|c| c.publish.take()) else {
            return;
        };
        let computed = rx.hasher.finish();
        let slot = match rx.target {
            Target::Skip => return,
            Target::New(slot) | Target::Known(slot) => slot,
        };
        let refusal = if computed != Some(rx.file) {
            Some(PublishRefusal::IdMismatch)
        } else if rx.storage_failed {
            Some(PublishRefusal::StorageFailed)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.abandon_slot(rx.target);
            self.refuse_publish(id, rx.file, reason);
            return;
        }
        let (slot, first) = match rx.target {
            // Someone else finished publishing the same file first: join it.
            Target::New(_) if self.listed_slot(&rx.file).is_some() => {
                self.abandon_slot(rx.target);
                (self.listed_slot(&rx.file).unwrap_or(slot), false)
            }
            Target::New(slot) => {
                // Files are told apart by id alone: two files may share a name.
                let Some(FileState::Pending(header)) = self.file(slot) else {
                    return;
                };
                let header = header.clone();
                if self.by_id.insert(rx.file, slot).is_err() {
                    self.abandon_slot(rx.target);
                    self.refuse_publish(id, rx.file, PublishRefusal::TrackerFull);
                    return;
                }
                if let Some(f) = self.file_mut(slot) {
                    *f = FileState::Listed(Listed {
                        file: rx.file,
                        header,
                        complete: 0,
                        holders: 0,
                        locate_from: 0,
                    });
                }
                (slot, true)
            }
            // Listed when the publish began; if it was delisted since, its slot may hold
            // another file now, and this one has no stored hashes to list it with.
            _ => match self.listed_slot(&rx.file) {
                Some(slot) => (slot, false),
                None => return,
            },
        };
        let Some(FileState::Listed(l)) = self.file(slot) else {
            return;
        };
        let (name, size, count) = (l.header.name.clone(), l.header.size, l.header.chunk_count());
        if !self.hold(
            id,
            slot,
            count,
            &[ChunkRange {
                start: 0,
                end: count,
            }],
        ) {
            // No room to record the holder: the publish cannot be honoured.
            self.event(TrackerEvent::Overloaded(Table::Holdings));
            self.refuse_publish(id, rx.file, PublishRefusal::TrackerFull);
            self.delist_if_incomplete(slot);
            return;
        }
        // Only registered connections get this far (start_publish refuses the others).
        let Some(by) = self.conns.get(id).and_then(|c| c.registered()) else {
            return;
        };
        self.reply(id, Reply::Published(rx.file));
        self.event(TrackerEvent::Published {
            file: rx.file,
            name,
            size,
            by,
            first,
        });
    }

    pub(super) fn refuse_publish(&mut self, id: ConnId, file: FileId, reason: PublishRefusal) {
        self.reply(id, Reply::PublishRefused(file, reason));
        self.event(TrackerEvent::PublishRefused { file, reason });
    }

    /// A pending slot whose publish failed or was overtaken: its stored hashes are discarded.
    pub(super) fn abandon_slot(&mut self, target: Target) {
        if let Target::New(slot) = target {
            if let Some(f @ FileState::Pending(_)) = self.file_mut(slot) {
                *f = FileState::Discard;
                self.pending_actions += 1;
            }
        }
    }

    pub(super) fn abandon_publish(&mut self, id: ConnId) {
        if let Some(rx) = self.conns.get_mut(id).and_then(|c| c.publish.take()) {
            self.abandon_slot(rx.target);
        }
    }

    pub(super) fn have(&mut self, id: ConnId, file: FileId, ranges: &[ChunkRange]) {
        let Some(slot) = self.listed_slot(&file) else {
            self.reply(id, Reply::NotFound(file));
            return;
        };
        let Some(FileState::Listed(l)) = self.file(slot) else {
            return;
        };
        let count = l.header.chunk_count();
        if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        if !self.hold(id, slot, count, ranges) {
            self.event(TrackerEvent::Overloaded(Table::Holdings));
        }
    }

    /// Records that `id` holds `ranges` of the file in `slot` (of `count` chunks), making a
    /// holding if it has none; false if there is no room for one. O(log n) plus the ranges.
    pub(super) fn hold(
        &mut self,
        id: ConnId,
        slot: u16,
        count: u32,
        ranges: &[ChunkRange],
    ) -> bool {
        let ix = id.index() as u16;
        let (mut h, was_full) = match self.holders.get(&(slot, ix)) {
            Some(h) => (*h, h.is_full()),
            None => {
                let Some(piece) = self.bits.take() else {
                    return false;
                };
                let h = Holding {
                    generation: id.generation(),
                    piece,
                    count: 0,
                    len: count,
                };
                if self.holders.insert((slot, ix), h).is_err()
                    || self.held.insert((ix, slot), ()).is_err()
                {
                    self.holders.remove(&(slot, ix));
                    self.bits.give(piece);
                    return false;
                }
                if let Some(FileState::Listed(l)) = self.file_mut(slot) {
                    l.holders += 1;
                }
                (h, false)
            }
        };
        let words = self.bits.words_mut(h.piece);
        for r in ranges {
            for i in r.start..r.end.min(h.len) {
                h.count += u32::from(bitmap::set(words, h.len, i));
            }
        }
        if let Some(stored) = self.holders.get_mut(&(slot, ix)) {
            *stored = h;
        }
        if h.is_full() && !was_full {
            if let Some(FileState::Listed(l)) = self.file_mut(slot) {
                l.complete += 1;
            }
        }
        true
    }

    /// Removes the holding of connection index `ix` in the file in `slot`.
    pub(super) fn drop_holding(&mut self, slot: u16, ix: u16) {
        self.held.remove(&(ix, slot));
        let Some(h) = self.holders.remove(&(slot, ix)) else {
            return;
        };
        self.bits.give(h.piece);
        if let Some(FileState::Listed(l)) = self.file_mut(slot) {
            l.holders -= 1;
            l.complete -= u32::from(h.is_full());
        }
    }

    pub(super) fn delist_if_incomplete(&mut self, slot: u16) {
        let Some(FileState::Listed(l)) = self.file(slot) else {
            return;
        };
        if l.complete > 0 {
            return;
        }
        let (file, name) = (l.file, l.header.name.clone());
        while let Some(&(_, ix)) = self
            .holders
            .range((slot, 0)..=(slot, u16::MAX))
            .next()
            .map(|(k, _)| k)
        {
            self.drop_holding(slot, ix);
        }
        self.by_id.remove(&file);
        if let Some(f) = self.file_mut(slot) {
            *f = FileState::Discard;
        }
        self.pending_actions += 1;
        self.event(TrackerEvent::Delisted { file, name });
    }

    pub(super) fn listed_slot(&self, file: &FileId) -> Option<u16> {
        self.by_id.get(file).copied()
    }

    pub(super) fn file(&self, slot: u16) -> Option<&FileState> {
        self.files.get(self.files.id_at(usize::from(slot))?)
    }

    pub(super) fn file_mut(&mut self, slot: u16) -> Option<&mut FileState> {
        let id = self.files.id_at(usize::from(slot))?;
        self.files.get_mut(id)
    }
}
