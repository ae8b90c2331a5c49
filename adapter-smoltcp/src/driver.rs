//! The smoltcp driver: where a node's bytes meet TCP sockets on a device.
//!
//! [`Driver::poll`] runs the interface, then looks at every socket: a listening socket that
//! accepted a connection is handed to the node, a connecting one that got through (or failed)
//! is reported, input is offered to the node straight from the socket's receive buffer (and
//! chunk payload goes from there to storage), and block payload goes from storage straight into
//! the socket's transmit buffer. Nothing is copied through a buffer of the driver's own except
//! one frame (at most 516 bytes) at a time.
//!
//! Backpressure: a connection whose socket has less free transmit space than one frame, or
//! payload still to copy, is reported blocked to the node, so every frame the node emits fits
//! its socket whole; a node that takes only part of its input is offered the rest after its
//! output was drained.

use core::net::{IpAddr, SocketAddr};

use proto_core::conn::ConnId;
use proto_core::io::{Action, Output, FRAME_BUF_LEN};
use proto_core::node::Node;
use proto_core::storage::StorageSend;
use proto_core::time::{Duration, Instant};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use crate::Storage;

/// Local ports for outgoing connections: from here up, starting at a point the seed picks.
const EPHEMERAL: u16 = 49_152;
/// A connection whose segments go unacknowledged this long is dropped (smoltcp retransmits
/// forever otherwise, and a device has too few sockets to leave one stuck: a peer that reset
/// leaves exactly such a connection behind).
const SOCKET_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(10);
/// Rounds of reading and draining in one poll, at most (a node that stops reading until its
/// output is drained reads on in the next round).
const ROUNDS: usize = 8;

/// What one of the driver's sockets is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Socket {
    /// Free.
    Idle,
    /// Waiting for a peer to connect to the node's listen port.
    Listening,
    /// Opening a connection the node asked for.
    Connecting(ConnId),
    /// Carrying a connection.
    Open(ConnId),
    /// Closing since the given time; free again once the close is done (or has taken too long).
    Closing(Instant),
}

#[derive(Clone, Copy)]
struct Slot {
    handle: SocketHandle,
    state: Socket,
    /// Payload still to copy from storage into the socket after the last frame.
    pending: Option<StorageSend>,
    /// What the node was last told: blocked or not.
    blocked: bool,
    /// Close once the pending payload is out.
    close_after: bool,
}

/// Drives node `N` with storage `S` over `K` TCP sockets of a smoltcp interface.
pub struct Driver<'s, N: Node, S: Storage, const K: usize> {
    /// The node.
    pub node: N,
    /// Its storage.
    pub store: S,
    /// The interface.
    pub iface: Interface,
    /// The sockets (the `K` TCP sockets given to [`Driver::new`] are the driver's).
    pub sockets: SocketSet<'s>,
    slots: [Slot; K],
    listen_port: u16,
    next_port: u16,
    frame: [u8; FRAME_BUF_LEN],
    /// When the node next needs `handle_timeout`, as its last drain said.
    wake: Instant,
}

#[cfg(feature = "defmt")]
impl<N: Node, S: Storage, const K: usize> defmt::Format for Driver<'_, N, S, K> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Driver {{ sockets: {} }}", self.socket_states())
    }
}

fn to_smol(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(t.total_micros()).unwrap_or(i64::MAX))
}

