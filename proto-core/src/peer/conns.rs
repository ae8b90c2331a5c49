//! Per-connection state: what a peer keeps for each connection beside its [`Link`] (the
//! control queue, the request pipeline, the serve queue, the remote's chunks), and the one
//! teardown path every closing connection goes through.

use super::*;

/// How a connection ends (see [`Peer::teardown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The socket is gone.
    Lost,
    /// We close it now.
    Closed,
    /// We close it once its queued control frames are sent (a refusal, a `Leave`).
    Flushed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Tracker `n` of the config's trackers.
    Tracker(u8),
    Peer {
        outgoing: bool,
    },
}

impl Role {
    pub(super) fn is_peer(self) -> bool {
        matches!(self, Role::Peer { .. })
    }
}

/// A control frame waiting to be sent; rendered when polled.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ctl {
    Hello,
    /// Our swarm-key proof, made from the connection's nonces when sent.
    Auth,
    Refused(Refusal),
    Register,
    Ping(u32),
    Pong(u32),
    /// A tracker's pong: [`Message::Report`] with our totals, read when sent.
    Report(u32),
    /// Tell a tracker we dropped a file.
    Abandon(FileId),
    Leave,
    Publish(u16),
    GetManifest(FileId),
    Locate(FileId),
    ListFiles,
    ListPeers,
    Bitfield(u16),
    /// An empty `Have` to the tracker: we fetch this file and take connections for it.
    Join(u16),
    NotFound(FileId),
    Manifest(u16),
    Reject(Blk, RejectReason),
    Cancel(Blk),
    /// Ask for a chunk's leaves.
    GetLeaves(u32),
    /// Send a chunk's leaves (or say we have none).
    Leaves(u32),
    /// Say we are fetching a chunk and serve its blocks as they come.
    Started(u32),
    /// Tell the remote where other peers of its file are (a sample, taken when sent).
    Peers,
}

/// Removes and returns the entry at `at` of `q`, keeping the others in order.
pub(super) fn take_at<T: Copy, const N: usize>(q: &mut Deque<T, N>, at: usize) -> Option<T> {
    let item = *q.iter().nth(at)?;
    let mut i = 0;
    q.retain(|_| {
        i += 1;
        i - 1 != at
    });
    Some(item)
}

/// A block of the file its connection is about. Queues keep these rather than [`BlockRef`]s:
/// the file id is the connection's, and leaving it out more than halves every queue entry
/// (which is most of a small peer's RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Blk {
    pub(super) chunk: u32,
    pub(super) offset: u32,
    pub(super) len: u32,
}

impl Blk {
    pub(super) fn of(b: &BlockRef) -> Self {
        Blk {
            chunk: b.chunk,
            offset: b.offset,
            len: b.len,
        }
    }

    /// The end of the block within its chunk.
    pub(super) fn end(&self) -> u32 {
        self.offset.saturating_add(self.len)
    }

    /// Whether `piece` may answer this request in part: it starts where the request does, is
    /// not longer, and ends either where the request does or on a 16 KiB block boundary of the
    /// chunk (so a request is answered in at most one piece per verified block, see
    /// [`Message::Block`](crate::wire::Message::Block)).
    pub(super) fn answered_by(&self, piece: &Blk) -> bool {
        piece.chunk == self.chunk
            && piece.offset == self.offset
            && piece.len > 0
            && piece.len <= self.len
            && (piece.len == self.len || piece.end().is_multiple_of(crate::manifest::BLOCK_SIZE))
    }

    /// What is left of this request once `piece` (see [`Blk::answered_by`]) has answered it.
    pub(super) fn after(&self, piece: &Blk) -> Blk {
        Blk {
            chunk: self.chunk,
            offset: piece.end(),
            len: self.len.saturating_sub(piece.len),
        }
    }

    /// Whether this block is what is left of `asked` once pieces of it went (or all of it).
    pub(super) fn is_rest_of(&self, asked: &Blk) -> bool {
        self.chunk == asked.chunk && self.offset >= asked.offset && self.end() == asked.end()
    }

