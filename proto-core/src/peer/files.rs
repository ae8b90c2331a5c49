//! Files: the file table, what each file tells the tracker and its connections (the have log
//! and cursors), the periodic work of a fetch (locate, ask for the manifest, report what no one
//! holds, give up at the deadline), and manifest intake (hashes streamed to storage and checked
//! against the file id).

use super::*;

/// The chunks verified lately, so each connection (and the tracker) can be told in batches.
/// A reader that falls behind the log gets the whole bitfield again.
pub(super) struct HaveLog {
    pub(super) entries: Deque<u32, HAVE_LOG>,
    /// Sequence number of `entries[0]`.
    pub(super) head: u64,
}

impl HaveLog {
    pub(super) fn end(&self) -> u64 {
        self.head + self.entries.len() as u64
    }

    pub(super) fn push(&mut self, chunk: u32) {
        if self.entries.is_full() {
            self.entries.pop_front();
            self.head += 1;
        }
        // Room was made just above.
        let _ = self.entries.push_back(chunk);
    }

    /// Ranges of the chunks logged from `seq` on (merged where adjacent), and the sequence
    /// number after them; `None` if `seq` fell out of the log.
    pub(super) fn since(&self, seq: u64) -> Option<(Vec<ChunkRange, MAX_RANGES>, u64)> {
        if seq < self.head {
            return None;
        }
        let mut ranges: Vec<ChunkRange, MAX_RANGES> = Vec::new();
        let mut next = seq;
        for &c in self.entries.iter().skip((seq - self.head) as usize) {
            match ranges.last_mut() {
                Some(r) if r.end == c => r.end += 1,
                _ => {
                    if ranges
                        .push(ChunkRange {
                            start: c,
                            end: c + 1,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
            next += 1;
        }
        Some((ranges, next))
    }
}

/// How far one reader (the tracker, or a peer connection) has been told about our chunks: up
/// to `seq` in the have log, or, after falling behind it, everything held from `full_from` on.
#[derive(Clone, Copy, Debug)]
pub(super) struct HaveCursor {
    pub(super) seq: u64,
    pub(super) full_from: Option<u32>,
}

// No allocator to box the header into; one per file slot either way.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ManifestState {
    /// Not yet known: asked of the tracker at `asked` (if it was).
    Wanted {
        asked: Option<Instant>,
    },
    Known(ManifestHeader),
}

pub(super) struct File<const W: usize> {
    pub(super) id: FileId,
    pub(super) manifest: ManifestState,
    /// Being fetched (else shared whole).
    pub(super) fetching: bool,
    pub(super) have: ChunkBitmap<W>,
    /// Chunks taken: while fetching, those with an in-flight record; for a file shared whole,
    /// those offered once while super-seeding (see `seeding`).
    pub(super) busy: ChunkBitmap<W>,
    pub(super) log: HaveLog,
    /// Per tracker (bit `t`): it lists this file (its `NotFound` for it clears the bit
    /// until a locate there finds it).
    pub(super) tracker_knows: u8,
    /// What each tracker has been told of our chunks of this file.
    pub(super) tracker: [HaveCursor; MAX_TRACKERS],
    /// Per tracker (bit `t`): a publish of this file is due there.
    pub(super) publish_pending: u8,
    pub(super) next_locate: Instant,
    /// Delay before the next locate: starts short so a new swarm finds itself quickly, then
    /// doubles up to `locate_interval`.
    pub(super) locate_backoff: Duration,
    pub(super) located: bool,
    pub(super) unavailable_since: Option<Instant>,
    pub(super) unavailable_reported: u32,
    pub(super) started: Instant,
    pub(super) bytes_done: u64,
    /// Block bytes served from this file (for progress while seeding).
    pub(super) bytes_uploaded: u64,
    /// Connections of this file served at least one block.
    pub(super) peers_served: u16,
    /// Its stored hashes failed the id check: a `Discard` for them is due.
    pub(super) discard_hashes: bool,
    pub(super) rate: RateMeter,
    pub(super) user_locate: bool,
}

impl<const W: usize> File<W> {
    pub(super) fn header(&self) -> Option<&ManifestHeader> {
        match &self.manifest {
            ManifestState::Known(h) => Some(h),
            ManifestState::Wanted { .. } => None,
        }
    }

    pub(super) fn complete(&self) -> bool {
        self.header().is_some() && self.have.is_full()
    }
}

/// Bytes of the held chunks of a file.
pub(super) fn held_bytes<const W: usize>(f: &File<W>) -> u64 {
    let Some(h) = f.header() else {
        return 0;
    };
    let mut bytes = 0;
    let mut from = 0;
    while let Some(r) = f.have.next_range(from) {
        bytes += (r.start..r.end)
            .map(|c| u64::from(h.chunk_len(c)))
            .sum::<u64>();
        from = r.end;
    }
    bytes
}

impl HaveCursor {
    /// The next batch of held chunks this reader has not been told about, or `None`.
    pub(super) fn next<const W: usize>(
        &mut self,
        have: &crate::bitmap::ChunkBitmap<W>,
        log: &super::HaveLog,
    ) -> Option<Vec<ChunkRange, MAX_RANGES>> {
        if let Some(from) = self.full_from {
            let mut ranges: Vec<ChunkRange, MAX_RANGES> = Vec::new();
            let mut at = from;
            while let Some(r) = have.next_range(at) {
                if ranges.push(r).is_err() {
                    break;
                }
                at = r.end;
            }
            self.full_from = if ranges.is_full() { Some(at) } else { None };
            return (!ranges.is_empty()).then_some(ranges);
        }
        if self.seq >= log.end() {
            return None;
        }
        match log.since(self.seq) {
            Some((ranges, next)) => {
                self.seq = next;
                Some(ranges)
            }
            None => {
                // Fell out of the log: tell everything again.
                self.seq = log.end();
                self.full_from = Some(0);
                self.next(have, log)
            }
        }
    }
}

impl<const W: usize> Peer<'_, W> {
    pub(super) fn bitmap(&self, count: u32) -> Result<ChunkBitmap<W>, CommandError> {
        ChunkBitmap::new(count).map_err(|_| CommandError::TooManyChunks {
            max: Self::MAX_FILE_CHUNKS,
        })
    }

    /// Whether this peer keeps enough leaves per chunk in flight to fetch a file with this
    /// header; `Err` has the largest chunk it can fetch, in bytes.
    pub(super) fn can_verify(&self, header: &ManifestHeader) -> Result<(), u32> {
        let max = u32::from(self.config.max_chunk_blocks);
        if header.blocks_per_chunk() <= max {
            Ok(())
        } else {
            Err(max.saturating_mul(crate::manifest::BLOCK_SIZE))
        }
    }

    pub(super) fn new_file(
        &mut self,
        now: Instant,
        id: FileId,
        manifest: ManifestState,
        fetching: bool,
        have: ChunkBitmap<W>,
    ) -> Result<u16, CommandError> {
        self.enter(now);
        if let Some(slot) = self.slot_of(&id) {
            return Err(CommandError::AlreadyPresent(slot));
        }
        let slot = vacancy(&mut self.files, usize::from(self.config.max_files))
            .ok_or(CommandError::TooManyFiles)?;
        let count = have.len();
        let busy = self.bitmap(count)?;
        if self.by_id.insert(id, slot as u16).is_err() {
            return Err(CommandError::TooManyFiles);
        }
        self.files[slot] = Some(File {
            id,
            manifest,
            fetching,
            have,
            busy,
            log: HaveLog {
                entries: Deque::new(),
                head: 0,
            },
            tracker_knows: u8::MAX,
            tracker: [HaveCursor {
                seq: 0,
                full_from: None,
            }; MAX_TRACKERS],
            publish_pending: 0,
            next_locate: now,
            locate_backoff: FIRST_LOCATE_DELAY,
            located: false,
            unavailable_since: None,
            unavailable_reported: 0,
            started: now,
            bytes_done: 0,
            bytes_uploaded: 0,
            peers_served: 0,
            rate: RateMeter::new(now),
            user_locate: false,
            discard_hashes: false,
        });
        let slot = slot as u16;
        for t in 0..MAX_TRACKERS {
            if self.sessions[t].registered.is_some() {
                self.announce_file(t, slot);
            }
        }
        Ok(slot)
    }

    /// Chunks of `slot`'s file; 0 while its manifest is unknown.
    pub(super) fn chunk_count(&self, slot: u16) -> u32 {
        self.file(slot)
            .and_then(File::header)
            .map_or(0, ManifestHeader::chunk_count)
    }

    #[inline(never)]
    pub(super) fn file(&self, slot: u16) -> Option<&File<W>> {
        self.files.get(slot as usize)?.as_ref()
    }

    #[inline(never)]
    pub(super) fn file_mut(&mut self, slot: u16) -> Option<&mut File<W>> {
        self.files.get_mut(slot as usize)?.as_mut()
    }

    pub(super) fn slot_of(&self, id: &FileId) -> Option<u16> {
        self.by_id.get(id).copied()
    }

    /// Whether an open connection for `slot` offers `chunk` we can fetch: a remote holds it
    /// whole, or one is fetching it and our copy (if started) has not lost its source. A copy
    /// that lost its source is continued only from a whole holder (see `partial`), and a
    /// remote that started the chunk may have lost its own source too, without a word.
    pub(super) fn offered(&self, slot: u16, chunk: u32) -> bool {
        let orphan = self
            .active_index(slot, chunk)
            .and_then(|i| self.active[i].as_ref())
            .is_some_and(|a| !a.has_source());
        self.conns.iter().any(|(_, c)| {
            c.file == Some(slot)
                && c.is_open()
                && c.bitfield_in
                && c.remote_has.get(chunk)
                && (!orphan || c.holds_whole(chunk))
        })
    }

    /// Whether `node` is served a block of `slot`'s file for the first time (a heap-backed
    /// peer remembers whom it served; without a heap every connection served is new).
    pub(super) fn first_served(&mut self, slot: u16, node: NodeId) -> bool {
        #[cfg(feature = "alloc")]
        if usize::from(u16::MAX) > self.served.len() {
            return self.served.insert((slot, node));
        }
        let _ = (slot, node);
        true
    }

    pub(super) fn drop_file(&mut self, slot: u16) {
        for i in 0..self.conns.capacity() {
            if let Some(id) = self.conn_for(i, slot) {
                self.close_now(id);
            }
        }
        for a in self.active.iter_mut() {
            if a.as_ref().is_some_and(|a| a.slot == slot) {
                *a = None;
            }
        }
        for cand in self.candidates.iter_mut() {
            if cand.is_some_and(|c| c.slot == slot) {
                *cand = None;
            }
        }
        if let Some(f) = self.files.get_mut(slot as usize).and_then(Option::take) {
            // The trackers forget our holding at once, not when we disconnect: no getter is
            // sent here for it, and a file we were the last to hold is delisted.
            for tc in self.registered_trackers() {
                self.ctl(tc, Ctl::Abandon(f.id));
            }
            self.by_id.remove(&f.id);
            #[cfg(feature = "alloc")]
            self.served.retain(|(s, _)| *s != slot);
            // Its stored hashes go with the slot: a later file there writes its own.
            self.discards -= u16::from(f.discard_hashes);
            for t in 0..MAX_TRACKERS {
                self.publishes[t] -= u16::from(f.publish_pending & bit(t) != 0);
            }
        }
    }

    pub(super) fn fail_fetch(&mut self, slot: u16, reason: FetchFailure) {
        self.event(PeerEvent::FetchFailed { slot, reason });
        self.drop_file(slot);
    }

    /// Periodic work for one file: locate holders, ask for a missing manifest, report chunks
    /// no one holds, give up at the deadline.
    pub(super) fn file_tick(&mut self, slot: u16, now: Instant) {
        let interval = self.config.locate_interval;
        let deadline = self.config.fetch_deadline;
        let trackers = self.registered_trackers();
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        if !f.fetching || now < f.next_locate {
            return;
        }
        f.next_locate = now + f.locate_backoff;
        f.locate_backoff = f.locate_backoff.saturating_mul(2).min(interval);
        let id = f.id;
        let started = f.started;
        match f.manifest.clone() {
            ManifestState::Wanted { .. } => {
                if deadline.is_some_and(|d| now - started >= d) {
                    self.fail_fetch(slot, FetchFailure::ManifestNotFound);
                    return;
                }
                // One tracker is asked at a time (a manifest is the whole hash list); a
                // random one each time, so one that does not know the file is not asked
                // for ever.
                let pick = match trackers.len() {
                    0 | 1 => 0,
                    n => (self.rng.next_u64() % n as u64) as usize,
                };
                if let Some(&t) = trackers.get(pick) {
                    self.ask_manifest(slot, t);
                }
            }
            ManifestState::Known(_) => {
                // Every tracker may know other holders.
                for &t in &trackers {
                    self.ctl(t, Ctl::Locate(id));
                }
                self.check_unavailable(slot, now);
            }
        }
    }

    pub(super) fn check_unavailable(&mut self, slot: u16, now: Instant) {
        let mut missing = 0;
        let mut first = None;
        let mut from = 0;
        while let Some(r) = self.missing(slot, from) {
            missing += r.end - r.start;
            first.get_or_insert(r);
            from = r.end;
        }
        let connecting = self.conns.iter().any(|(_, c)| {
            c.file == Some(slot)
                && matches!(
                    c.link.phase,
                    Phase::Connecting { .. } | Phase::Handshake { .. }
                )
        });
        let deadline = self.config.fetch_deadline;
        let Some(f) = self.file_mut(slot) else {
            return;
        };
        let Some(first) = first.filter(|_| f.located && !connecting) else {
            if missing == 0 {
                f.unavailable_since = None;
                f.unavailable_reported = 0;
            }
            return;
        };
        let since = *f.unavailable_since.get_or_insert(now);
        let report = f.unavailable_reported != missing;
        f.unavailable_reported = missing;
        if report {
            self.event(PeerEvent::Unavailable {
                slot,
                missing,
                first,
            });
        }
        if deadline.is_some_and(|d| now - since >= d) {
            self.fail_fetch(slot, FetchFailure::Unavailable { missing });
        }
    }

    pub(super) fn start_manifest(&mut self, id: ConnId, file: FileId, header: ManifestHeader) {
        let Some(slot) = self.slot_of(&file) else {
            return;
        };
        let wanted = self
            .file(slot)
            .is_some_and(|f| matches!(f.manifest, ManifestState::Wanted { .. }));
        let receiving = self
            .conns
            .iter()
            .any(|(_, c)| matches!(&c.sink, Sink::Hashes { slot: s, .. } if *s == slot));
        // One manifest streams in at a time; another copy is read past and dropped.
        if !wanted || receiving || self.pending_header.is_some() {
            return;
        }
        let hasher = FileIdHasher::new(&header);
        if header.chunk_count() == 0 {
            self.finish_manifest(slot, hasher, header);
            return;
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.sink = Sink::Hashes {
                slot,
                hasher,
                offset: 0,
            };
        }
        // Keep the header until the hashes are checked.
        let now = self.now;
        if let Some(f) = self.file_mut(slot) {
            f.manifest = ManifestState::Wanted { asked: Some(now) };
        }
        self.pending_header = Some((slot, header));
    }

    pub(super) fn finish_manifest(
        &mut self,
        slot: u16,
        hasher: FileIdHasher,
        header: ManifestHeader,
    ) {
        let Some(f) = self.file(slot) else {
            return;
        };
        if hasher.finish() != Some(f.id) {
            if let Some(f) = self.file_mut(slot) {
                if !f.discard_hashes {
                    f.discard_hashes = true;
                    self.discards += 1;
                }
            }
            self.event(PeerEvent::ManifestRejected { slot });
            return;
        }
        if let Err(max) = self.can_verify(&header) {
            self.fail_fetch(slot, FetchFailure::ChunkTooLarge { max });
            return;
        }
        let count = header.chunk_count();
        let (Ok(have), Ok(busy)) = (self.bitmap(count), self.bitmap(count)) else {
            self.fail_fetch(
                slot,
                FetchFailure::TooManyChunks {
                    max: Self::MAX_FILE_CHUNKS,
                },
            );
            return;
        };
        let now = self.now;
        if let Some(f) = self.file_mut(slot) {
            f.have = have;
            f.busy = busy;
            f.manifest = ManifestState::Known(header.clone());
            f.next_locate = now;
            f.locate_backoff = FIRST_LOCATE_DELAY;
            f.located = false;
            f.started = now;
        }
        for t in self.registered_trackers() {
            self.ctl(t, Ctl::Join(slot));
        }
        // Peers dialled before the manifest was known (asked for it, or waiting) get our
        // bitfield now.
        for i in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(i) else {
                continue;
            };
            let waiting = self.conns.get(id).is_some_and(|c| {
                c.file == Some(slot)
                    && c.role == (Role::Peer { outgoing: true })
                    && c.is_open()
                    && !c.bitfield_out
            });
            if waiting {
                self.greet(id);
            }
        }
        let file = self.file(slot).map(|f| f.id).unwrap_or_default();
        self.event(PeerEvent::ManifestReceived { slot, file, header });
        if count == 0 {
            self.complete_file(slot);
        } else {
            self.file_tick(slot, now);
        }
    }
}
