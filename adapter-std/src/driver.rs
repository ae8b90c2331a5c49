//! The mio event loop: where bytes meet a socket.
//!
//! One [`Driver`] runs one node (a [`Tracker`](proto_core::tracker::Tracker) or a
//! [`Peer`](proto_core::peer::Peer)) on one thread. It owns the sockets and a [`Storage`],
//! feeds the node what happens (`handle_*`) and carries out what it asks through
//! [`Node::poll_stored`] until it says `Timeout` (storage actions and the journal are carried
//! out there, the same way on every adapter). Blocks the node asks digests of
//! ([`Action::HashBlock`]) go to a hashing thread ([`crate::hasher`]), whose answers wake the
//! loop; a block that landed whole from one socket read is hashed in that read's buffer.
//!
//! Backpressure, both ways, so no queue here grows without bound:
//! - each connection's output queue is bounded: past [`OUT_HIGH`] bytes (payload still in
//!   storage included) the node is told the connection is blocked, and below [`OUT_LOW`] that it
//!   is ready again. Payload stays in storage until the socket takes it: sent from the file
//!   with `sendfile` where the store lends one, else read a piece at a time;
//! - input the node does not take (its reply queue is full) is kept, and the socket is not
//!   read again until the node has taken it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use proto_core::conn::{ConnId, TableFull};
use proto_core::io::{Action, BlockTicket, Output, FRAME_BUF_LEN};
use proto_core::node::hash_stored;
pub use proto_core::node::Node;
pub use proto_core::storage::Storage;
use proto_core::storage::{Region, StorageKey, StorageSend};
use proto_core::time::Instant;
use rustix::io::Errno;
use rustix::net::SendFlags;

use crate::hasher::{Hasher, SharedRead};

/// Above this many buffered output bytes a connection counts as blocked.
pub const OUT_HIGH: usize = 1 << 20;
/// Below this many it is ready again.
pub const OUT_LOW: usize = 256 * 1024;
/// Bytes read from a socket in one go (and the most a node is offered at once).
const READ_CHUNK: usize = 256 * 1024;
/// Most read buffers lent to the hashing thread at once (256 KiB each); past that, blocks are
/// read back from storage to be hashed.
const MAX_LENT: usize = 16;
/// Most payload bytes one `sendfile` call sends.
const SEND_CHUNK: u64 = 1 << 20;
/// The longest the loop sleeps between ticks.
pub const TICK: StdDuration = StdDuration::from_millis(100);
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const HASHED: Token = Token(usize::MAX - 3);

struct Sock {
    stream: TcpStream,
    token: Token,
    /// Connecting (to this address): waiting for the first writable event.
    connecting: Option<SocketAddr>,
    /// What is to be sent, in order.
    out: Outbox,
    /// Input the node has not taken yet.
    inbox: Vec<u8>,
    /// The socket may hold more to read than we took (edge-triggered readiness).
    blocked: bool,
    /// Close once `out` is sent.
    closing: bool,
}

impl Sock {
    fn queued(&self) -> usize {
        self.out.len
    }
}

/// What is queued for one socket, in the order it must go: frame bytes, and payload still in
/// storage. Payload is sent from its file with `sendfile` (the kernel copies it from the page
/// cache to the socket: no read into memory, no second copy), or read into memory a piece at
/// a time from a store that cannot lend a file. Order holds by construction: a frame queued
/// after a payload goes after it, however much of that payload is still in storage.
#[derive(Default)]
struct Outbox {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already sent.
    sent: usize,
    /// Bytes queued in all, payload in storage included.
    len: usize,
}

enum Seg {
    Bytes(Vec<u8>),
    Stored(StorageSend),
}

impl Outbox {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(Seg::Bytes(v)) = self.segs.back_mut() {
            if v.len() < OUT_LOW {
                v.extend_from_slice(bytes);
                return;
            }
        }
        self.segs.push_back(Seg::Bytes(bytes.to_vec()));
    }

    fn push_stored(&mut self, payload: StorageSend) {
        if payload.len == 0 {
            return;
        }
        self.len += payload.len as usize;
        self.segs.push_back(Seg::Stored(payload));
    }

    /// `n` more bytes of the front segment went out.
    fn sent(&mut self, n: usize) {
        self.len -= n;
        let done = match self.segs.front_mut() {
            Some(Seg::Bytes(v)) => {
                self.sent += n;
                self.sent >= v.len()
            }
            Some(Seg::Stored(p)) => {
                p.offset += n as u64;
                p.len -= n as u64;
                p.len == 0
            }
            None => false,
        };
        if done {
            self.segs.pop_front();
            self.sent = 0;
        }
    }
}