    pub(super) fn in_file(self, file: FileId) -> BlockRef {
        BlockRef {
            file,
            chunk: self.chunk,
            offset: self.offset,
            len: self.len,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Req {
    pub(super) block: Blk,
    pub(super) sent: Option<Instant>,
}

/// Where the body after the current message goes.
pub(super) enum Sink {
    None,
    /// Block payload: into the in-flight chunk `active` (if accepted) at `file_offset`.
    Block {
        active: Option<usize>,
        slot: u16,
        chunk: u32,
        file_offset: u64,
    },
    /// A bitfield: byte `pos` is next.
    Bitfield {
        pos: u32,
    },
    /// The leaves of `chunk`: into chunk in flight `active` (if they were asked of this
    /// connection), byte `pos` next.
    Leaves {
        active: Option<usize>,
        slot: u16,
        chunk: u32,
        pos: u32,
    },
    /// Manifest hashes for `slot`, checked against its id as they stream.
    Hashes {
        slot: u16,
        hasher: FileIdHasher,
        offset: u64,
    },
}

pub(crate) struct Conn<const W: usize> {
    pub(super) link: Link,
    pub(super) role: Role,
    pub(super) sink: Sink,
    /// The file this peer connection is about.
    pub(super) file: Option<u16>,
    pub(super) ctl: Deque<Ctl, CTL_QUEUE>,
    pub(super) reqs: Deque<Req, REQ_QUEUE>,
    pub(super) serve: Deque<Blk, SERVE_QUEUE>,
    /// Chunks the remote holds, or is fetching and serves as it verifies them (`Started`).
    pub(super) remote_has: ChunkBitmap<W>,
    /// The latest chunks of `remote_has` the remote is still fetching (`Started`, no `Have`
    /// yet). A chunk of ours that lost its source is continued only from a remote that holds
    /// it whole: one fetching it might be waiting on us. (Older entries fall out; the stall
    /// timeout on waiting blocks covers those.)
    pub(super) partial: Vec<u32, PARTIALS>,
    /// Chunks the remote said it started (`Started`) and has not announced whole since: its
    /// availability counts them, so a full one holds the whole file only while this is 0.
    pub(super) started: u16,
    pub(super) bitfield_in: bool,
    pub(super) bitfield_out: bool,
    /// Our bitfield body being sent: slot and next byte.
    pub(super) bitfield_body: Option<(u16, u32)>,
    /// What this remote has been told of our chunks.
    pub(super) have: HaveCursor,
    pub(super) rate: RateMeter,
    pub(super) rtt: Option<Duration>,
    /// No new work before this (after a stall or a busy answer).
    pub(super) pause_until: Instant,
    pub(super) upload_slot: bool,
    pub(super) last_served: Instant,
    /// Block bytes received that were never asked for (beyond `cancelled`).
    pub(super) unsolicited: u64,
    /// Bytes of requests we cancelled after sending: their blocks may still come, honestly.
    pub(super) cancelled: u64,
    /// Ping rounds since we last told this remote of other peers (see `exchange`).
    pub(super) pex_out: u8,
    /// Ping rounds since we last took its word on other peers (`u8::MAX`: never).
    pub(super) pex_in: u8,
    /// We served it a block: counted once in its file's `peers_served`.
    pub(super) served: bool,
}

impl<const W: usize> HasLink for Conn<W> {
    fn link(&self) -> &Link {
        &self.link
    }
    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl<const W: usize> Conn<W> {
    /// The round trip measured on this connection, or 100 ms until one is.
    pub(super) fn rtt_or_guess(&self) -> Duration {
        self.rtt.unwrap_or(Duration::from_millis(100))
    }

    /// Whether the remote holds every chunk of the file, verified: its availability is full
    /// and none of it is a chunk it is still fetching.
    pub(super) fn holds_all(&self) -> bool {
        self.remote_has.is_full() && self.started == 0
    }

    /// The remote said it started `chunk` (`Started`): it offers the chunk, and is still
    /// fetching it (unless it offered it already).
    pub(super) fn started_chunk(&mut self, chunk: u32) {
        if self.remote_has.get(chunk) {
            return;
        }
        self.remote_has.set(chunk);
        self.started = self.started.saturating_add(1);
        if self.partial.is_full() {
            self.partial.remove(0);
        }
        let _ = self.partial.push(chunk);
    }

    /// The remote announced `ranges` whole (`Have`): a chunk of them it had offered already
    /// is one it started, and is no longer being fetched.
    pub(super) fn announced(&mut self, ranges: &[ChunkRange]) {
        for r in ranges {
            let known = r.end - r.start - self.remote_has.set_range(*r);
            self.started = self
                .started
                .saturating_sub(known.try_into().unwrap_or(u16::MAX));
        }
        self.partial
            .retain(|&k| !ranges.iter().any(|r| (r.start..r.end).contains(&k)));
    }

    /// The remote no longer offers `chunk` (it refused it, or has no leaves for it).
    pub(super) fn lost_chunk(&mut self, chunk: u32) {
        if self.remote_has.clear(chunk) {
            // A chunk it refuses was one it had started, not one it announced whole.
            self.started = self.started.saturating_sub(1);
        }
        self.partial.retain(|&k| k != chunk);
    }

    /// Whether the remote holds `chunk` whole, as far as we know: it offers it, and it is not
    /// one it started. Once more chunks are started than `partial` remembers, which ones is
    /// not known, and none counts as whole: continuing a chunk from a remote still fetching it
    /// can close a cycle of peers waiting on each other that only the stall timeout breaks
    /// (the simulator's `--crash 5` seed 3 stood still for 2.4 s that way).
    pub(super) fn holds_whole(&self, chunk: u32) -> bool {
        self.remote_has.get(chunk)
            && !self.partial.contains(&chunk)
            && usize::from(self.started) <= self.partial.len()
    }

    /// A connection with a fresh handshake nonce from `rng`.
    pub(super) fn new(
        role: Role,
        remote: SocketAddr,
        phase: Phase,
        now: Instant,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Self {
        let nonce = auth::nonce(rng);
        Conn {
            link: Link::new(remote, phase, crate::manifest::MAX_BODY_LEN, nonce, now),
            role,
            sink: Sink::None,
            file: None,
            ctl: Deque::new(),
            reqs: Deque::new(),
            serve: Deque::new(),
            remote_has: ChunkBitmap::new(0).unwrap_or_else(|_| unreachable_bitmap()),
            partial: Vec::new(),
            started: 0,
            bitfield_in: false,
            bitfield_out: false,
            bitfield_body: None,
            have: HaveCursor {
                seq: 0,
                full_from: None,
            },
            rate: RateMeter::new(now),
            rtt: None,
            pause_until: now,
            upload_slot: false,
            last_served: now,
            unsolicited: 0,
            cancelled: 0,
            pex_out: 0,
            pex_in: u8::MAX,
            served: false,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.link.is_open()
    }

    /// Our side of the swarm-key handshake.
    pub(super) fn side(&self) -> Side {
        match self.role {
            Role::Tracker(_) | Role::Peer { outgoing: true } => Side::Opener,
            Role::Peer { outgoing: false } => Side::Acceptor,
        }
    }

    /// The listen address of the remote, as others would reach it.
    pub(super) fn listen_addr(&self) -> SocketAddr {
        match (self.role, self.link.hello) {
            (Role::Peer { outgoing: false }, Some(h)) => {
                SocketAddr::new(self.link.remote.ip(), h.listen_port)
            }
            _ => self.link.remote,
        }
    }

    pub(super) fn in_flight_bytes(&self) -> u64 {
        self.reqs.iter().map(|r| u64::from(r.block.len)).sum()
    }
}

/// `ChunkBitmap::new(0)` cannot fail (0 chunks fit any capacity); this keeps the proof in one
/// place without an `unwrap`.
pub(super) fn unreachable_bitmap<const W: usize>() -> ChunkBitmap<W> {
    loop {
        if let Ok(b) = ChunkBitmap::new(0) {
            return b;
        }
    }
}

impl<const W: usize> Peer<'_, W> {
    /// The connection at table index `i` if it is about `slot` (callers walk the indices, so
    /// they may change the table as they go).
    pub(super) fn conn_for(&self, i: usize, slot: u16) -> Option<ConnId> {
        let id = self.conns.id_at(i)?;
        (self.conns.get(id)?.file == Some(slot)).then_some(id)
    }

    pub(super) fn file_conns(&self, slot: u16) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.file == Some(slot) && !matches!(c.link.phase, Phase::Closing | Phase::Closed)
            })
            .count()
    }

    /// The socket of `id` is gone (closed by the remote, reset, a connect that failed).
    pub(super) fn forget_conn(&mut self, id: ConnId) {
        self.teardown(id, End::Lost);
    }

    /// We end `id` now, sending nothing more.
    pub(super) fn close_now(&mut self, id: ConnId) {
        self.teardown(id, End::Closed);
    }

    /// The one way a connection ends: its work moves elsewhere, its upload slot is freed, and
    /// what it was for hears of it. What differs by [`End`]:
    ///
    /// | | `Lost` (the socket is gone) | `Closed`, `Flushed` (we close it) |
    /// |---|---|---|
    /// | the slot | freed now | freed once `Action::Close` is handed out (`Flushed`: after the queued control frames) |
    /// | the tracker | retry after the backoff plus up to a quarter of it at random, so a fleet that lost its tracker does not come back at once; `TrackerLost` if registered or still wanted | retry after the backoff; `TrackerLost` unless leaving |
    /// | a candidate | one more failure: retry after 2^failures s (at most 32 s); if the connection had been established, 2^failures × 125 ms (at most 4 s) | not its fault: retry after 2 s |
    /// | `PeerLost` | if either side's bitfield went out | if the remote's bitfield came in |
    ///
    /// A connection the adapter was never asked to open is `Lost` whatever the cause: there is
    /// no socket to close. A connection is torn down once: a later teardown (a ban after a
    /// refusal, the adapter reporting the socket gone while we flush) only settles its slot.
    pub(super) fn teardown(&mut self, id: ConnId, end: End) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if matches!(c.link.phase, Phase::Closing | Phase::Closed) {
            // Torn down already: only what becomes of the slot is left to decide.
            self.settle(id, end);
            return;
        }
        self.release_work(id, false);
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.upload_slot {
            c.upload_slot = false;
            self.slots_used -= 1;
        }
        let end = if matches!(c.link.phase, Phase::Connecting { asked: false }) {
            End::Lost
        } else {
            end
        };
        let (role, file, addr) = (c.role, c.file, c.listen_addr());
        // The remote accepted the connection and later dropped it: most often a full table
        // making room for a newcomer (at the start of a big swarm every peer dials dozens at
        // once), or a peer that left; a dead host fails its next connect and backs off then.
        let dropped = end == End::Lost && !matches!(c.link.phase, Phase::Connecting { .. });
        let opened = match end {
            End::Lost => c.bitfield_in || c.bitfield_out,
            End::Closed | End::Flushed => c.bitfield_in,
        };
        self.settle(id, end);
        match role {
            Role::Tracker(t) => self.tracker_lost(usize::from(t), end),
            Role::Peer { .. } => {
                for place in self.candidates.iter_mut() {
                    let Some(cand) = place.as_mut().filter(|c| c.conn == Some(id)) else {
                        continue;
                    };
                    cand.conn = None;
                    let backoff = match end {
                        // One dropped once connected (see `dropped`) starts sooner, and backs
                        // off all the same, so a remote that keeps dropping us is not hammered.
                        End::Lost => {
                            cand.failures = cand.failures.saturating_add(1);
                            let first = if dropped {
                                DROPPED_RETRY
                            } else {
                                Duration::from_secs(1)
                            };
                            first.saturating_mul(1 << cand.failures.min(5))
                        }
                        End::Closed | End::Flushed => Duration::from_secs(2),
                    };
                    cand.retry_at = self.now + backoff;
                    // An address only heard of goes after a second failure: a tracker
                    // re-tells its holders, and a peer lying in exchange gets two tries of ours
                    // per address at most.
                    if cand.node.is_none() && !cand.kept && cand.failures >= HINT_TRIES {
                        *place = None;
                    }
                }
                if let (Some(slot), true) = (file, opened) {
                    self.event(PeerEvent::PeerLost { slot, addr });
                }
                // Its offers, if it was super-seeded, are no longer outstanding: they go to
                // others.
                if let Some(slot) = file {
                    self.withdraw_offers(id, slot);
                    self.end_offers(slot);
                }
            }
        }
    }

    /// What becomes of the slot of a connection that ends: freed now (`Lost`), or left to
    /// report its close through `poll_output`, at once (`Closed`) or after its queued control
    /// frames (`Flushed`). Blocks it was to serve are dropped either way.
    fn settle(&mut self, id: ConnId, end: End) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.serve.clear();
        match end {
            End::Lost => {
                self.conns.remove(id);
            }
            End::Closed => {
                c.link.phase = Phase::Closed;
                c.ctl.clear();
            }
            End::Flushed if c.ctl.is_empty() => c.link.phase = Phase::Closed,
            End::Flushed => c.link.phase = Phase::Closing,
        }
    }