fn from_smol(t: smoltcp::time::Instant) -> Instant {
    Instant::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

fn endpoint(addr: SocketAddr) -> Option<IpEndpoint> {
    match addr {
        SocketAddr::V4(v4) => Some(IpEndpoint::from(v4)),
        SocketAddr::V6(_) => None,
    }
}

impl<'s, N: Node, S: Storage, const K: usize> Driver<'s, N, S, K> {
    /// A driver for `node`, owning `iface` and `sockets`, of which `handles` are the TCP
    /// sockets it may use (their buffer sizes are the firmware's choice). With a non-zero
    /// `listen_port` one idle socket always listens there for peers. `seed` picks where the
    /// local ports of outgoing connections start: give a different one on every boot, or a
    /// device that reset reuses the ports of connections its peers still hold open.
    pub fn new(
        node: N,
        store: S,
        iface: Interface,
        sockets: SocketSet<'s>,
        handles: [SocketHandle; K],
        listen_port: u16,
        seed: u64,
    ) -> Self {
        let slots = handles.map(|handle| Slot {
            handle,
            state: Socket::Idle,
            pending: None,
            blocked: false,
            close_after: false,
        });
        Driver {
            node,
            store,
            iface,
            sockets,
            slots,
            listen_port,
            next_port: EPHEMERAL + (seed % u64::from(u16::MAX - EPHEMERAL)) as u16,
            frame: [0; FRAME_BUF_LEN],
            wake: Instant::ZERO,
        }
    }

    /// What each socket is doing (for status displays and tests).
    pub fn socket_states(&self) -> [Socket; K] {
        self.slots.map(|s| s.state)
    }

    /// Runs everything due at `now`: the interface, the sockets, the node's timers and its
    /// output. Every event is journalled in storage (see [`Node::poll_stored`]), then handed to
    /// `on_event`. Returns
    /// the time by which `poll` must run again (sooner if the device receives a frame).
    pub fn poll<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        device: &mut D,
        mut on_event: impl FnMut(&mut N, N::Event),
    ) -> Instant {
        let ts = to_smol(now);
        self.iface.poll(ts, device, &mut self.sockets);
        if now >= self.wake {
            self.node.timeout(now);
        }
        for _ in 0..ROUNDS {
            let read = self.service(now);
            self.drain(now, &mut on_event);
            if !read {
                break;
            }
        }
        self.keep_listening();
        // Send what the node just queued now, not on the next call.
        self.iface.poll(ts, device, &mut self.sockets);
        let core = self.wake;
        let wake = self
            .iface
            .poll_at(ts, &self.sockets)
            .map_or(core, |t| core.min(from_smol(t)));
        // A node that stopped reading must be offered its input again soon.
        if self.has_unread() {
            return wake.min(now + Duration::from_millis(1));
        }
        wake
    }

    fn has_unread(&self) -> bool {
        self.slots.iter().any(|s| {
            matches!(s.state, Socket::Open(_))
                && self.sockets.get::<tcp::Socket>(s.handle).recv_queue() > 0
        })
    }

    /// One idle socket listens on the listen port, if the node takes peers and none does.
    fn keep_listening(&mut self) {
        if self.listen_port == 0 || self.slots.iter().any(|s| s.state == Socket::Listening) {
            return;
        }
        let Some(slot) = self.slots.iter_mut().find(|s| s.state == Socket::Idle) else {
            return;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
        sock.set_timeout(Some(SOCKET_TIMEOUT));
        if sock
            .listen(IpListenEndpoint::from(self.listen_port))
            .is_ok()
        {
            slot.state = Socket::Listening;
        }
    }

    /// Looks at every socket: state changes, input, pending payload. Returns whether the node
    /// took any input.
    fn service(&mut self, now: Instant) -> bool {
        let mut read = false;
        for i in 0..K {
            let slot = self.slots[i];
            let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            match slot.state {
                Socket::Idle => {}
                Socket::Listening => {
                    // A remote may connect and close again before we look: take it all the
                    // same, and let the node see the close.
                    if matches!(
                        sock.state(),
                        tcp::State::Established | tcp::State::CloseWait
                    ) {
                        let remote = sock
                            .remote_endpoint()
                            .map(|e| SocketAddr::new(IpAddr::from(e.addr), e.port));
                        match remote.map(|r| self.node.accept(now, r)) {
                            Some(Ok(accepted)) => {
                                debug!("accepted {:?} on socket {}", accepted.conn, i);
                                self.slots[i].state = Socket::Open(accepted.conn);
                                if let Some(gone) = accepted.evicted {
                                    // The node already forgot it: only its socket is left.
                                    if let Some(j) = self.slot_of(gone) {
                                        let handle = self.slots[j].handle;
                                        self.sockets.get_mut::<tcp::Socket>(handle).abort();
                                        self.slots[j].state = Socket::Idle;
                                    }
                                }
                            }
                            _ => {
                                debug!("refused a connection: the node's table is full");
                                sock.abort();
                                self.slots[i].state = Socket::Idle;
                            }
                        }
                    } else if !sock.is_open() {
                        self.slots[i].state = Socket::Idle;
                    }
                }
                Socket::Connecting(conn) => match sock.state() {
                    tcp::State::Established => {
                        self.slots[i].state = Socket::Open(conn);
                        self.node.connected(now, conn);
                    }
                    tcp::State::Closed => {
                        debug!("connect for {:?} failed", conn);
                        self.slots[i].state = Socket::Idle;
                        self.node.closed(now, conn);
                    }
                    _ => {}
                },
                Socket::Open(conn) => {
                    read |= self.serve_open(i, conn, now);
                }
                Socket::Closing(since) => {
                    // A remote that never sends its FIN would hold the socket in FIN-WAIT-2
                    // for good (nothing is left to retransmit, so no timeout fires).
                    let stuck = now - since > Duration::from_micros(SOCKET_TIMEOUT.total_micros());
                    if stuck || matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                        // TIME-WAIT only guards against stray segments of this connection;
                        // a device with a handful of sockets cannot hold one for it.
                        sock.abort();
                        self.slots[i].state = Socket::Idle;
                    }
                }
            }
        }
        read
    }

    /// An open connection: copy pending payload out, offer input in, notice the end.
    fn serve_open(&mut self, i: usize, conn: ConnId, now: Instant) -> bool {
        self.push_payload(i, now);
        let handle = self.slots[i].handle;
        let mut read = false;
        loop {
            let sock = self.sockets.get_mut::<tcp::Socket>(handle);
            if !sock.can_recv() {
                break;
            }
            let (node, store) = (&mut self.node, &mut self.store);
            let took = sock.recv(|input| {
                let (consumed, _) = node.recv_stored(now, conn, input, store, &mut |key, _| {
                    warn!("storage write failed for {:?}", key);
                });
                (consumed, consumed)
            });
            match took {
                Ok(n) if n > 0 => read = true,
                _ => break,
            }
        }
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        let ended = !sock.is_active() || (!sock.may_recv() && sock.recv_queue() == 0);
        if ended {
            // The remote closed or reset: the node forgets the connection; we finish ours.
            sock.close();
            self.slots[i].state = Socket::Closing(now);
            self.slots[i].pending = None;
            self.node.closed(now, conn);
        } else {
            self.update_blocked(i, conn);
        }
        read
    }

    /// Copies as much pending payload from storage into socket `i` as it has room for.
    fn push_payload(&mut self, i: usize, now: Instant) {
        let Some(mut p) = self.slots[i].pending else {
            return;
        };
        let handle = self.slots[i].handle;
        let store = &mut self.store;
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        let mut failed = false;
        while p.len > 0 && sock.can_send() {
            let sent = sock.send(|buf| {
                let n = (p.len.min(buf.len() as u64)) as usize;
                match store.read(p.key, p.offset, &mut buf[..n]) {
                    Ok(got) if got == n => (n, n),
                    _ => (0, 0),
                }
            });
            match sent {
                Ok(0) | Err(_) => {
                    failed = sock.can_send();
                    break;
                }
                Ok(n) => {
                    p.offset += n as u64;
                    p.len -= n as u64;
                }
            }
        }
        if failed {
            warn!("cannot read payload from storage; dropping the connection");
            // The remote was promised bytes we cannot read: the stream cannot go on.
            sock.abort();
            self.node.storage_failed(now, p.key);
        }
        self.slots[i].pending = (p.len > 0 && !failed).then_some(p);
        if self.slots[i].pending.is_none() && self.slots[i].close_after {
            self.slots[i].close_after = false;
            sock.close();
            self.slots[i].state = Socket::Closing(now);
        }
    }

    /// Tells the node whether connection `conn` on socket `i` can take a whole frame.
    fn update_blocked(&mut self, i: usize, conn: ConnId) {
        let sock = self.sockets.get::<tcp::Socket>(self.slots[i].handle);
        let free = sock.send_capacity() - sock.send_queue();
        let blocked = self.slots[i].pending.is_some() || free < FRAME_BUF_LEN;
        if blocked != self.slots[i].blocked {
            self.slots[i].blocked = blocked;
            self.node.send_blocked(conn, blocked);
        }
    }

    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s.state, Socket::Open(c) | Socket::Connecting(c) if c == conn))
    }

    /// Carries out everything the node wants until it says `Timeout`: frames, connects,
    /// closes and events (storage actions and the journal are `poll_stored`'s).
    fn drain(&mut self, now: Instant, on_event: &mut impl FnMut(&mut N, N::Event)) {
        loop {
            let out =
                self.node
                    .poll_stored(now, &mut self.store, &mut self.frame, &mut |key, _| {
                        warn!("storage failed for {:?}", key);
                    });
            match out {
                Output::Transmit(t) => {
                    let Some(i) = self.slot_of(t.conn) else {
                        continue;
                    };
                    let sock = self.sockets.get_mut::<tcp::Socket>(self.slots[i].handle);
                    if sock.send_slice(&self.frame[..t.len]) != Ok(t.len) {
                        // Cannot happen while the blocked flag is kept (a frame always fits an
                        // unblocked socket); if it did, the stream would be corrupt: end it.
                        warn!("a frame did not fit its socket; dropping {:?}", t.conn);
                        sock.abort();
                        continue;
                    }
                    if let Some(then) = t.then {
                        self.slots[i].pending = Some(then);
                        self.push_payload(i, now);
                    }
                    self.update_blocked(i, t.conn);
                }
                Output::Action(a) => self.act(now, a),
                Output::Event(e) => on_event(&mut self.node, e),
                Output::Timeout(at) => {
                    self.wake = at;
                    return;
                }
            }
        }
    }

    fn act(&mut self, now: Instant, action: Action) {
        match action {
            Action::Connect { conn, addr } => {
                let port = self.next_port;
                self.next_port = self.next_port.checked_add(1).unwrap_or(EPHEMERAL);
                let port = port.max(EPHEMERAL);
                let free = self.slots.iter().position(|s| s.state == Socket::Idle);
                // A listening socket is given up for an outgoing connection if it is the last
                // one free: the node asked for this connection, and it keeps a slot for peers.
                let free =
                    free.or_else(|| self.slots.iter().position(|s| s.state == Socket::Listening));
                let (Some(i), Some(remote)) = (free, endpoint(addr)) else {
                    debug!("no socket (or no IPv4 address) for {:?}", conn);
                    self.node.closed(now, conn);
                    return;
                };
                let handle = self.slots[i].handle;
                let sock = self.sockets.get_mut::<tcp::Socket>(handle);
                sock.abort();
                sock.set_timeout(Some(SOCKET_TIMEOUT));
                match sock.connect(self.iface.context(), remote, port) {
                    Ok(()) => {
                        self.slots[i] = Slot {
                            handle,
                            state: Socket::Connecting(conn),
                            pending: None,
                            blocked: false,
                            close_after: false,
                        };
                    }
                    Err(_) => {
                        self.slots[i].state = Socket::Idle;
                        self.node.closed(now, conn);
                    }
                }
            }
            Action::Close(conn) => {
                let Some(i) = self.slot_of(conn) else {
                    return;
                };
                if self.slots[i].pending.is_some() {
                    self.slots[i].close_after = true;
                    // The node has forgotten the connection; the socket finishes the payload.
                    self.slots[i].state = Socket::Open(conn);
                } else {
                    self.sockets
                        .get_mut::<tcp::Socket>(self.slots[i].handle)
                        .close();
                    self.slots[i].state = Socket::Closing(now);
                }
            }
            // poll_stored carries out the storage actions itself.
            Action::ReadHash { .. } | Action::Discard(_) => {}
            // A device hashes inline (`BlockCheck::Inline`); a peer configured otherwise is
            // answered here and now, from flash.
            Action::HashBlock {
                key,
                offset,
                len,
                ticket,
            } => match proto_core::node::hash_stored(&mut self.store, key, offset, len) {
                // Answered as it is asked, so it is taken: the peer asks only while there is
                // room for the answer's events.
                Ok(Some(digest)) => {
                    let _ = self.node.block_hash(now, ticket, digest);
                }
                _ => self.node.storage_failed(now, key),
            },
        }
    }
}
