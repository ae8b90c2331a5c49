//! The connection core shared by the tracker and the peer: handles and the slot table, the
//! state every connection has (`Link`: phase, frame decoder, hello, nonce, liveness), the
//! frame decode loop, the handshake and ping sweeps, the round-robin transmit and the event
//! queue. Each node keeps what is its own (replies, requests, files) beside a `Link`.

use core::fmt;
use core::net::SocketAddr;

use heapless::Deque;

use crate::auth::Nonce;
use crate::io::{Recv, Transmit, FRAME_BUF_LEN};
use crate::storage::StorageWrite;
pub(crate) use crate::table::{Slot, Slots, Store};
use crate::time::Instant;
use crate::wire::{FrameDecoder, FrameError, Hello, Item, Message};

/// An opaque handle for one connection, issued by the core.
///
/// It carries a generation, so a handle kept past its connection's close can never reach the
/// connection that later reuses the same slot: the core ignores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnId {
    index: u16,
    generation: u16,
}

impl ConnId {
    /// The slot index, dense from 0: adapters may use it to index their own tables.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// An id made by something that is not a core: a test harness playing a node by hand (the
    /// simulator's hostile peers) needs handles of the same type for its own connections. A
    /// core looks every id up in its own table, index and generation, so an id it did not hand
    /// out is simply ignored.
    pub const fn from_parts(index: u16, generation: u16) -> Self {
        ConnId { index, generation }
    }

    /// The slot's generation: which of its occupants this id names.
    pub(crate) fn generation(self) -> u16 {
        self.generation
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.index, self.generation)
    }
}

/// A protocol violation by a remote: either node cuts it off (a peer also counts a strike).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Offence {
    /// Its bytes did not decode.
    Frame(FrameError),
    /// A message not allowed now (before `Hello`, or one meant for the other kind of node).
    Unexpected,
    /// A chunk range or bitfield that does not fit the file.
    BadRange,
    /// Too many block bytes that were never asked for (peers only).
    Unsolicited,
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offence::Frame(e) => write!(f, "sent bytes that do not decode ({e})"),
            Offence::Unexpected => f.write_str("sent a message not allowed at that point"),
            Offence::BadRange => f.write_str("named chunks outside the file"),
            Offence::Unsolicited => f.write_str("sent too many blocks nobody asked for"),
        }
    }
}

/// The connection table is full; the adapter should refuse (close) the new socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table full")
    }
}

impl core::error::Error for TableFull {}

/// A connection was accepted, possibly in place of one that had done least (see each node's
/// admission rule).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "an evicted connection's socket must be closed now"]
pub struct Accepted {
    /// The new connection.
    pub conn: ConnId,
    /// A connection closed to make room: close its socket now. The core has already
    /// forgotten it, and no `Action::Close` follows for it.
    pub evicted: Option<ConnId>,
}

/// Visits table indices `0..len` starting at `*cursor` and wrapping; the first visit that
/// yields a value moves the cursor just past it, so the next round starts with the following
/// index and no connection can starve the others.
pub(crate) fn round_robin<T>(
    cursor: &mut usize,
    len: usize,
    mut visit: impl FnMut(usize) -> Option<T>,
) -> Option<T> {
    for step in 0..len {
        let index = (*cursor + step) % len;
        if let Some(t) = visit(index) {
            *cursor = (index + 1) % len;
            return Some(t);
        }
    }
    None
}

/// Where a connection stands; the same steps for both nodes (a tracker never dials, so its
/// connections start at `Handshake`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the adapter to connect; `asked` once the Connect action went out.
    Connecting { asked: bool },
    /// Connected, waiting for the remote's Hello (and, with a swarm key, its proof) until the
    /// deadline.
    Handshake { deadline: Instant },
    /// Carrying messages.
    Open,
    /// Send what is queued, then close.
    Closing,
    /// Report the close through `poll_output`, then free the slot.
    Closed,
}