    pub(super) fn close_after_flush(&mut self, id: ConnId) {
        self.teardown(id, End::Flushed);
    }

    pub(super) fn check_handshakes(&mut self, now: Instant) {
        for i in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(i) else {
                continue;
            };
            let late = self.conns.get(id).is_some_and(
                |c| matches!(c.link.phase, Phase::Handshake { deadline } if deadline <= now),
            );
            if late {
                self.close_now(id);
            }
        }
    }

    /// Every open connection that left `max_missed_pings` pings in a row unanswered is
    /// closed; every other one is pinged.
    pub(super) fn ping_round(&mut self, now: Instant) {
        self.next_ping = now + self.config.ping_interval;
        self.refill_hints();
        let max = self.config.max_missed_pings;
        for i in 0..self.conns.capacity() {
            match self.conns.ping_turn(i, max, &mut self.ping_nonce) {
                Some(PingTurn::Dead(id)) => self.close_now(id),
                Some(PingTurn::Ping(id, n)) => {
                    let queued = self
                        .conns
                        .get_mut(id)
                        .is_some_and(|c| c.ctl.push_back(Ctl::Ping(n)).is_ok());
                    if queued {
                        self.conns.pinged(id);
                    }
                    self.exchange_round(id);
                }
                None => {}
            }
        }
    }

    pub(super) fn release_idle_slots(&mut self, now: Instant) {
        for (_, c) in self.conns.iter_mut() {
            if c.upload_slot && c.serve.is_empty() && now - c.last_served >= SLOT_IDLE {
                c.upload_slot = false;
                self.slots_used -= 1;
            }
        }
    }

    pub(super) fn ctl(&mut self, id: ConnId, ctl: Ctl) {
        if let Some(c) = self.conns.get_mut(id) {
            // Remote-driven replies are bounded by backpressure in handle_recv (a full queue
            // stops reading); our own control frames are few. A frame that still does not fit
            // is one we can do without (a ping, a cancel) or will redo on the next tick.
            let _ = c.ctl.push_back(ctl);
        }
    }

    /// The slot of `file` if it is what connection `id` is about.
    pub(super) fn conn_slot(&self, id: ConnId, file: &FileId) -> Option<u16> {
        let slot = self.conns.get(id)?.file?;
        (self.file(slot)?.id == *file).then_some(slot)
    }
}