/// Runs a node over real sockets.
pub struct Driver<N: Node, S: Storage<Error = io::Error>> {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// The node.
    pub node: N,
    /// Its storage.
    pub store: S,
    socks: HashMap<ConnId, Sock>,
    tokens: HashMap<Token, ConnId>,
    /// Connected sockets that may have input to read (or input the node has yet to take).
    /// Kept as a set, so a turn of the loop costs what is busy, not every socket: a tracker
    /// holds tens of thousands of idle ones.
    readable: BTreeSet<ConnId>,
    /// Sockets given output since they were last flushed.
    dirty: BTreeSet<ConnId>,
    next_token: usize,
    /// The buffer sockets are read into. Shared (`Arc`) so the hashing thread can hash
    /// blocks where they landed; while it holds the last read's buffer, the next read goes
    /// into another (see [`read_buffer`]).
    scratch: Arc<Vec<u8>>,
    /// Buffers lent to the hashing thread, taken back once it lets go of them.
    lent: Vec<Arc<Vec<u8>>>,
    /// What the node wrote to storage straight out of `scratch` since the last read.
    landed: Vec<Landed>,
    interrupted: bool,
    /// The last storage error, kept for the command to report (the node only learns that
    /// storage failed, not why).
    pub last_storage_error: Option<io::Error>,
    /// Why the last connection attempt to each address that failed (and has not succeeded
    /// since) failed: the command words its notices with it ("refused the connection").
    pub connect_failures: HashMap<SocketAddr, ErrorKind>,
    /// Events taken from the node while feeding it, not yet handed to the callback. A node
    /// stops reading while its own event queue is nearly full; taking its events here is what
    /// lets it read on, without losing one.
    held: VecDeque<N::Event>,
    /// When the node next needs `handle_timeout`, as its last drain said.
    wake: Instant,
    /// Wakes the loop when the hashing thread has a digest.
    waker: Arc<mio::Waker>,
    /// The hashing thread, started by the first [`Action::HashBlock`].
    hasher: Option<Hasher>,
}

/// A write the node made straight out of the read buffer: `len` bytes of `key` at `offset`,
/// found at `at` in the buffer.
struct Landed {
    key: StorageKey,
    offset: u64,
    at: usize,
    len: u64,
}

/// The driver's store as the node writes to it while fed a socket read: every write that
/// succeeds out of the read buffer `from` is noted in `landed`, so the block can be hashed
/// from the buffer instead of read back from storage.
struct Landing<'a, S> {
    store: &'a mut S,
    from: &'a [u8],
    landed: &'a mut Vec<Landed>,
}

impl<S: Storage> Storage for Landing<'_, S> {
    type Error = S::Error;

    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), S::Error> {
        self.store.write(key, offset, data)?;
        // Where `data` starts in the buffer, if it lies there (input kept from an earlier
        // read lies elsewhere, and is read back when hashed).
        let at = (data.as_ptr() as usize).wrapping_sub(self.from.as_ptr() as usize);
        if at
            .checked_add(data.len())
            .is_some_and(|end| end <= self.from.len())
        {
            self.landed.push(Landed {
                key,
                offset,
                at,
                len: data.len() as u64,
            });
        }
        Ok(())
    }

    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> Result<usize, S::Error> {
        self.store.read(key, offset, buf)
    }

    fn discard(&mut self, key: StorageKey) {
        self.store.discard(key)
    }

    fn manifest_received(
        &mut self,
        slot: u16,
        file: proto_core::wire::FileId,
        header: &proto_core::manifest::ManifestHeader,
    ) -> Result<(), S::Error> {
        self.store.manifest_received(slot, file, header)
    }

    fn chunk_verified(&mut self, slot: u16, chunk: u32) -> Result<(), S::Error> {
        self.store.chunk_verified(slot, chunk)
    }

    fn file_complete(&mut self, slot: u16) -> Result<(), S::Error> {
        self.store.file_complete(slot)
    }
}