/// What every connection has, whichever node holds it.
pub(crate) struct Link {
    /// The address the connection came from or goes to.
    pub(crate) remote: SocketAddr,
    pub(crate) phase: Phase,
    pub(crate) decoder: FrameDecoder,
    /// The remote's Hello, once received.
    pub(crate) hello: Option<Hello>,
    /// Our handshake nonce on this connection.
    pub(crate) nonce: Nonce,
    /// Pings in a row left unanswered.
    pub(crate) missed_pings: u8,
    /// When the remote last sent anything.
    pub(crate) last_rx: Instant,
    /// The adapter cannot take more output for it now.
    pub(crate) blocked: bool,
}

impl Link {
    /// A connection in `phase` with a frame decoder that allows bodies up to `max_body`.
    pub(crate) fn new(
        remote: SocketAddr,
        phase: Phase,
        max_body: u64,
        nonce: Nonce,
        now: Instant,
    ) -> Self {
        Link {
            remote,
            phase,
            decoder: FrameDecoder::new(max_body),
            hello: None,
            nonce,
            missed_pings: 0,
            last_rx: now,
            blocked: false,
        }
    }

    /// Whether the connection carries messages.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
}

/// A node's per-connection state: a [`Link`] and the node's own.
pub(crate) trait HasLink {
    fn link(&self) -> &Link;
    fn link_mut(&mut self) -> &mut Link;
}

impl<T: HasLink, S: Store<Slot<T>>> Slots<T, S> {
    /// The adapter can (`false`) or cannot (`true`) take more output for `id`; a blocked
    /// connection gets no frames.
    pub(crate) fn set_blocked(&mut self, id: ConnId, blocked: bool) {
        if let Some(c) = self.get_mut(id) {
            c.link_mut().blocked = blocked;
        }
    }

    /// Frees the slot of one connection whose close is due to be reported, and names it.
    pub(crate) fn take_closed(&mut self) -> Option<ConnId> {
        let id = self
            .iter()
            .find(|(_, c)| c.link().phase == Phase::Closed)
            .map(|(id, _)| id)?;
        self.remove(id);
        Some(id)
    }

    /// The ping round's verdict on table index `i`: nothing (no connection there, or not
    /// open), [`PingTurn::Dead`] (it left `max_missed` pings in a row unanswered: close it),
    /// or [`PingTurn::Ping`] with the next nonce (the node queues it, then calls
    /// [`Slots::pinged`] if it fit). Both nodes walk their tables with this.
    pub(crate) fn ping_turn(&self, i: usize, max_missed: u8, nonce: &mut u32) -> Option<PingTurn> {
        let id = self.id_at(i)?;
        let link = self.get(id)?.link();
        if link.phase != Phase::Open {
            return None;
        }
        if link.missed_pings >= max_missed {
            return Some(PingTurn::Dead(id));
        }
        *nonce = nonce.wrapping_add(1);
        Some(PingTurn::Ping(id, *nonce))
    }

    /// A ping was queued for `id`: one more unanswered, until its pong.
    pub(crate) fn pinged(&mut self, id: ConnId) {
        if let Some(c) = self.get_mut(id) {
            c.link_mut().missed_pings += 1;
        }
    }
}

/// What a ping round does with one connection (see [`Slots::ping_turn`]).
pub(crate) enum PingTurn {
    /// Too many pings unanswered: close it.
    Dead(ConnId),
    /// Ping it with this nonce.
    Ping(ConnId, u32),
}

/// Events kept for the adapter between drains; when full, newer ones are counted as lost.
pub(crate) struct EventQueue<E, const N: usize> {
    queue: Deque<E, N>,
    lost: u32,
}

impl<E, const N: usize> EventQueue<E, N> {
    pub(crate) const fn new() -> Self {
        EventQueue {
            queue: Deque::new(),
            lost: 0,
        }
    }

