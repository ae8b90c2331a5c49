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

impl<const C: usize, const F: usize, const H: usize, const W: usize> Tracker<C, F, H, W> {
    pub(super) fn start_publish(&mut self, id: ConnId, file: FileId, header: ManifestHeader) {
        let registered = self.conns.get(id).is_some_and(|c| c.registered.is_some());
        let mut target = Target::Skip;
        let refusal = if !registered {
            Some(PublishRefusal::NotRegistered)
        } else if header.chunk_count() > Self::MAX_FILE_CHUNKS {
            Some(PublishRefusal::TooManyChunks {
                max: Self::MAX_FILE_CHUNKS,
            })
        } else if let Some(slot) = self.listed_slot(&file) {
            target = Target::Known(slot);
            None
        } else if let Some(slot) = self.files.iter().position(|f| matches!(f, FileState::Free)) {
            target = Target::New(slot as u16);
            self.files[slot] = FileState::Pending(header.clone());
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
                let FileState::Pending(header) = &self.files[slot as usize] else {
                    return;
                };
                let taken = self.files.iter().find_map(|f| match f {
                    FileState::Listed(other, h) if h.name == header.name => Some(*other),
                    _ => None,
                });
                if let Some(existing) = taken {
                    self.abandon_slot(rx.target);
                    self.refuse_publish(id, rx.file, PublishRefusal::NameTaken { existing });
                    return;
                }
                self.files[slot as usize] = FileState::Listed(rx.file, header.clone());
                (slot, true)
            }
            _ => (slot, false),
        };
        let FileState::Listed(_, header) = &self.files[slot as usize] else {
            return;
        };
        let (name, size, count) = (header.name.clone(), header.size, header.chunk_count());
        let Some(h) = self.holding_mut_or_insert(id, slot, count) else {
            // No room to record the holder: the publish cannot be honoured.
            self.event(TrackerEvent::Overloaded(Table::Holdings));
            self.refuse_publish(id, rx.file, PublishRefusal::TrackerFull);
            self.delist_if_incomplete(slot);
            return;
        };
        h.chunks.fill();
        // Only registered connections get this far (start_publish refuses the others).
        let Some(by) = self.conns.get(id).and_then(|c| c.registered) else {
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
            if matches!(self.files[slot as usize], FileState::Pending(_)) {
                self.files[slot as usize] = FileState::Discard;
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
        let count = match &self.files[slot as usize] {
            FileState::Listed(_, header) => header.chunk_count(),
            _ => return,
        };
        if ranges.iter().any(|r| r.start >= r.end || r.end > count) {
            self.misbehaved(id, Offence::BadRange);
            return;
        }
        let Some(h) = self.holding_mut_or_insert(id, slot, count) else {
            self.event(TrackerEvent::Overloaded(Table::Holdings));
            return;
        };
        for r in ranges {
            h.chunks.set_range(*r);
        }
    }

    pub(super) fn holding_mut_or_insert(
        &mut self,
        conn: ConnId,
        slot: u16,
        count: u32,
    ) -> Option<&mut Holding<W>> {
        let index = match self
            .holdings
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.conn == conn && h.slot == slot))
        {
            Some(i) => i,
            None => {
                let i = self.holdings.iter().position(Option::is_none)?;
                self.holdings[i] = Some(Holding {
                    conn,
                    slot,
                    chunks: ChunkBitmap::new(count).ok()?,
                });
                i
            }
        };
        self.holdings[index].as_mut()
    }

    pub(super) fn delist_if_incomplete(&mut self, slot: u16) {
        let FileState::Listed(file, header) = &self.files[slot as usize] else {
            return;
        };
        let complete = self
            .holdings
            .iter()
            .flatten()
            .any(|h| h.slot == slot && h.chunks.is_full());
        if complete {
            return;
        }
        let (file, name) = (*file, header.name.clone());
        for h in self.holdings.iter_mut() {
            if h.as_ref().is_some_and(|h| h.slot == slot) {
                *h = None;
            }
        }
        self.files[slot as usize] = FileState::Discard;
        self.pending_actions += 1;
        self.event(TrackerEvent::Delisted { file, name });
    }

    pub(super) fn listed_slot(&self, file: &FileId) -> Option<u16> {
        self.files
            .iter()
            .position(|f| matches!(f, FileState::Listed(id, _) if id == file))
            .map(|i| i as u16)
    }
}