/// The read buffer, ready to be written: if the hashing thread still holds the one in
/// `scratch`, it is put aside in `lent` and one it let go of (or a new one) takes its place.
/// `None` only if that fails, which it cannot: the buffer swapped in is held nowhere else.
fn read_buffer<'a>(
    scratch: &'a mut Arc<Vec<u8>>,
    lent: &mut Vec<Arc<Vec<u8>>>,
) -> Option<&'a mut [u8]> {
    if Arc::get_mut(scratch).is_none() {
        let free = lent.iter().position(|b| Arc::strong_count(b) == 1);
        let next = match free {
            Some(i) => lent.swap_remove(i),
            None => Arc::new(vec![0; READ_CHUNK]),
        };
        // The caller lends a buffer only while fewer than MAX_LENT are out (or one is free),
        // so this list stays at most one longer than that.
        lent.push(std::mem::replace(scratch, next));
    }
    Arc::get_mut(scratch).map(Vec::as_mut_slice)
}

/// Why [`Driver::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The event callback asked to stop.
    Done,
    /// SIGINT or SIGTERM arrived.
    Interrupted,
}

impl<N: Node, S: Storage<Error = io::Error> + SharedRead> Driver<N, S> {
    /// A driver for `node`, accepting connections on `listener` if given. With
    /// `catch_signals`, SIGINT and SIGTERM end [`Driver::run`] with [`Stop::Interrupted`].
    pub fn new(
        node: N,
        store: S,
        listener: Option<TcpListener>,
        catch_signals: bool,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = listener;
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let signals = if catch_signals {
            let mut s = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            poll.registry()
                .register(&mut s, SIGNALS, Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let waker = Arc::new(mio::Waker::new(poll.registry(), HASHED)?);
        Ok(Driver {
            poll,
            listener,
            signals,
            node,
            store,
            socks: HashMap::new(),
            tokens: HashMap::new(),
            readable: BTreeSet::new(),
            dirty: BTreeSet::new(),
            next_token: 0,
            scratch: Arc::new(vec![0; READ_CHUNK]),
            lent: Vec::new(),
            landed: Vec::new(),
            interrupted: false,
            last_storage_error: None,
            connect_failures: HashMap::new(),
            held: VecDeque::new(),
            wake: Instant::ZERO,
            waker,
            hasher: None,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `on` breaks or a signal arrives. `on` is called with every event, and with
    /// `None` at least every [`TICK`] (for deadlines, progress, batched syncs).
    pub fn run(
        &mut self,
        mut on: impl FnMut(&mut Self, Option<N::Event>) -> ControlFlow<()>,
    ) -> io::Result<Stop> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            self.drain(now);
            while let Some(e) = self.held.pop_front() {
                if on(self, Some(e)).is_break() {
                    self.flush_every();
                    return Ok(Stop::Done);
                }
                // An event handler may have given the node commands: carry them out.
                self.drain(Instant::now());
            }
            if self.interrupted {
                return Ok(Stop::Interrupted);
            }
            if on(self, None).is_break() {
                self.flush_every();
                return Ok(Stop::Done);
            }
            let now = Instant::now();
            let wait = self.wake.saturating_since(now);
            // Sockets with input left over, or more to read, need another turn at once.
            let busy = !self.readable.is_empty();
            let timeout = if busy {
                StdDuration::ZERO
            } else {
                StdDuration::from(wait)
            };
            match self.poll.poll(&mut events, Some(timeout.min(TICK))) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(now),
                    SIGNALS => {
                        if let Some(s) = self.signals.as_mut() {
                            if s.pending().next().is_some() {
                                self.interrupted = true;
                            }
                        }
                    }
                    // Digests are taken below, on every turn.
                    HASHED => {}
                    token => {
                        let Some(&conn) = self.tokens.get(&token) else {
                            continue;
                        };
                        if ev.is_writable() {
                            self.on_writable(now, conn);
                        }
                        let input = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        if input
                            && self
                                .socks
                                .get(&conn)
                                .is_some_and(|s| s.connecting.is_none())
                        {
                            self.readable.insert(conn);
                        }
                    }
                }
            }
            self.take_digests(now);
            self.read_all(now);
            if Instant::now() >= self.wake {
                self.node.timeout(Instant::now());
                self.drain(Instant::now());
            }
        }
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    match self.node.accept(now, remote) {
                        Ok(accepted) => {
                            // The core already forgot an evicted connection: just close it.
                            if let Some(gone) = accepted.evicted {
                                self.remove_sock(gone);
                            }
                            self.add_sock(accepted.conn, stream, None)
                        }
                        Err(TableFull) => drop(stream),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_sock(&mut self, conn: ConnId, mut stream: TcpStream, connecting: Option<SocketAddr>) {
        let token = Token(self.next_token);
        self.next_token += 1;
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.node.closed(Instant::now(), conn);
            return;
        }
        self.tokens.insert(token, conn);
        if connecting.is_none() {
            self.readable.insert(conn);
        }
        self.socks.insert(
            conn,
            Sock {
                stream,
                token,
                connecting,
                out: Outbox::default(),
                inbox: Vec::new(),
                blocked: false,
                closing: false,
            },
        );
    }

    fn remove_sock(&mut self, conn: ConnId) -> Option<Sock> {
        let mut s = self.socks.remove(&conn)?;
        self.tokens.remove(&s.token);
        self.readable.remove(&conn);
        self.dirty.remove(&conn);
        let _ = self.poll.registry().deregister(&mut s.stream);
        Some(s)
    }

    /// The connection failed or the remote closed it: tell the node.
    fn lost(&mut self, now: Instant, conn: ConnId) {
        if self.remove_sock(conn).is_some() {
            self.node.closed(now, conn);
        }
    }

    fn on_writable(&mut self, now: Instant, conn: ConnId) {
        let Some(s) = self.socks.get_mut(&conn) else {
            return;
        };
        if let Some(addr) = s.connecting {
            match (s.stream.take_error(), s.stream.peer_addr()) {
                (Ok(None), Ok(_)) => {
                    s.connecting = None;
                    self.connect_failures.remove(&addr);
                    self.readable.insert(conn);
                    let _ = s.stream.set_nodelay(true);
                    self.node.connected(now, conn);
                }
                // Not connected yet: wait for the next writable event.
                (Ok(None), Err(e)) if e.kind() == ErrorKind::NotConnected => return,
                // Failed (refused, unreachable, timed out): `take_error` has just consumed the
                // socket's error, and no further event comes for it, so it ends here.
                (err, _) => {
                    if let Ok(Some(e)) | Err(e) = err {
                        self.connect_failures.insert(addr, e.kind());
                    }
                    self.lost(now, conn);
                    return;
                }
            }
        }
        self.flush(now, conn);
    }

    /// Reads every socket that may have input, offering it to the node.
    fn read_all(&mut self, now: Instant) {
        let ready: Vec<ConnId> = self.readable.iter().copied().collect();
        for conn in ready {
            self.read_one(now, conn);
            self.drain(now);
        }
    }

    fn read_one(&mut self, now: Instant, conn: ConnId) {
        // Offer what is left first; read more only once the node took it all.
        if !self.offer(now, conn) {
            return;
        }
        let Some(s) = self.socks.get_mut(&conn) else {
            return;
        };
        let Some(buf) = read_buffer(&mut self.scratch, &mut self.lent) else {
            return;
        };
        self.landed.clear();
        match s.stream.read(buf) {
            Ok(0) => self.lost(now, conn),
            Ok(n) => {
                // Another handle on the same bytes: `feed` needs `self`, and the hashing
                // thread may be handed them meanwhile.
                let input = self.scratch.clone();
                let taken = self.feed(now, conn, &input[..n]);
                if taken < n {
                    if let Some(s) = self.socks.get_mut(&conn) {
                        s.inbox.extend_from_slice(&input[taken..n]);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.readable.remove(&conn);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.lost(now, conn),
        }
    }

    /// Offers the kept input; true if the node took all of it.
    fn offer(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(s) = self.socks.get_mut(&conn) else {
            return false;
        };
        if s.inbox.is_empty() {
            return true;
        }
        let inbox = std::mem::take(&mut s.inbox);
        let taken = self.feed(now, conn, &inbox);
        if let Some(s) = self.socks.get_mut(&conn) {
            s.inbox = inbox[taken..].to_vec();
            s.inbox.is_empty()
        } else {
            false
        }
    }

    /// Feeds input to the node, storing what it asks to store; returns the bytes it took.
    fn feed(&mut self, now: Instant, conn: ConnId, input: &[u8]) -> usize {
        let mut at = 0;
        let mut retried = false;
        while at < input.len() {
            let last_error = &mut self.last_storage_error;
            let mut store = Landing {
                store: &mut self.store,
                from: &self.scratch,
                landed: &mut self.landed,
            };
            let (consumed, wrote) =
                self.node
                    .recv_stored(now, conn, &input[at..], &mut store, &mut |_, e| {
                        tracing::debug!("storage write failed: {e}");
                        *last_error = Some(e);
                    });
            at += consumed;
            if consumed > 0 || wrote {
                retried = false;
                continue;
            }
            // The node wants its answers sent before it reads more: send them, try once more.
            if retried {
                break;
            }
            self.drain(now);
            retried = true;
        }
        at
    }

    /// Carries out everything the node wants until it says `Timeout`: frames, connects and
    /// closes here; events are held for the callback.
    fn drain(&mut self, now: Instant) {
        let mut buf = [0u8; FRAME_BUF_LEN];
        loop {
            let last_error = &mut self.last_storage_error;
            let out = self
                .node
                .poll_stored(now, &mut self.store, &mut buf, &mut |key, e| {
                    tracing::debug!("storage failed for {key:?}: {e}");
                    *last_error = Some(e);
                });
            match out {
                Output::Transmit(t) => {
                    let Some(s) = self.socks.get_mut(&t.conn) else {
                        continue;
                    };
                    s.out.push_bytes(&buf[..t.len]);
                    if let Some(then) = t.then {
                        s.out.push_stored(then);
                    }
                    self.dirty.insert(t.conn);
                    let queued = self.socks.get(&t.conn).map_or(0, Sock::queued);
                    if queued > OUT_HIGH {
                        if let Some(s) = self.socks.get_mut(&t.conn) {
                            if !s.blocked {
                                s.blocked = true;
                                self.node.send_blocked(t.conn, true);
                            }
                        }
                    }
                }
                Output::Action(Action::Connect { conn, addr }) => match TcpStream::connect(addr) {
                    Ok(stream) => self.add_sock(conn, stream, Some(addr)),
                    Err(e) => {
                        self.connect_failures.insert(addr, e.kind());
                        self.node.closed(now, conn)
                    }
                },
                Output::Action(Action::Close(conn)) => {
                    if let Some(s) = self.socks.get_mut(&conn) {
                        s.closing = true;
                    }
                    self.flush(now, conn);
                }
                // poll_stored carries out the storage actions itself.
                Output::Action(Action::ReadHash { .. } | Action::Discard(_)) => {}
                Output::Action(Action::HashBlock {
                    key,
                    offset,
                    len,
                    ticket,
                }) => self.hash_block(now, key, offset, len, ticket),
                Output::Event(e) => self.held.push_back(e),
                Output::Timeout(at) => {
                    self.wake = at;
                    break;
                }
            }
        }
        if let Some(h) = self.hasher.as_mut() {
            h.flush();
        }
        self.flush_all();
    }

    /// Hands a written block to the hashing thread (started now if this is the first); hashes
    /// it here if the store cannot share it.
    fn hash_block(
        &mut self,
        now: Instant,
        key: StorageKey,
        offset: u64,
        len: u32,
        ticket: BlockTicket,
    ) {
        if self.hasher.is_none() {
            match Hasher::start(self.waker.clone()) {
                Ok(h) => self.hasher = Some(h),
                Err(e) => tracing::debug!("no hashing thread ({e}); hashing on the loop"),
            }
        }
        if let Some(h) = self.hasher.as_mut() {
            // Hashed where it landed if one write put all of it there, the latest such
            // write (a block written again is hashed as it now stands); else read back.
            let written = self.landed.iter().rev().find(|w| {
                w.key == key && w.offset <= offset && offset + u64::from(len) <= w.offset + w.len
            });
            // Lending the read buffer must not make the next read allocate past MAX_LENT
            // buffers: a hashing thread that lags would otherwise hold many megabytes.
            let lendable = |lent: &[Arc<Vec<u8>>]| {
                lent.len() < MAX_LENT || lent.iter().any(|b| Arc::strong_count(b) == 1)
            };
            if let Some(w) = written.filter(|_| lendable(&self.lent)) {
                let start = w.at + (offset - w.offset) as usize;
                h.submit_received(self.scratch.clone(), start, key, len, ticket);
                return;
            }
            if let Some(reader) = self.store.shared_reader(key) {
                h.submit(reader, key, offset, len, ticket);
                return;
            }
        }
        match hash_stored(&mut self.store, key, offset, len) {
            Ok(Some(digest)) => {
                // Answered as it is asked: the peer asks only while there is room.
                let taken = self.node.block_hash(now, ticket, digest);
                debug_assert!(taken, "an answer given at once is taken");
            }
            Ok(None) => self.node.storage_failed(now, key),
            Err(e) => {
                tracing::debug!("storage failed for {key:?}: {e}");
                self.last_storage_error = Some(e);
                self.node.storage_failed(now, key);
            }
        }
    }

    /// Hands the node the digests the hashing thread has finished. One it refuses (its
    /// events wait to be handed out) is handed again after a drain.
    fn take_digests(&mut self, now: Instant) {
        let mut any = false;
        while let Some(done) = self.hasher.as_ref().and_then(Hasher::finished) {
            any = true;
            let Some(digest) = done.digest else {
                tracing::debug!("a block of {:?} could not be read back", done.key);
                self.node.storage_failed(now, done.key);
                self.drain(now);
                continue;
            };
            while !self.node.block_hash(now, done.ticket, digest) {
                self.drain(now);
            }
        }
        if any {
            self.drain(now);
        }
    }

    /// Flushes the sockets given output since their last flush; the others wait for their
    /// writable event.
    fn flush_all(&mut self) {
        let now = Instant::now();
        while let Some(c) = self.dirty.pop_first() {
            self.flush(now, c);
        }
    }

    /// Flushes every socket, before the loop returns.
    fn flush_every(&mut self) {
        let now = Instant::now();
        let conns: Vec<ConnId> = self.socks.keys().copied().collect();
        for c in conns {
            self.flush(now, c);
        }
    }

    /// Writes queued output until the socket would block.
    fn flush(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(s) = self.socks.get_mut(&conn) else {
                return;
            };
            if s.connecting.is_some() {
                return;
            }
            // A frame followed by its payload: tell the kernel more comes at once, so the
            // header does not leave as a packet of its own.
            let more = matches!(s.out.segs.get(1), Some(Seg::Stored(_)));
            let sent = match s.out.segs.front_mut() {
                None => {
                    if s.closing {
                        self.remove_sock(conn);
                    }
                    break;
                }
                Some(Seg::Bytes(v)) => {
                    let flags = if more {
                        SendFlags::MORE
                    } else {
                        SendFlags::empty()
                    };
                    rustix::net::send(&s.stream, &v[s.out.sent..], flags)
                }
                Some(Seg::Stored(p)) => match self.store.send_source(p.key) {
                    Some(file) => {
                        let mut at = p.offset;
                        let want = p.len.min(SEND_CHUNK) as usize;
                        match rustix::fs::sendfile(&s.stream, &*file, Some(&mut at), want) {
                            // The file is shorter than the frame promised.
                            Ok(0) => Err(Errno::NODATA),
                            r => r,
                        }
                    }
                    None => {
                        // Into memory, a piece at a time; it goes out as bytes.
                        let p = *p;
                        let mut piece = vec![0; (p.len as usize).min(READ_CHUNK)];
                        match self.store.read(p.key, p.offset, &mut piece) {
                            Ok(n) if n > 0 => {
                                piece.truncate(n);
                                s.out.segs.pop_front();
                                let rest = p.len - n as u64;
                                if rest > 0 {
                                    s.out.segs.push_front(Seg::Stored(StorageSend {
                                        key: p.key,
                                        offset: p.offset + n as u64,
                                        len: rest,
                                    }));
                                }
                                s.out.segs.push_front(Seg::Bytes(piece));
                                continue;
                            }
                            _ => Err(Errno::NODATA),
                        }
                    }
                },
            };
            match sent {
                Ok(0) => {
                    self.lost(now, conn);
                    return;
                }
                Ok(n) => s.out.sent(n),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(Errno::NODATA) => {
                    // The bytes promised in a frame header cannot be sent: the stream is
                    // broken for the remote, so close it.
                    tracing::warn!(
                        "a storage read for a connection failed; closing that connection"
                    );
                    s.out = Outbox::default();
                    s.closing = true;
                }
                Err(_) => {
                    self.lost(now, conn);
                    return;
                }
            }
        }
        if let Some(s) = self.socks.get_mut(&conn) {
            if s.blocked && s.queued() < OUT_LOW {
                s.blocked = false;
                self.node.send_blocked(conn, false);
            }
        }
    }
}

/// Storage for a tracker: the chunk hashes of listed files, in memory (a tracker restarted
/// starts empty and is told everything again by its peers).
#[derive(Default)]
pub struct MemoryHashes {
    slots: HashMap<u16, Vec<u8>>,
}

impl SharedRead for MemoryHashes {
    fn send_source(&mut self, _: StorageKey) -> Option<Arc<std::fs::File>> {
        None
    }
}

impl Storage for MemoryHashes {
    type Error = io::Error;
    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> io::Result<()> {
        if key.region != Region::Hashes {
            return Err(io::Error::other("a tracker stores hashes only"));
        }
        let v = self.slots.entry(key.slot).or_default();
        let end = offset as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let v = self.slots.get(&key.slot).map(Vec::as_slice).unwrap_or(&[]);
        let start = (offset as usize).min(v.len());
        let n = buf.len().min(v.len() - start);
        buf[..n].copy_from_slice(&v[start..start + n]);
        Ok(n)
    }

    fn discard(&mut self, key: StorageKey) {
        self.slots.remove(&key.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_never_goes_into_a_buffer_the_hashing_thread_holds() {
        let mut scratch = Arc::new(vec![0u8; READ_CHUNK]);
        let mut lent = Vec::new();
        let first = Arc::as_ptr(&scratch);
        // Held by no one else: read into as it is.
        assert!(read_buffer(&mut scratch, &mut lent).is_some());
        assert_eq!(Arc::as_ptr(&scratch), first);
        // Lent: put aside, another one read into.
        let held = scratch.clone();
        read_buffer(&mut scratch, &mut lent).unwrap()[0] = 9;
        assert_ne!(Arc::as_ptr(&scratch), first);
        assert_eq!(held[0], 0, "the lent bytes are untouched");
        assert_eq!(lent.len(), 1);
        // Once let go, the first comes back into use instead of a new one.
        drop(held);
        let second = scratch.clone();
        assert!(read_buffer(&mut scratch, &mut lent).is_some());
        assert_eq!(Arc::as_ptr(&scratch), first);
        drop(second);
        assert_eq!(lent.len(), 1);
    }

    #[test]
    fn writes_out_of_the_read_buffer_are_noted_and_others_are_not() {
        let buf = vec![1u8; 1000];
        let elsewhere = vec![2u8; 10];
        let mut landed = Vec::new();
        let key = StorageKey {
            slot: 0,
            region: Region::Data,
        };
        let mut l = Landing {
            store: &mut MemoryHashes::default(),
            from: &buf,
            landed: &mut landed,
        };
        let hashes = StorageKey {
            slot: 0,
            region: Region::Hashes,
        };
        l.write(hashes, 64, &buf[100..300]).unwrap();
        l.write(hashes, 0, &elsewhere).unwrap();
        // A failed write is not noted: its bytes are not in storage.
        assert!(l.write(key, 0, &buf[..10]).is_err());
        assert_eq!(landed.len(), 1);
        assert_eq!(
            (landed[0].offset, landed[0].at, landed[0].len),
            (64, 100, 200)
        );
    }
}
