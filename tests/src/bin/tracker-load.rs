//! A load generator for a shoal tracker: many real TCP connections from many loopback source
//! addresses, measured phase by phase.
//!
//! 1. **register**: `--peers` connections, spread over source addresses 127.0.0.2 to
//!    127.0.0.254 (so the tracker's per-address cap is met as a fleet would meet it), each says
//!    `Hello` and `Register` and waits for `Registered`;
//! 2. **publish**: the first `--files` peers publish one file each (64 chunks);
//! 3. **have**: `--haves` have-updates, every peer telling about chunks of one file, written as
//!    fast as the tracker takes them; a `Ping` behind them on every connection marks when the
//!    tracker has handled them all;
//! 4. **locate**: `--locates` locates, one at a time, each timed from the request to the last
//!    frame of its answer.
//!
//! It prints one line per phase. The tracker's memory is the caller's to read
//! (`bench/tracker-load.sh` reads its `/proc` status).
//!
//! Loopback addresses only: it refuses a tracker address that is not a loopback address.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use proto_core::manifest::{FileIdHasher, ManifestHeader};
use proto_core::wire::{
    encode_frame, ChunkRange, FrameDecoder, Hello, Item, Message, NodeId, PROTOCOL_VERSION,
};
use socket2::{Domain, Socket, Type};

#[derive(Parser)]
#[command(about = "Load a shoal tracker with many real connections and time what it does")]
struct Args {
    /// The tracker (a loopback address).
    #[arg(long, default_value = "127.0.0.1:7070")]
    tracker: SocketAddr,
    /// Peers to register, one connection each.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Files to publish (at most one per peer).
    #[arg(long, default_value_t = 1_000)]
    files: usize,
    /// Have-updates to send, spread over every peer.
    #[arg(long, default_value_t = 1_000_000)]
    haves: usize,
    /// Locates to time, one after another.
    #[arg(long, default_value_t = 1_000)]
    locates: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout: u64,
}

/// Chunks per published file.
const CHUNKS: u32 = 64;
const CHUNK_SIZE: u32 = 16 * 1024;
/// Source addresses: 127.0.0.2 to 127.0.0.254.
const SOURCES: usize = 253;

struct Conn {
    stream: TcpStream,
    connected: bool,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    /// Messages received and not yet looked at.
    inbox: Vec<Message>,
}

