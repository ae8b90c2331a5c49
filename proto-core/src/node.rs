//! One interface over both node kinds, for adapters.

use core::net::SocketAddr;

use crate::conn::{ConnId, TableFull};
use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::manifest::ChunkHash;
use crate::peer::{Peer, PeerAction, PeerEvent};
use crate::storage::StorageKey;
use crate::time::Instant;
use crate::tracker::{Action, Tracker, TrackerEvent};

/// What an adapter needs of a node, whichever it is: the same calls for a [`Tracker`] and a
/// [`Peer`], so one driver loop runs either. Each method is the node's own `handle_*` or
/// `poll_*` of the same name; the contract is theirs (drain after every input).
pub trait Node {
    /// The node's events.
    type Event;
    /// See `handle_accept` on the node.
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull>;
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
    /// See `poll_transmit`.
    fn transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit>;
    /// See `poll_action`; the tracker's actions are a subset of the peer's.
    fn action(&mut self) -> Option<PeerAction>;
    /// See `poll_event`.
    fn event(&mut self) -> Option<Self::Event>;
    /// See `poll_timeout`.
    fn next_timeout(&self) -> Instant;
}

/// Nodes are large fixed-size structs; a host keeps them on the heap.
#[cfg(feature = "std")]
impl<N: Node + ?Sized> Node for std::boxed::Box<N> {
    type Event = N::Event;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull> {
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
    fn transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        (**self).transmit(buf)
    }
    fn action(&mut self) -> Option<PeerAction> {
        (**self).action()
    }
    fn event(&mut self) -> Option<N::Event> {
        (**self).event()
    }
    fn next_timeout(&self) -> Instant {
        (**self).next_timeout()
    }
}

impl<const C: usize, const F: usize, const H: usize, const W: usize> Node for Tracker<C, F, H, W> {
    type Event = TrackerEvent;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull> {
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
    fn transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        self.poll_transmit(buf)
    }
    fn action(&mut self) -> Option<PeerAction> {
        self.poll_action().map(|a| match a {
            Action::Close(c) => PeerAction::Close(c),
            Action::Discard(k) => PeerAction::Discard(k),
        })
    }
    fn event(&mut self) -> Option<TrackerEvent> {
        self.poll_event()
    }
    fn next_timeout(&self) -> Instant {
        self.poll_timeout()
    }
}

impl<const C: usize, const F: usize, const W: usize, const A: usize> Node for Peer<C, F, W, A> {
    type Event = PeerEvent;
    fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TableFull> {
        self.handle_accept(now, remote)
    }
    fn connected(&mut self, now: Instant, conn: ConnId) {
        self.handle_connected(now, conn)
    }
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
    fn storage_failed(&mut self, now: Instant, key: StorageKey) {
        self.handle_storage_failed(now, key)
    }
    fn hash(&mut self, now: Instant, slot: u16, chunk: u32, hash: ChunkHash) {
        self.handle_hash(now, slot, chunk, hash)
    }
    fn transmit(&mut self, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit> {
        self.poll_transmit(buf)
    }
    fn action(&mut self) -> Option<PeerAction> {
        self.poll_action()
    }
    fn event(&mut self) -> Option<PeerEvent> {
        self.poll_event()
    }
    fn next_timeout(&self) -> Instant {
        self.poll_timeout()
    }
}
