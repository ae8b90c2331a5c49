//! One interface over both node kinds, for adapters, and the storage half of every driver.
//!
//! A driver feeds a [`Node`] its inputs and carries out its outputs. Everything about storage
//! is the same on every adapter, so it is written here once: [`Node::recv_stored`] stores what
//! `handle_recv` hands back, and [`Node::poll_stored`] answers hash reads and discards from
//! storage and journals events, handing the adapter only what concerns the network and the
//! user.

use core::net::SocketAddr;

use crate::conn::{Accepted, ConnId, TableFull};
use crate::io::{Action, BlockTicket, Output, Recv, FRAME_BUF_LEN};
use crate::manifest::{ChunkHash, HASH_LEN};
use crate::peer::{Peer, PeerEvent};
use crate::storage::{Region, Storage, StorageKey};
use crate::time::Instant;
use crate::tracker::{Tracker, TrackerEvent};

/// What an adapter needs of a node, whichever it is: the same calls for a [`Tracker`] and a
/// [`Peer`], so one driver loop runs either. Each method is the node's own `handle_*` or
/// `poll_output`; the contract is theirs: after every input, drain `poll_output` until
/// [`Output::Timeout`].
pub trait Node {
    /// The node's events.
    type Event;
    /// See `handle_accept` on the node.
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<Accepted, TableFull>;
    /// See `handle_connected` (peers only).
    fn connected(&mut self, now: Instant, conn: ConnId);
    /// See `handle_recv`.
    fn recv<'a>(&mut self, now: Instant, conn: ConnId, data: &'a [u8]) -> Recv<'a>;
    /// See `handle_closed`.
    fn closed(&mut self, now: Instant, conn: ConnId);
    /// See `handle_timeout`.
    fn timeout(&mut self, now: Instant);
    /// See `handle_send_blocked` / `handle_send_ready`.
    fn send_blocked(&mut self, conn: ConnId, blocked: bool);
    /// See `handle_storage_failed`.
    fn storage_failed(&mut self, now: Instant, key: StorageKey);
    /// See `handle_hash` (peers only).
    fn hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash);
    /// See `handle_block_hash` (peers only): false if not taken yet.
    #[must_use = "a digest not taken must be handed again after draining"]
    fn block_hash(&mut self, now: Instant, ticket: BlockTicket, digest: [u8; HASH_LEN]) -> bool;
    /// See `poll_output`.
    fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<Self::Event>;

    /// Records in `store` what `event` changes about what must survive a restart.
    fn journal<S: Storage + ?Sized>(
        event: &Self::Event,
        store: &mut S,
    ) -> Result<(), (StorageKey, S::Error)>;

    /// One `handle_recv` with its storage write carried out: returns the bytes consumed and
    /// whether anything was written. A failed write is reported to the node (which gives up
    /// the fetch) and handed to `on_error`.
    #[inline(always)]
    fn recv_stored<S: Storage + ?Sized>(
        &mut self,
        now: Instant,
        conn: ConnId,
        input: &[u8],
        store: &mut S,
        on_error: &mut dyn FnMut(StorageKey, S::Error),
    ) -> (usize, bool) {
        let r = self.recv(now, conn, input);
        let Some(w) = r.write else {
            return (r.consumed, false);
        };
        if let Err(e) = store.write(w.key, w.offset, w.data) {
            on_error(w.key, e);
            self.storage_failed(now, w.key);
        }
        (r.consumed, true)
    }

    /// `poll_output`, with the storage actions carried out on `store` and every event
    /// journalled in it before it is handed out. What is left for the adapter is frames,
    /// [`Action::Connect`], [`Action::Close`], [`Action::HashBlock`] (the adapter chose where
    /// blocks are hashed; [`hash_stored`] does it here and now), events and the timeout. A
    /// storage failure is reported to the node and handed to `on_error`.
    fn poll_stored<S: Storage + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut S,
        buf: &mut [u8; FRAME_BUF_LEN],
        on_error: &mut dyn FnMut(StorageKey, S::Error),
    ) -> Output<Self::Event> {
        loop {
            match self.poll_output(buf) {
                Output::Action(Action::ReadHash { key, chunk }) => {
                    let mut h = [0u8; HASH_LEN];
                    match store.read(key, u64::from(chunk) * HASH_LEN as u64, &mut h) {
                        Ok(HASH_LEN) => self.hash(now, key.slot, chunk, ChunkHash(h)),
                        Ok(_) => self.storage_failed(now, key),
                        Err(e) => {
                            on_error(key, e);
                            self.storage_failed(now, key);
                        }
                    }
                }
                Output::Action(Action::Discard(key)) => store.discard(key),
                Output::Event(e) => {
                    if let Err((key, err)) = Self::journal(&e, store) {
                        on_error(key, err);
                        self.storage_failed(now, key);
                    }
                    return Output::Event(e);
                }
                out => return out,
            }
        }
    }
}