struct Load {
    poll: Poll,
    conns: Vec<Conn>,
    tracker: SocketAddr,
    buf: Vec<u8>,
    /// Connections with output queued since they were last written.
    dirty: BTreeSet<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracker-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !args.tracker.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address; this tool loads local trackers only",
            args.tracker
        ));
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if (limit as usize) < args.peers + 64 {
        return Err(format!(
            "the open-file limit is {limit}; {} peers need more (raise the hard limit)",
            args.peers
        ));
    }
    let mut load = Load {
        poll: Poll::new().map_err(|e| e.to_string())?,
        conns: Vec::with_capacity(args.peers),
        tracker: args.tracker,
        buf: vec![0; 64 * 1024],
        dirty: BTreeSet::new(),
    };
    let timeout = Duration::from_secs(args.phase_timeout);

    // 1. register
    let start = Instant::now();
    let mut registered = 0;
    while registered < args.peers {
        let opened = load.conns.len();
        let want = (registered + args.in_flight).min(args.peers);
        for i in opened..want {
            load.open(i)?;
        }
        load.pump(timeout)?;
        for c in &mut load.conns {
            for m in c.inbox.drain(..) {
                match m {
                    Message::Registered { .. } => registered += 1,
                    Message::Refused(r) => {
                        return Err(format!("a registration was refused: {r:?}"))
                    }
                    _ => {}
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "only {registered} of {} peers registered",
                args.peers
            ));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tracker-load: register {} peers in {secs:.2} s: {:.0} registrations/s",
        args.peers,
        args.peers as f64 / secs
    );

    // 2. publish
    let files = args.files.min(args.peers);
    let mut ids = Vec::with_capacity(files);
    let start = Instant::now();
    for i in 0..files {
        let header = ManifestHeader::new(
            &format!("load-{i}.bin"),
            u64::from(CHUNKS * CHUNK_SIZE),
            CHUNK_SIZE,
        )
        .map_err(|e| e.to_string())?;
        let hashes: Vec<u8> = (0..CHUNKS * 32).map(|b| (b as usize ^ i) as u8).collect();
        let mut hasher = FileIdHasher::new(&header);
        hasher.update(&hashes);
        let file = hasher.finish().ok_or("the file id did not compute")?;
        load.send(i, &Message::Publish { file, header });
        load.conns[i].out.extend_from_slice(&hashes);
        load.dirty.insert(i);
        ids.push(file);
    }
    let mut published = 0;
    while published < files {
        load.pump(timeout)?;
        for c in &mut load.conns[..files] {
            for m in c.inbox.drain(..) {
                match m {
                    Message::Published { .. } => published += 1,
                    Message::PublishRefused { reason, .. } => {
                        return Err(format!("a publish was refused: {reason:?}"))
                    }
                    _ => {}
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(format!("only {published} of {files} files published"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("tracker-load: publish {files} files of {CHUNKS} chunks in {secs:.2} s");

    // 3. have-updates: peer p tells about chunks of file p % files, a chunk at a time, so
    // each update is one record; then a ping behind them.
    if files > 0 && args.haves > 0 {
        let start = Instant::now();
        let per_peer = args.haves.div_ceil(args.peers);
        let mut sent = 0;
        for round in 0..per_peer {
            for p in 0..args.peers {
                if sent == args.haves {
                    break;
                }
                let chunk = (round as u32 * 7 + p as u32) % CHUNKS;
                let mut ranges = heapless::Vec::new();
                let _ = ranges.push(ChunkRange {
                    start: chunk,
                    end: chunk + 1,
                });
                load.send(
                    p,
                    &Message::Have {
                        file: ids[p % files],
                        ranges,
                    },
                );
                sent += 1;
            }
            // Keep the buffers moving while queueing.
            if round % 16 == 15 {
                load.pump(Duration::ZERO)?;
            }
        }
        for p in 0..args.peers {
            load.send(p, &Message::Ping(0x10ad));
        }
        let mut ponged = 0;
        while ponged < args.peers {
            load.pump(timeout)?;
            for c in &mut load.conns {
                for m in c.inbox.drain(..) {
                    match m {
                        Message::Pong(0x10ad) => ponged += 1,
                        Message::NotFound { .. } => {
                            return Err("a have-update's file was not found".into())
                        }
                        _ => {}
                    }
                }
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "only {ponged} of {} peers answered after the have-updates",
                    args.peers
                ));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "tracker-load: have {sent} updates in {secs:.2} s: {:.0} have-updates/s",
            sent as f64 / secs
        );
    }

    // 4. locate latency, one at a time.
    if files > 0 && args.locates > 0 {
        let mut took = Vec::with_capacity(args.locates);
        for k in 0..args.locates {
            let p = (k * 7919) % args.peers;
            let file = ids[k % files];
            let start = Instant::now();
            load.send(p, &Message::Locate { file });
            let mut holders = None;
            while holders.is_none() {
                load.pump(timeout)?;
                for m in load.conns[p].inbox.drain(..) {
                    if let Message::LocateEnd { holders: h, .. } = m {
                        holders = Some(h);
                    }
                }
                if start.elapsed() > timeout {
                    return Err("a locate was not answered".into());
                }
            }
            took.push(start.elapsed());
        }
        took.sort();
        let pick = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "tracker-load: locate {} times at {} peers: p50 {:.3} ms, p99 {:.3} ms",
            took.len(),
            args.peers,
            pick(0.50).as_secs_f64() * 1e3,
            pick(0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

impl Load {
    /// Opens connection `i` from source address 127.0.0.(2 + i mod 253) and queues its
    /// `Hello` and `Register`.
    fn open(&mut self, i: usize) -> Result<(), String> {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8);
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        match socket.connect(&self.tracker.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            Err(e) => return Err(format!("connect to {}: {e}", self.tracker)),
        }
        let _ = socket.set_tcp_nodelay(true);
        let mut stream = TcpStream::from_std(socket.into());
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        self.conns.push(Conn {
            stream,
            connected: false,
            decoder: FrameDecoder::new(0),
            out: Vec::new(),
            out_pos: 0,
            inbox: Vec::new(),
        });
        let mut node = [0u8; 16];
        node[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: NodeId(node),
            // Unique per source address: the tracker refuses a second peer at one address.
            listen_port: 10_000 + (i / SOURCES) as u16,
            nonce: [7; 16],
        };
        self.send(i, &Message::Hello(hello));
        self.send(i, &Message::Register);
        Ok(())
    }

    fn send(&mut self, i: usize, m: &Message) {
        let mut frame = [0u8; 1024];
        // Every message built here is small.
        if let Ok(n) = encode_frame(m, &mut frame) {
            self.conns[i].out.extend_from_slice(&frame[..n]);
            self.dirty.insert(i);
        }
    }

    /// Writes what is queued and reads what arrived until something was received (or, with
    /// a zero timeout, once).
    fn pump(&mut self, timeout: Duration) -> Result<(), String> {
        let mut events = Events::with_capacity(4096);
        let deadline = Instant::now() + timeout;
        let mut got = false;
        loop {
            // Output first: waiting for an event before writing what is queued would wait
            // for nothing.
            for i in std::mem::take(&mut self.dirty) {
                got |= self.service(i)?;
            }
            if got || timeout.is_zero() || Instant::now() >= deadline {
                return Ok(());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
            for ev in events.iter() {
                got |= self.service(ev.token().0)?;
            }
        }
    }

    /// Writes and reads connection `i` until it would block; true if a message arrived.
    fn service(&mut self, i: usize) -> Result<bool, String> {
        let c = &mut self.conns[i];
        if !c.connected {
            match c.stream.peer_addr() {
                Ok(_) => c.connected = true,
                // Its writable event will come once connected; the output waits for it.
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(format!("connection {i}: {e}")),
            }
        }
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {i}: write: {e}")),
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        let mut got = false;
        loop {
            match c.stream.read(&mut self.buf) {
                Ok(0) => return Err(format!("connection {i}: the tracker closed it")),
                Ok(n) => {
                    let mut at = 0;
                    while at < n {
                        match c.decoder.decode(&self.buf[at..n]) {
                            Ok((0, None)) => break,
                            Ok((used, item)) => {
                                at += used;
                                if let Some(Item::Message(m)) = item {
                                    c.inbox.push(m);
                                    got = true;
                                }
                            }
                            Err(e) => return Err(format!("connection {i}: bad frame: {e}")),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(got),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {i}: read: {e}")),
            }
        }
    }
}

/// `EINPROGRESS` on Linux: a non-blocking connect under way.
fn libc_einprogress() -> i32 {
    115
}