    pub(crate) fn push(&mut self, e: E) {
        if self.queue.push_back(e).is_err() {
            self.lost = self.lost.saturating_add(1);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<E> {
        self.queue.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Events that did not fit.
    pub(crate) fn lost(&self) -> u32 {
        self.lost
    }
}

/// The node side of the connection core: what the shared decode loop and transmit need.
pub(crate) trait Wire {
    /// The node's per-connection state.
    type Conn: HasLink;
    /// The memory of its connection table.
    type Store: Store<Slot<Self::Conn>>;
    /// The node's connection table.
    fn table(&self) -> &Slots<Self::Conn, Self::Store>;
    fn table_mut(&mut self) -> &mut Slots<Self::Conn, Self::Store>;
    /// The next frame for `id`, if it has one.
    fn next_frame(&mut self, id: ConnId, buf: &mut [u8; FRAME_BUF_LEN]) -> Option<Transmit>;
    /// Whether `id`'s replies (or the node's events) have room for what another message may
    /// queue; the loop stops reading while they have not (backpressure).
    fn may_read(&self, id: ConnId) -> bool;
    /// Input arrived on `id` (before it is decoded).
    fn on_input(&mut self, id: ConnId, now: Instant);
    fn on_message(&mut self, id: ConnId, msg: Message);
    fn on_body<'a>(
        &mut self,
        id: ConnId,
        data: &'a [u8],
        remaining: u64,
    ) -> Option<StorageWrite<'a>>;
    /// The most body bytes `on_body` may be handed at once on `id` (at least 1): a peer
    /// stops at each block boundary to verify the block before taking more.
    fn body_room(&self, id: ConnId) -> usize {
        let _ = id;
        usize::MAX
    }
    /// The remote's bytes did not decode: it is cut off.
    fn on_frame_error(&mut self, id: ConnId, e: FrameError);
}

/// The frame decode loop of `handle_recv`, for either node: decodes messages and bodies until
/// the input is used up, a body needs storing, or the node stops reading.
pub(crate) fn recv<'a, N: Wire + ?Sized>(
    node: &mut N,
    now: Instant,
    id: ConnId,
    input: &'a [u8],
) -> Recv<'a> {
    let mut used = 0;
    loop {
        let Some(l) = node.table_mut().get_mut(id).map(HasLink::link_mut) else {
            // A closed connection: whatever is still in flight is dropped.
            return Recv::all(input);
        };
        if !matches!(l.phase, Phase::Handshake { .. } | Phase::Open) {
            return Recv::all(input);
        }
        let idle = l.decoder.is_idle();
        let mut rest = &input[used..];
        if l.decoder.in_body() {
            // Inside a body: no further than the node takes in one piece.
            rest = &rest[..rest.len().min(node.body_room(id).max(1))];
        }
        if rest.is_empty() || (idle && !node.may_read(id)) {
            return Recv {
                consumed: used,
                write: None,
            };
        }
        node.on_input(id, now);
        let Some(l) = node.table_mut().get_mut(id).map(HasLink::link_mut) else {
            return Recv::all(input);
        };
        match l.decoder.decode(rest) {
            Err(e) => {
                node.on_frame_error(id, e);
                return Recv::all(input);
            }
            Ok((0, None)) => {
                return Recv {
                    consumed: used,
                    write: None,
                }
            }
            Ok((n, None)) => used += n,
            Ok((n, Some(Item::Message(msg)))) => {
                used += n;
                node.on_message(id, msg);
            }
            Ok((n, Some(Item::Body { data, remaining }))) => {
                used += n;
                if let Some(write) = node.on_body(id, data, remaining) {
                    return Recv {
                        consumed: used,
                        write: Some(write),
                    };
                }
            }
        }
    }
}

/// The next frame of any connection, taking them in turn so none starves the others: a scan
/// of the whole table, for nodes with few connections (a node with many keeps a set of the
/// connections that have output instead).
pub(crate) fn transmit<N: Wire + ?Sized>(
    node: &mut N,
    buf: &mut [u8; FRAME_BUF_LEN],
) -> Option<Transmit> {
    let mut rr = usize::from(node.table().rr);
    let len = node.table().capacity();
    let t = round_robin(&mut rr, len, |index| {
        let id = node.table().id_at(index)?;
        node.next_frame(id, buf)
    });
    node.table_mut().rr = rr as u16;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn round_robin_resumes_after_the_last_hit() {
        let mut cursor = 0;
        let hits = [false, true, false, true];
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(round_robin(&mut cursor, 4, |i| hits[i].then_some(i)));
        }
        assert_eq!(seen, [Some(1), Some(3), Some(1)]);
        assert_eq!(round_robin(&mut cursor, 4, |_| None::<()>), None);
    }
}