/// Nodes are large structs; a host keeps them on the heap.
#[cfg(feature = "std")]
impl<N: Node + ?Sized> Node for std::boxed::Box<N> {
    type Event = N::Event;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<Accepted, TableFull> {
        (**self).accept(now, remote)
    }
    fn connected(&mut self, now: Instant, conn: ConnId) {
        (**self).connected(now, conn)
    }
    fn recv<'a>(&mut self, now: Instant, conn: ConnId, data: &'a [u8]) -> Recv<'a> {
        (**self).recv(now, conn, data)
    }
    fn closed(&mut self, now: Instant, conn: ConnId) {
        (**self).closed(now, conn)
    }
    fn timeout(&mut self, now: Instant) {
        (**self).timeout(now)
    }
    fn send_blocked(&mut self, conn: ConnId, blocked: bool) {
        (**self).send_blocked(conn, blocked)
    }
    fn storage_failed(&mut self, now: Instant, key: StorageKey) {
        (**self).storage_failed(now, key)
    }
    fn hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash) {
        (**self).hash(now, slot, chunk, hash)
    }
    fn block_hash(&mut self, now: Instant, ticket: BlockTicket, digest: [u8; HASH_LEN]) -> bool {
        (**self).block_hash(now, ticket, digest)
    }
    fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<N::Event> {
        (**self).poll_output(buf)
    }
    fn journal<S: Storage + ?Sized>(
        event: &N::Event,
        store: &mut S,
    ) -> Result<(), (StorageKey, S::Error)> {
        N::journal(event, store)
    }
}

impl Node for Tracker<'_> {
    type Event = TrackerEvent;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<Accepted, TableFull> {
        self.handle_accept(now, remote)
    }
    fn connected(&mut self, _: Instant, _: ConnId) {}
    fn recv<'a>(&mut self, now: Instant, conn: ConnId, data: &'a [u8]) -> Recv<'a> {
        self.handle_recv(now, conn, data)
    }
    fn closed(&mut self, now: Instant, conn: ConnId) {
        self.handle_closed(now, conn)
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn send_blocked(&mut self, conn: ConnId, blocked: bool) {
        if blocked {
            self.handle_send_blocked(conn)
        } else {
            self.handle_send_ready(conn)
        }
    }
    fn storage_failed(&mut self, _: Instant, key: StorageKey) {
        self.handle_storage_failed(key)
    }
    fn hash(&mut self, _: Instant, _: u16, _: u32, _: ChunkHash) {}
    fn block_hash(&mut self, _: Instant, _: BlockTicket, _: [u8; HASH_LEN]) -> bool {
        true
    }
    fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<TrackerEvent> {
        Tracker::poll_output(self, buf)
    }
    fn journal<S: Storage + ?Sized>(
        _: &TrackerEvent,
        _: &mut S,
    ) -> Result<(), (StorageKey, S::Error)> {
        // A tracker's state is soft: peers tell a restarted tracker everything again.
        Ok(())
    }
}

impl<'a, const W: usize> Node for Peer<'a, W> {
    type Event = PeerEvent;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<Accepted, TableFull> {
        self.handle_accept(now, remote)
    }
    fn connected(&mut self, now: Instant, conn: ConnId) {
        self.handle_connected(now, conn)
    }
    fn recv<'i>(&mut self, now: Instant, conn: ConnId, data: &'i [u8]) -> Recv<'i> {
        self.handle_recv(now, conn, data)
    }
    fn closed(&mut self, now: Instant, conn: ConnId) {
        self.handle_closed(now, conn)
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn send_blocked(&mut self, conn: ConnId, blocked: bool) {
        if blocked {
            self.handle_send_blocked(conn)
        } else {
            self.handle_send_ready(conn)
        }
    }
    fn storage_failed(&mut self, now: Instant, key: StorageKey) {
        self.handle_storage_failed(now, key)
    }
    fn hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash) {
        self.handle_hash(now, slot, chunk, hash)
    }
    fn block_hash(&mut self, now: Instant, ticket: BlockTicket, digest: [u8; HASH_LEN]) -> bool {
        self.handle_block_hash(now, ticket, digest)
    }
    fn poll_output(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Output<PeerEvent> {
        Peer::poll_output(self, buf)
    }
    fn journal<S: Storage + ?Sized>(
        event: &PeerEvent,
        store: &mut S,
    ) -> Result<(), (StorageKey, S::Error)> {
        let data = |slot| StorageKey {
            slot,
            region: Region::Data,
        };
        match event {
            PeerEvent::ManifestReceived { slot, file, header } => store
                .manifest_received(*slot, *file, header)
                .map_err(|e| (data(*slot), e)),
            PeerEvent::ChunkVerified { slot, chunk } => store
                .chunk_verified(*slot, *chunk)
                .map_err(|e| (data(*slot), e)),
            PeerEvent::FileComplete { slot } => {
                store.file_complete(*slot).map_err(|e| (data(*slot), e))
            }
            _ => Ok(()),
        }
    }
}

/// The SHA-256 of `len` bytes at `offset` of `key`, read from `store` a kilobyte at a time:
/// how an adapter with nowhere else to hash answers [`Action::HashBlock`] at once. `None` if
/// storage holds fewer bytes there.
pub fn hash_stored<S: Storage + ?Sized>(
    store: &mut S,
    key: StorageKey,
    offset: u64,
    len: u32,
) -> Result<Option<[u8; HASH_LEN]>, S::Error> {
    use sha2::{Digest, Sha256};
    let mut sha = Sha256::new();
    let mut buf = [0u8; 1024];
    let mut done = 0u64;
    while done < u64::from(len) {
        let want = (u64::from(len) - done).min(buf.len() as u64) as usize;
        let n = store.read(key, offset + done, &mut buf[..want])?;
        // A store that claims more than it was given room for is as wrong as a short one.
        let Some(piece) = buf.get(..n).filter(|_| n > 0) else {
            return Ok(None);
        };
        sha.update(piece);
        done += n as u64;
    }
    Ok(Some(sha.finalize().into()))
}
