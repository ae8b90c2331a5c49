//! A deterministic swarm simulator: one tracker and many peers from proto-core in one process,
//! joined by a simulated network, with time that jumps to the next event.
//!
//! # The network
//!
//! Connections are reliable ordered byte streams, as TCP gives the core. Each node has an
//! uplink and a downlink of a set bandwidth. A node's uplink sends segments of at most
//! [`SEGMENT`] bytes, taking its connections in turn, so connections share it fairly. A segment
//! reaches the other end after the latency (plus jitter), then waits for the receiver's
//! downlink. Loss is what it does to TCP: a lost segment arrives one retransmission timeout
//! late, holding up the stream behind it, and now and then a connection is reset instead.
//!
//! Every event is ordered by (time, sequence number), and every random choice comes from one
//! seeded generator, so a seed reproduces a run exactly.
//!
//! # What it checks
//!
//! Each peer stores what it is sent. When a peer reports a chunk verified, the simulator hashes
//! what that peer stored for it: a mismatch counts in `bad_chunks_written`. At the end every
//! complete peer's file is compared with the original.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;

use proto_core::auth::SwarmKey;
use proto_core::conn::ConnId;
use proto_core::io::{Action, Output, Transmit, FRAME_BUF_LEN};
use proto_core::manifest::{Built, ChunkHash, ManifestBuilder, ManifestHeader};
use proto_core::node::Node as _;
use proto_core::peer::{Peer, PeerConfig, PeerEvent};
use proto_core::storage::Storage;
use proto_core::storage::{Region, StorageKey};
use proto_core::testing::MemStore;
use proto_core::time::{Duration, Instant};
use proto_core::tracker::{Tracker, TrackerConfig, TrackerEvent};
use proto_core::wire::{BlockRef, FileId, FrameDecoder, Item, Message, NodeId};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::hostile::{Attack, Hostile};

/// The peer simulated: files of up to 4096 chunks, heap tables limited to 32 connections, 2
/// files and 64 chunks in flight (see `start_node`).
pub type SimPeer = Peer<'static, 128>;
/// The tracker simulated: heap tables with the default limits, as `shoal tracker` runs.
pub type SimTracker = Tracker<'static>;

/// Largest segment a link sends at once.
pub const SEGMENT: usize = 16 * 1024;
/// Bytes a connection may have queued for sending before the core is told to hold back.
pub const SEND_BUFFER: usize = 64 * 1024;
const TRACKER_PORT: u16 = 7070;
const PEER_PORT: u16 = 7000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Peers in all (seeders included).
    pub peers: usize,
    /// Peers that start with the whole file.
    pub seeders: usize,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_bytes: u32,
    /// Probability that a segment is lost (arrives one RTO late).
    pub loss: f64,
    /// One-way latency.
    pub latency: Duration,
    /// Extra random one-way delay, uniform in 0..jitter.
    pub jitter: Duration,
    /// Upload bandwidth of every peer, bytes per second.
    pub up: u64,
    /// Download bandwidth of every peer, bytes per second.
    pub down: u64,
    /// Downloaders that crash at random times during the transfer.
    pub crashes: usize,
    /// Crash the tracker mid-transfer (and restart it a little later).
    pub crash_tracker: bool,
    /// Peers (among the seeders) whose served blocks are corrupted.
    pub corrupt_seeders: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Stop after this much simulated time.
    pub time_limit: Duration,
    /// Record every block request seen on the wire (for tests).
    pub sniff: bool,
    /// Changes applied to each peer's configuration, given the peer's node index (tuning
    /// experiments, a slow or limited peer).
    pub tune: fn(usize, &mut PeerConfig),
    /// The swarm key of the tracker and of every peer (before `tune`, which may change it).
    pub swarm_key: Option<SwarmKey>,
    /// A hostile node added after the peers (node `peers + 1`), and what it does.
    pub hostile: Option<Attack>,
    /// Bytes per block request (`PeerConfig::block_len`); `None` keeps the peer's default.
    pub request_bytes: Option<u32>,
    /// Connections per peer (`PeerConfig::max_conns`). Default 32, what the simulated peers
    /// had since their tables were sized at compile time (the shipped default is 64).
    pub max_conns: u16,
    /// Whether peers serve blocks of chunks they are still fetching
    /// (`PeerConfig::serve_partial`).
    pub serve_partial: bool,
    /// Downloaders (the last ones) whose links are ten times slower, both ways.
    pub slow_peers: usize,
    /// Trackers: node 0, and the rest after the peers (and the hostile node); every peer
    /// registers with all of them.
    pub trackers: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            peers: 5,
            seeders: 1,
            file_bytes: 4 << 20,
            chunk_bytes: 256 * 1024,
            loss: 0.0,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            up: 12_500_000,
            down: 12_500_000,
            crashes: 0,
            crash_tracker: false,
            corrupt_seeders: 0,
            seed: 1,
            time_limit: Duration::from_secs(600),
            sniff: false,
            tune: |_, _| {},
            swarm_key: None,
            hostile: None,
            request_bytes: None,
            max_conns: 32,
            serve_partial: true,
            slow_peers: 0,
            trackers: 1,
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// Downloaders (alive at the end) that completed.
    pub completed: usize,
    /// Downloaders alive at the end.
    pub downloaders: usize,
    /// Simulated seconds until the last surviving downloader completed (or the time limit).
    pub sim_secs: f64,
    /// The fluid lower bound for distributing the file to the downloaders, in seconds.
    pub bound_secs: f64,
    /// `bound_secs / sim_secs`.
    pub efficiency: f64,
    /// Simulated seconds by which half the downloaders completed.
    pub p50_secs: f64,
    /// Simulated seconds by which 99% of the downloaders completed (those that never did
    /// count as the end of the run).
    pub p99_secs: f64,
    /// Bytes the seeders uploaded, over the file's size: 1.0 when every byte left a seeder
    /// once.
    pub seed_upload: f64,
    /// Chunks a peer reported verified whose stored bytes did not match the hash.
    pub bad_chunks_written: u64,
    /// Complete peers whose file differs from the original.
    pub corrupt_files: usize,
    /// The seed.
    pub seed: u64,
}

impl Report {
    /// The summary line the `sim` binary prints.
    pub fn line(&self) -> String {
        format!(
            "sim: completed {}/{} peers, {:.2} simulated s, bound {:.2} s, efficiency {:.3}, p50 {:.2} s, p99 {:.2} s, bad_chunks_written {}, seed {}",
            self.completed, self.downloaders, self.sim_secs, self.bound_secs, self.efficiency, self.p50_secs, self.p99_secs, self.bad_chunks_written, self.seed
        )
    }

    /// True when every surviving downloader finished with a correct file and nothing
    /// unverified was ever reported verified.
    pub fn ok(&self) -> bool {
        self.completed == self.downloaders
            && self.bad_chunks_written == 0
            && self.corrupt_files == 0
    }
}

/// A scheduled intervention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The node stops at once; its connections are reset.
    Crash(usize),
    /// The node starts again from what its storage kept.
    Restart(usize),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Fault(Fault),
    Timer {
        node: usize,
        generation: u64,
    },
    Uplink {
        node: usize,
    },
    Deliver {
        link: u64,
        to: usize,
        bytes: Vec<u8>,
    },
    Fin {
        link: u64,
        to: usize,
    },
    Reset {
        link: u64,
    },
    Accept {
        link: u64,
    },
    Connected {
        link: u64,
    },
    Refused {
        node: usize,
        conn: ConnId,
    },
}

enum Core {
    Tracker(Box<SimTracker>),
    Peer(Box<SimPeer>),
    Hostile(Box<Hostile>),
    Down,
}

/// What a peer keeps across a crash: the stored hashes, data and the journal of verified
/// chunks (as adapter-std will keep them on disk).
#[derive(Default, Clone)]
struct Store {
    hashes: Vec<u8>,
    data: Vec<Stored>,
    verified: Vec<bool>,
    manifest: Option<(FileId, ManifestHeader)>,
}

/// One stored chunk. No chunk is kept as a copy of the original's bytes: a chunk being
/// written is kept as its difference from the original (see [`Partial`]), so a thousand
/// simulated peers of a 64 MiB file fit in memory.
#[derive(Clone)]
enum Stored {
    Missing,
    Original,
    Written(Partial),
}

/// A chunk being written, as its difference from the original: how far each of its blocks was
/// written, and a copy of only the blocks whose bytes differ from the original's (what a
/// corrupting sender wrote).
#[derive(Clone, Default)]
struct Partial {
    /// Per block, the end of the bytes written (from the block's start).
    written: Vec<u32>,
    /// Blocks whose bytes differ from the original, whole.
    differ: BTreeMap<u32, Vec<u8>>,
}

impl Partial {
    /// Writes `data` at `within` of chunk `chunk` (whose original bytes are `orig`), blocks
    /// of `block` bytes.
    fn write(&mut self, orig: &[u8], block: u32, within: u64, data: &[u8]) {
        let block = block as usize;
        let mut at = within as usize;
        let mut rest = data;
        while !rest.is_empty() && at < orig.len() {
            let k = at / block;
            let (start, end) = (k * block, ((k + 1) * block).min(orig.len()));
            let n = rest.len().min(end - at);
            let (piece, tail) = rest.split_at(n);
            let same = piece == &orig[at..at + n];
            let key = k as u32;
            match self.differ.get_mut(&key) {
                Some(bytes) => {
                    bytes[at - start..at - start + n].copy_from_slice(piece);
                    if bytes[..] == orig[start..end] {
                        self.differ.remove(&key);
                    }
                }
                None if !same => {
                    let mut bytes = orig[start..end].to_vec();
                    bytes[at - start..at - start + n].copy_from_slice(piece);
                    self.differ.insert(key, bytes);
                }
                None => {}
            }
            if self.written.len() <= k {
                self.written.resize(k + 1, 0);
            }
            let w = &mut self.written[k];
            *w = (*w).max((at + n - start) as u32);
            at += n;
            rest = tail;
        }
    }

    /// Whether every byte was written and equals the original's.
    fn is_original(&self, orig: &[u8], block: u32) -> bool {
        let blocks = orig.len().div_ceil(block as usize);
        self.differ.is_empty()
            && self.written.len() == blocks
            && self
                .written
                .iter()
                .enumerate()
                .all(|(k, &w)| w as usize == (orig.len() - k * block as usize).min(block as usize))
    }

    /// The chunk's bytes as stored: the original's, with differing blocks and nothing where
    /// nothing was written.
    fn bytes(&self, orig: &[u8], block: u32) -> Vec<u8> {
        let block = block as usize;
        let mut out = vec![0; orig.len()];
        for (k, &w) in self.written.iter().enumerate() {
            let start = k * block;
            let end = start + w as usize;
            match self.differ.get(&(k as u32)) {
                Some(bytes) => out[start..end].copy_from_slice(&bytes[..w as usize]),
                None => out[start..end].copy_from_slice(&orig[start..end]),
            }
        }
        out
    }
}

struct Node {
    core: Core,
    addr: SocketAddr,
    up: u64,
    down: u64,
    up_busy: bool,
    up_free_at: Instant,
    down_free_at: Instant,
    /// Outgoing directions with bytes to send, in turn.
    up_queue: VecDeque<u64>,
    links: BTreeMap<ConnId, u64>,
    timer: Option<(Instant, u64)>,
    generation: u64,
    store: Store,
    seeder: bool,
    corrupt: bool,
    slot: Option<u16>,
    completed_at: Option<Instant>,
    /// Bytes this node's uplink has sent.
    uploaded: u64,
    /// The most bytes this node ever had queued on one connection (its send buffer's peak).
    peak_queued: usize,
    hostile: bool,
    /// Started only by a `Restart` fault (see [`Sim::join_later`]).
    held: bool,
    /// Nodes whose addresses this peer is given to join through (`Peer::add_peer`).
    via: Vec<usize>,
    /// Connections it tried to addresses where no node ever was.
    dials_nowhere: u64,
}

/// One TCP connection: side 0 opened it, side 1 accepted it.
struct Link {
    ends: [(usize, Option<ConnId>); 2],
    out: [VecDeque<u8>; 2],
    /// A FIN follows the queued bytes of this side.
    fin: [bool; 2],
    blocked: [bool; 2],
    /// Bytes delivered but not yet taken by the receiving core (backpressure).
    inbox: [Vec<u8>; 2],
    last_arrival: [Instant; 2],
    sniff: [Option<FrameDecoder>; 2],
    dead: bool,
}

/// A block request seen on the wire.
#[derive(Clone, Copy, Debug)]
pub struct SeenRequest {
    /// When it was sent.
    pub at: Instant,
    /// The requesting node.
    pub from: usize,
    /// The node asked.
    pub to: usize,
    /// The block.
    pub block: BlockRef,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    rng: Xoshiro256PlusPlus,
    nodes: Vec<Node>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    original: Vec<u8>,
    /// The leaves of `original` (see `read_stored` for why a peer's own are not kept).
    leaves: Vec<u8>,
    hashes: Vec<u8>,
    file: FileId,
    header: ManifestHeader,
    bad_chunks: u64,
    /// The tracker's stored hashes, per file slot (lost when it crashes, like its RAM).
    /// Each tracker's store, by node.
    tracker_stores: BTreeMap<usize, MemStore>,
    /// The tracker nodes, node 0 first.
    trackers: Vec<usize>,
    /// Every peer event, with its time and node.
    pub events: Vec<(Instant, usize, PeerEvent)>,
    /// Every tracker event, with its time.
    pub tracker_events: Vec<(Instant, TrackerEvent)>,
    /// Block requests seen on the wire (with `sniff`).
    pub requests: Vec<SeenRequest>,
    /// Block headers sent on the wire (with `sniff`): `from` sent `block` to `to`.
    pub blocks_sent: Vec<SeenRequest>,
    /// Bytes sent by all uplinks together, per 100 ms of simulated time.
    pub upload_timeline: Vec<u64>,
    /// Rejects seen on the wire, by reason (with `sniff`).
    pub rejects: std::collections::BTreeMap<String, u64>,
    /// Bytes downloaders' downlinks delivered, per 100 ms (where they finished arriving).
    pub download_timeline: Vec<u64>,
}

/// Node 0 is the tracker; peers are 1..=peers, seeders first.
pub const TRACKER: usize = 0;

impl Sim {
    /// Builds the swarm: content derived from the seed, a tracker, seeders and downloaders.
    pub fn new(cfg: SimConfig) -> Self {
        Self::with_setup(cfg, |_| {})
    }

    /// Like [`Sim::new`], with `setup` run on the swarm before any node starts (to give a
    /// peer part of the file, say).
    pub fn with_setup(cfg: SimConfig, setup: impl FnOnce(&mut Sim)) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let mut original = vec![0u8; cfg.file_bytes as usize];
        rng.fill_bytes(&mut original);
        let header = ManifestHeader::new("sim.bin", cfg.file_bytes, cfg.chunk_bytes)
            .expect("valid sim header");
        let mut builder = ManifestBuilder::new(header);
        let (mut hashes, mut leaves) = (Vec::new(), Vec::new());
        builder
            .update(&original, |built| match built {
                Built::Leaf { leaf, .. } => leaves.extend_from_slice(&leaf),
                Built::Chunk { hash, .. } => hashes.extend_from_slice(&hash.0),
            })
            .expect("sized to the header");
        let (header, file) = builder.finish().expect("sized to the header");
        let mut sim = Sim {
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes: Vec::new(),
            links: BTreeMap::new(),
            next_link: 0,
            original,
            leaves,
            hashes,
            file,
            header,
            bad_chunks: 0,
            tracker_stores: BTreeMap::new(),
            trackers: vec![TRACKER],
            events: Vec::new(),
            tracker_events: Vec::new(),
            requests: Vec::new(),
            blocks_sent: Vec::new(),
            upload_timeline: Vec::new(),
            rejects: Default::default(),
            download_timeline: Vec::new(),
            cfg,
        };
        let tracker_addr = SocketAddr::from(([10, 0, 0, 1], TRACKER_PORT));
        sim.nodes
            .push(sim.node_shell(tracker_addr, u64::MAX / 4, u64::MAX / 4));
        for i in 1..=sim.cfg.peers {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 2) as u8], PEER_PORT));
            let slow = i + sim.cfg.slow_peers > sim.cfg.peers && i > sim.cfg.seeders;
            let (up, down) = if slow {
                (sim.cfg.up / 10, sim.cfg.down / 10)
            } else {
                (sim.cfg.up, sim.cfg.down)
            };
            let mut n = sim.node_shell(addr, up, down);
            n.seeder = i <= sim.cfg.seeders;
            n.corrupt = i <= sim.cfg.corrupt_seeders;
            sim.nodes.push(n);
        }
        if sim.cfg.hostile.is_some() {
            let addr = SocketAddr::from(([10, 9, 9, 9], PEER_PORT));
            let mut n = sim.node_shell(addr, sim.cfg.up, sim.cfg.down);
            n.hostile = true;
            sim.nodes.push(n);
        }
        for k in 1..sim.cfg.trackers {
            let addr = SocketAddr::from(([10, 0, 255, k as u8], TRACKER_PORT));
            sim.trackers.push(sim.nodes.len());
            sim.nodes
                .push(sim.node_shell(addr, u64::MAX / 4, u64::MAX / 4));
        }
        setup(&mut sim);
        for i in 0..sim.nodes.len() {
            if !sim.nodes[i].held {
                sim.start_node(i);
            }
        }
        sim.plan_faults();
        sim
    }

    fn node_shell(&self, addr: SocketAddr, up: u64, down: u64) -> Node {
        Node {
            core: Core::Down,
            addr,
            up,
            down,
            up_busy: false,
            up_free_at: Instant::ZERO,
            down_free_at: Instant::ZERO,
            up_queue: VecDeque::new(),
            links: BTreeMap::new(),
            timer: None,
            generation: 0,
            store: Store::default(),
            seeder: false,
            corrupt: false,
            slot: None,
            completed_at: None,
            uploaded: 0,
            peak_queued: 0,
            hostile: false,
            held: false,
            via: Vec::new(),
            dials_nowhere: 0,
        }
    }

    /// Random crash times for downloaders, and the tracker crash, if configured.
    fn plan_faults(&mut self) {
        // Crashes land in the first part of a transfer that would take bound seconds.
        let bound = self.bound_secs().max(0.5);
        let downloaders: Vec<usize> = (self.cfg.seeders + 1..=self.cfg.peers).collect();
        for k in 0..self.cfg.crashes.min(downloaders.len()) {
            let node = downloaders[downloaders.len() - 1 - k];
            let at = Duration::from_micros(
                (self.rng.next_u64() % ((bound * 0.6e6) as u64 + 1)) + 100_000,
            );
            self.at(Instant::ZERO + at, Fault::Crash(node));
        }
        if self.cfg.crash_tracker {
            let at = Instant::from_micros((bound * 0.3e6) as u64 + 200_000);
            self.at(at, Fault::Crash(TRACKER));
            self.at(at + Duration::from_secs(8), Fault::Restart(TRACKER));
        }
    }

    /// Schedules a fault.
    pub fn at(&mut self, at: Instant, fault: Fault) {
        self.push(at, Ev::Fault(fault));
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Creates a node's core, from its storage.
    fn start_node(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].generation += 1;
        if self.trackers.contains(&i) {
            self.tracker_stores.insert(i, MemStore::default());
            let mut node = NodeId([0; 16]);
            node.0[0] = 0xff;
            let mut config = TrackerConfig::new(node);
            config.swarm_key = self.cfg.swarm_key;
            config.rng_seed = self.rng.next_u64();
            self.nodes[i].core = Core::Tracker(Box::new(SimTracker::new(config, now)));
            self.drain(i);
            return;
        }
        if let (true, Some(attack)) = (self.nodes[i].hostile, self.cfg.hostile) {
            let targets = (1..=self.cfg.peers).map(|p| self.nodes[p].addr).collect();
            let h = Hostile::new(
                attack,
                self.file,
                self.header.clone(),
                self.nodes[TRACKER].addr,
                targets,
                self.rng.next_u64(),
                now,
            );
            self.nodes[i].core = Core::Hostile(Box::new(h));
            self.drain(i);
            return;
        }
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        id[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let mut config = PeerConfig::new(NodeId(id), PEER_PORT, None);
        for &t in &self.trackers {
            config.trackers.push(self.nodes[t].addr);
        }
        config.max_conns = self.cfg.max_conns;
        config.max_files = 2;
        config.max_active = 64;
        config.rng_seed = self.rng.next_u64();
        config.swarm_key = self.cfg.swarm_key;
        config.serve_partial = self.cfg.serve_partial;
        if let Some(b) = self.cfg.request_bytes {
            config.block_len = b;
        }
        (self.cfg.tune)(i, &mut config);
        let mut peer = Box::new(SimPeer::new(config, now));
        let n = &mut self.nodes[i];
        let count = self.header.chunk_count() as usize;
        if n.seeder {
            n.store = Store {
                hashes: self.hashes.clone(),
                data: vec![Stored::Original; count],
                verified: vec![true; count],
                manifest: Some((self.file, self.header.clone())),
            };
            n.slot = peer.share(now, self.file, self.header.clone()).ok();
        } else if let Some((file, header)) = n.store.manifest.clone() {
            let have: Vec<u32> = (0..count as u32)
                .filter(|&c| n.store.verified[c as usize])
                .collect();
            n.slot = peer.resume(now, file, header, have).ok();
        } else {
            n.store = Store::default();
            n.slot = peer.fetch(now, self.file).ok();
        }
        if let Some(slot) = n.slot {
            let via = n.via.clone();
            let via: Vec<SocketAddr> = via.iter().map(|&v| self.nodes[v].addr).collect();
            for addr in via {
                let _ = peer.add_peer(now, slot, addr);
            }
        }
        let n = &mut self.nodes[i];
        n.core = Core::Peer(peer);
        self.drain(i);
    }

    /// Makes peer `i` start with only the chunks `have`, as a fetch that resumes. Use it in
    /// the setup of [`Sim::with_setup`].
    pub fn give_partial(&mut self, i: usize, have: impl Fn(u32) -> bool) {
        let count = self.header.chunk_count();
        let n = &mut self.nodes[i];
        n.seeder = false;
        n.store = Store {
            hashes: self.hashes.clone(),
            data: (0..count)
                .map(|c| {
                    if have(c) {
                        Stored::Original
                    } else {
                        Stored::Missing
                    }
                })
                .collect(),
            verified: (0..count).map(&have).collect(),
            manifest: Some((self.file, self.header.clone())),
        };
    }

    /// Makes node `i` start only at `at`, joining through the nodes `via` (given to it as
    /// peers to try) as well as the trackers. Use it in the setup of [`Sim::with_setup`].
    pub fn join_later(&mut self, i: usize, at: Instant, via: Vec<usize>) {
        self.nodes[i].held = true;
        self.nodes[i].via = via;
        self.at(at, Fault::Restart(i));
    }

    /// The address node `i` listens on.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// The tracker nodes: node 0, then the others.
    pub fn tracker_nodes(&self) -> &[usize] {
        &self.trackers
    }

    /// Connections node `i` tried to open to addresses where no node ever was.
    pub fn dials_nowhere(&self, i: usize) -> u64 {
        self.nodes[i].dials_nowhere
    }

    /// Runs until every live downloader completes or the time limit; returns the report.
    pub fn run(&mut self) -> Report {
        let limit = Instant::ZERO + self.cfg.time_limit;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > limit {
                break;
            }
            self.now = at;
            self.handle(ev);
            if self.all_done() && !self.pending_faults() {
                break;
            }
        }
        self.report()
    }

    /// Runs until simulated time `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, seq, ev))) = self.queue.pop() {
            if at > until {
                self.queue.push(Reverse((at, seq, ev)));
                break;
            }
            self.now = at;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    fn pending_faults(&self) -> bool {
        self.queue
            .iter()
            .any(|Reverse((_, _, e))| matches!(e, Ev::Fault(Fault::Restart(_))))
    }

    fn live_downloaders(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.seeder && matches!(n.core, Core::Peer(_)))
    }

    fn all_done(&self) -> bool {
        self.live_downloaders()
            .all(|(_, n)| n.completed_at.is_some())
    }

    /// The fluid lower bound: max(F/u_seed, F/d_min, N*F/(u_seed + sum of downloader uploads)).
    pub fn bound_secs(&self) -> f64 {
        let f = self.cfg.file_bytes as f64;
        let peers = self.nodes.iter().skip(1).take(self.cfg.peers);
        let (mut u_seed, mut u_down, mut d_min, mut n_down) = (0.0, 0.0, f64::MAX, 0.0);
        for n in peers {
            if n.seeder {
                u_seed += n.up as f64;
            } else {
                u_down += n.up as f64;
                d_min = d_min.min(n.down as f64);
                n_down += 1.0;
            }
        }
        (f / u_seed)
            .max(f / d_min)
            .max(n_down * f / (u_seed + u_down))
    }

    fn report(&mut self) -> Report {
        let mut corrupt_files = 0;
        let mut last = Instant::ZERO;
        let mut completed = 0;
        let mut downloaders = 0;
        let mut times = Vec::new();
        for (_, n) in self.live_downloaders() {
            downloaders += 1;
            times.push(n.completed_at.unwrap_or(self.now).total_micros() as f64 / 1e6);
            if let Some(t) = n.completed_at {
                completed += 1;
                last = last.max(t);
                let differs = n.store.data.iter().enumerate().any(|(c, s)| match s {
                    Stored::Original => false,
                    Stored::Missing => true,
                    Stored::Written(p) => !p.is_original(
                        &self.original[self.chunk_range(c as u32)],
                        self.header.block_len(),
                    ),
                });
                corrupt_files += usize::from(differs);
            }
        }
        let sim_secs = if completed == downloaders {
            last.total_micros() as f64 / 1e6
        } else {
            self.now.total_micros() as f64 / 1e6
        };
        let bound_secs = self.bound_secs();
        times.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            let at = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1));
            times.get(at - 1).copied().unwrap_or(0.0)
        };
        let seeded: u64 = self
            .nodes
            .iter()
            .filter(|n| n.seeder)
            .map(|n| n.uploaded)
            .sum();
        Report {
            p50_secs: quantile(0.5),
            p99_secs: quantile(0.99),
            seed_upload: seeded as f64 / self.cfg.file_bytes.max(1) as f64,
            completed,
            downloaders,
            sim_secs,
            bound_secs,
            efficiency: if sim_secs > 0.0 {
                bound_secs / sim_secs
            } else {
                0.0
            },
            bad_chunks_written: self.bad_chunks,
            corrupt_files,
            seed: self.cfg.seed,
        }
    }

    /// When peer `i` completed, if it did.
    pub fn completed_at(&self, i: usize) -> Option<Instant> {
        self.nodes[i].completed_at
    }

    /// Whether peer `i` holds chunk `chunk` verified (as its journal says).
    pub fn holds(&self, i: usize, chunk: u32) -> bool {
        self.nodes[i]
            .store
            .verified
            .get(chunk as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The number of chunks in the file.
    pub fn chunk_count(&self) -> u32 {
        self.header.chunk_count()
    }

    /// The peer core of node `i`, if it is up.
    pub fn peer(&self, i: usize) -> Option<&SimPeer> {
        match &self.nodes[i].core {
            Core::Peer(p) => Some(p),
            _ => None,
        }
    }

    /// The peer slot of node `i`'s file.
    pub fn slot(&self, i: usize) -> Option<u16> {
        self.nodes[i].slot
    }

    /// The hostile node, if the swarm has one (and it is up).
    pub fn hostile(&self) -> Option<&Hostile> {
        self.nodes.iter().find_map(|n| match &n.core {
            Core::Hostile(h) => Some(&**h),
            _ => None,
        })
    }

    /// The tracker core, if it is up.
    pub fn tracker(&self) -> Option<&SimTracker> {
        match &self.nodes[TRACKER].core {
            Core::Tracker(t) => Some(t),
            _ => None,
        }
    }

    /// The most bytes node `i` ever had queued for sending on one connection. The simulated
    /// socket tells a core to hold back past [`SEND_BUFFER`], so this stays near that bound
    /// unless a core ignores backpressure.
    pub fn peak_queued(&self, i: usize) -> usize {
        self.nodes[i].peak_queued
    }

    /// Bytes each node's uplink sent, by node index.
    pub fn uploaded(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.uploaded).collect()
    }

    /// Peer `i` leaves the swarm (the user's "leave"); its core is kept until it goes idle.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Core::Peer(p) = &mut self.nodes[i].core {
            p.leave(now);
        }
        self.drain(i);
    }

    /// Peer `i` drops its file (the user's "cancel" or "unshare"); it stays in the swarm.
    pub fn cancel(&mut self, i: usize) {
        let now = self.now;
        if let (Some(slot), Core::Peer(p)) = (self.slot(i), &mut self.nodes[i].core) {
            let _ = p.cancel(now, slot);
        }
        self.drain(i);
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    // ---- events ------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Fault(Fault::Crash(i)) => {
                self.nodes[i].core = Core::Down;
                self.nodes[i].timer = None;
                self.crash_links(i);
            }
            Ev::Fault(Fault::Restart(i)) => {
                if matches!(self.nodes[i].core, Core::Down) {
                    self.start_node(i);
                }
            }
            Ev::Timer { node, generation } => {
                if self.nodes[node].timer.is_some_and(|(_, g)| g == generation) {
                    self.nodes[node].timer = None;
                    let now = self.now;
                    match &mut self.nodes[node].core {
                        Core::Tracker(t) => t.handle_timeout(now),
                        Core::Peer(p) => p.handle_timeout(now),
                        Core::Hostile(h) => h.handle_timeout(now),
                        Core::Down => return,
                    }
                    self.drain(node);
                }
            }
            Ev::Uplink { node } => self.uplink(node),
            Ev::Deliver { link, to, bytes } => self.deliver(link, to, bytes),
            Ev::Fin { link, to } => self.close_side(link, to),
            Ev::Reset { link } => self.reset(link),
            Ev::Accept { link } => self.accept(link),
            Ev::Connected { link } => {
                let Some(l) = self.links.get(&link) else {
                    return;
                };
                let (node, conn) = l.ends[0];
                let Some(conn) = conn else {
                    return;
                };
                let now = self.now;
                match &mut self.nodes[node].core {
                    Core::Peer(p) => p.handle_connected(now, conn),
                    Core::Hostile(h) => h.handle_connected(now, conn),
                    _ => {}
                }
                self.drain(node);
            }
            Ev::Refused { node, conn } => {
                let now = self.now;
                match &mut self.nodes[node].core {
                    Core::Peer(p) => p.handle_closed(now, conn),
                    Core::Hostile(h) => h.handle_closed(now, conn),
                    _ => {}
                }
                self.drain(node);
            }
        }
    }

    fn one_way(&mut self) -> Duration {
        let jitter = self.cfg.jitter.total_micros();
        let extra = if jitter > 0 {
            self.rng.next_u64() % jitter
        } else {
            0
        };
        self.cfg.latency + Duration::from_micros(extra)
    }

    fn connect(&mut self, from: usize, conn: ConnId, addr: SocketAddr) {
        let target = self.nodes.iter().position(|n| n.addr == addr);
        let delay = self.one_way();
        match target.filter(|&t| !matches!(self.nodes[t].core, Core::Down)) {
            Some(t) => {
                let id = self.next_link;
                self.next_link += 1;
                let sniff = self.cfg.sniff;
                self.links.insert(
                    id,
                    Link {
                        ends: [(from, Some(conn)), (t, None)],
                        out: [VecDeque::new(), VecDeque::new()],
                        fin: [false; 2],
                        blocked: [false; 2],
                        inbox: [Vec::new(), Vec::new()],
                        last_arrival: [self.now; 2],
                        sniff: [0, 1].map(|_| sniff.then(|| FrameDecoder::new(u64::MAX))),
                        dead: false,
                    },
                );
                self.nodes[from].links.insert(conn, id);
                self.push(self.now + delay, Ev::Accept { link: id });
            }
            None => {
                if target.is_none() {
                    self.nodes[from].dials_nowhere += 1;
                }
                let at = self.now + delay.saturating_mul(2);
                self.push(at, Ev::Refused { node: from, conn });
            }
        }
    }

    fn accept(&mut self, link: u64) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let t = l.ends[1].0;
        let from = l.ends[0].0;
        let remote = self.nodes[from].addr;
        let remote = SocketAddr::new(remote.ip(), 40000 + (link % 20000) as u16);
        let now = self.now;
        let (accepted, evicted) = match &mut self.nodes[t].core {
            Core::Tracker(tr) => tr
                .handle_accept(now, remote)
                .map_or((None, None), |a| (Some(a.conn), a.evicted)),
            Core::Peer(p) => p
                .handle_accept(now, remote)
                .map_or((None, None), |a| (Some(a.conn), a.evicted)),
            Core::Hostile(h) => (h.handle_accept(now, remote), None),
            Core::Down => (None, None),
        };
        if let Some(gone) = evicted {
            // The core forgot it; its link closes as for a Close action.
            self.close_conn(t, gone);
        }
        let delay = self.one_way();
        match accepted {
            Some(c) => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.ends[1].1 = Some(c);
                }
                self.nodes[t].links.insert(c, link);
                self.push(now + delay, Ev::Connected { link });
            }
            None => {
                let conn = self.links.remove(&link).and_then(|l| l.ends[0].1);
                if let Some(conn) = conn {
                    self.nodes[from].links.remove(&conn);
                    self.push(now + delay, Ev::Refused { node: from, conn });
                }
            }
        }
    }

    /// Node `i` crashed: every connection it had is reset for the other side.
    fn crash_links(&mut self, i: usize) {
        let ids: Vec<u64> = self.nodes[i].links.values().copied().collect();
        self.nodes[i].links.clear();
        self.nodes[i].up_queue.clear();
        for id in ids {
            if let Some(l) = self.links.get_mut(&id) {
                l.dead = true;
            }
            let delay = self.one_way();
            self.push(self.now + delay, Ev::Reset { link: id });
        }
    }

    fn reset(&mut self, link: u64) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        let now = self.now;
        for (node, conn) in l.ends {
            let Some(conn) = conn else {
                continue;
            };
            if self.nodes[node].links.remove(&conn).is_none() {
                continue;
            }
            match &mut self.nodes[node].core {
                Core::Tracker(t) => t.handle_closed(now, conn),
                Core::Peer(p) => p.handle_closed(now, conn),
                Core::Hostile(h) => h.handle_closed(now, conn),
                Core::Down => continue,
            }
            self.drain(node);
        }
    }

    /// A FIN reached side `to`: it sees the close; the link goes when both sides closed.
    fn close_side(&mut self, link: u64, to: usize) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let (node, conn) = l.ends[to];
        let Some(conn) = conn else {
            return;
        };
        if self.nodes[node].links.remove(&conn).is_some() {
            let now = self.now;
            match &mut self.nodes[node].core {
                Core::Tracker(t) => t.handle_closed(now, conn),
                Core::Peer(p) => p.handle_closed(now, conn),
                Core::Hostile(h) => h.handle_closed(now, conn),
                Core::Down => {}
            }
            self.drain(node);
        }
        let l = self.links.get(&link);
        if l.is_some_and(|l| {
            l.ends
                .iter()
                .all(|(n, c)| c.is_none_or(|c| !self.nodes[*n].links.contains_key(&c)))
        }) {
            self.links.remove(&link);
        }
    }

    /// Queues bytes from `node` on its side of `link` and wakes its uplink.
    fn send(&mut self, node: usize, link: u64, bytes: &[u8]) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let side = usize::from(l.ends[0].0 != node);
        let was_empty = l.out[side].is_empty();
        l.out[side].extend(bytes);
        if self.cfg.sniff {
            if let Some(d) = l.sniff[side].as_mut() {
                let mut rest = bytes;
                while !rest.is_empty() {
                    match d.decode(rest) {
                        Ok((n, item)) => {
                            rest = &rest[n..];
                            let to = l.ends[1 - side].0;
                            let seen = match item {
                                Some(Item::Message(Message::Block(block))) => {
                                    Some((&mut self.blocks_sent, block))
                                }
                                Some(Item::Message(Message::Request(block))) => {
                                    Some((&mut self.requests, block))
                                }
                                Some(Item::Message(Message::Reject { reason, .. })) => {
                                    *self.rejects.entry(format!("{reason:?}")).or_default() += 1;
                                    None
                                }
                                _ => None,
                            };
                            if let Some((list, block)) = seen {
                                list.push(SeenRequest {
                                    at: self.now,
                                    from: node,
                                    to,
                                    block,
                                });
                            }
                            if n == 0 {
                                break;
                            }
                        }
                        Err(_) => {
                            l.sniff[side] = None;
                            break;
                        }
                    }
                }
            }
        }
        if was_empty {
            self.nodes[node].up_queue.push_back(link);
        }
        if !self.nodes[node].up_busy {
            self.nodes[node].up_busy = true;
            self.push(self.now, Ev::Uplink { node });
        }
    }

    /// The uplink of `node` sends one segment, taking its connections in turn.
    fn uplink(&mut self, node: usize) {
        let now = self.now;
        loop {
            let Some(link) = self.nodes[node].up_queue.pop_front() else {
                self.nodes[node].up_busy = false;
                return;
            };
            let Some(l) = self.links.get_mut(&link) else {
                continue;
            };
            if l.dead {
                continue;
            }
            let side = usize::from(l.ends[0].0 != node);
            let n = l.out[side].len().min(SEGMENT);
            // Copied slice by slice: collecting the drain byte by byte was a quarter of the
            // simulator's time.
            let (front, back) = l.out[side].as_slices();
            let from_front = n.min(front.len());
            let mut bytes = Vec::with_capacity(n);
            bytes.extend_from_slice(&front[..from_front]);
            bytes.extend_from_slice(&back[..n - from_front]);
            l.out[side].drain(..n);
            let more = !l.out[side].is_empty();
            let fin = !more && l.fin[side];
            let to = 1 - side;
            let receiver = l.ends[to].0;
            // Unblock the core once its queue has drained below half.
            let unblock = l.blocked[side] && l.out[side].len() < SEND_BUFFER / 2;
            if unblock {
                l.blocked[side] = false;
            }
            let conn = l.ends[side].1;
            if more {
                self.nodes[node].up_queue.push_back(link);
            }
            self.nodes[node].uploaded += n as u64;
            let bucket = (now.total_micros() / 100_000) as usize;
            if self.upload_timeline.len() <= bucket {
                self.upload_timeline.resize(bucket + 1, 0);
            }
            self.upload_timeline[bucket] += n as u64;
            let tx = Duration::from_micros(
                (n as u64).saturating_mul(1_000_000) / self.nodes[node].up.max(1),
            );
            let depart = now + tx;
            let arrive = depart + self.one_way();
            let mut late = None;
            if self.cfg.loss > 0.0
                && self.rng.next_u64() as f64 / u64::MAX as f64 > 1.0 - self.cfg.loss
            {
                // Lost: the retransmission arrives one RTO later (at least 200 ms).
                let rto = (self.cfg.latency.saturating_mul(4)).max(Duration::from_millis(200));
                let at = arrive + rto;
                late = Some(at);
                if self.rng.next_u64().is_multiple_of(100) {
                    self.push(at, Ev::Reset { link });
                }
            }
            let rx = Duration::from_micros(
                (n as u64).saturating_mul(1_000_000) / self.nodes[receiver].down.max(1),
            );
            let r = &mut self.nodes[receiver];
            // The downlink carries the segment in its turn; a lost one comes later, holding up
            // its own stream (below) but not the other connections sharing the downlink.
            let slot = arrive.max(r.down_free_at) + rx;
            r.down_free_at = slot;
            let deliver_at = late.map_or(slot, |t| t.max(slot));
            if !r.seeder {
                let bucket = (deliver_at.total_micros() / 100_000) as usize;
                if self.download_timeline.len() <= bucket {
                    self.download_timeline.resize(bucket + 1, 0);
                }
                self.download_timeline[bucket] += n as u64;
            }
            let l = self.links.get_mut(&link).expect("link looked up above");
            let deliver_at = deliver_at.max(l.last_arrival[to]);
            l.last_arrival[to] = deliver_at;
            if n > 0 {
                self.push(deliver_at, Ev::Deliver { link, to, bytes });
            }
            if fin {
                self.push(deliver_at, Ev::Fin { link, to });
            }
            if unblock {
                if let Some(c) = conn {
                    match &mut self.nodes[node].core {
                        Core::Tracker(t) => t.handle_send_ready(c),
                        Core::Peer(p) => p.handle_send_ready(c),
                        Core::Hostile(_) | Core::Down => {}
                    }
                    self.drain(node);
                }
            }
            self.nodes[node].up_free_at = depart;
            self.push(depart, Ev::Uplink { node });
            return;
        }
    }

    fn deliver(&mut self, link: u64, to: usize, bytes: Vec<u8>) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let (node, conn) = l.ends[to];
        let Some(conn) = conn else {
            return;
        };
        l.inbox[to].extend_from_slice(&bytes);
        self.feed(node, conn, link, to);
    }

    /// Offers the link's inbox to the core until it takes nothing more.
    fn feed(&mut self, node: usize, conn: ConnId, link: u64, side: usize) {
        loop {
            let now = self.now;
            let Some(l) = self.links.get_mut(&link) else {
                return;
            };
            let inbox = std::mem::take(&mut l.inbox[side]);
            let mut at = 0;
            while at < inbox.len() {
                let input = &inbox[at..];
                let (core, mut view) = split(
                    &mut self.nodes[node],
                    Content {
                        original: &self.original,
                        leaves: &self.leaves,
                        header: &self.header,
                    },
                );
                let never = &mut |_, e: Infallible| match e {};
                let consumed = match core {
                    Core::Tracker(t) => {
                        let store = self.tracker_stores.entry(node).or_default();
                        t.recv_stored(now, conn, input, store, never).0
                    }
                    Core::Peer(p) => p.recv_stored(now, conn, input, &mut view, never).0,
                    Core::Hostile(h) => h.handle_recv(now, conn, input),
                    Core::Down => return,
                };
                at += consumed;
                if consumed == 0 {
                    break;
                }
            }
            let left = inbox.len() - at;
            if let Some(l) = self.links.get_mut(&link) {
                l.inbox[side] = inbox[at..].to_vec();
            }
            self.drain(node);
            // A core that stopped reading until it could answer may take more now.
            if left == 0 || at == 0 {
                return;
            }
        }
    }

    /// Drains a node's outputs, carrying them out, until it has nothing more to say.
    fn drain(&mut self, i: usize) {
        if let Core::Hostile(_) = self.nodes[i].core {
            self.drain_hostile(i);
            return;
        }
        let mut buf = [0u8; FRAME_BUF_LEN];
        loop {
            let now = self.now;
            let (core, mut view) = split(
                &mut self.nodes[i],
                Content {
                    original: &self.original,
                    leaves: &self.leaves,
                    header: &self.header,
                },
            );
            let never = &mut |_, e: Infallible| match e {};
            let out = match core {
                Core::Tracker(t) => {
                    let store = self.tracker_stores.entry(i).or_default();
                    match t.poll_stored(now, store, &mut buf, never) {
                        Output::Event(e) => {
                            self.tracker_events.push((now, e));
                            continue;
                        }
                        Output::Transmit(t) => Output::Transmit(t),
                        Output::Action(a) => Output::Action(a),
                        Output::Timeout(t) => Output::Timeout(t),
                    }
                }
                Core::Peer(p) => p.poll_stored(now, &mut view, &mut buf, never),
                Core::Hostile(_) | Core::Down => return,
            };
            match out {
                Output::Transmit(tx) => self.transmit(i, tx, &buf),
                Output::Action(Action::Connect { conn, addr }) => self.connect(i, conn, addr),
                Output::Action(Action::Close(conn)) => self.close_conn(i, conn),
                // poll_stored reads hashes and discards on the node's store itself.
                Output::Action(Action::ReadHash { .. } | Action::Discard(_)) => {}
                // The simulated peers hash inline (`BlockCheck::Inline`); one configured
                // otherwise is answered at once, from its store.
                Output::Action(Action::HashBlock {
                    key,
                    offset,
                    len,
                    ticket,
                }) => {
                    if let Core::Peer(p) = core {
                        match proto_core::node::hash_stored(&mut view, key, offset, len) {
                            Ok(Some(digest)) => {
                                // Answered as it is asked: always taken.
                                let taken = p.handle_block_hash(now, ticket, digest);
                                assert!(taken, "an answer given at once is taken");
                            }
                            Ok(None) => p.handle_storage_failed(now, key),
                            Err(e) => match e {},
                        }
                    }
                }
                Output::Event(ev) => {
                    self.on_peer_event(i, &ev);
                    self.events.push((now, i, ev));
                }
                Output::Timeout(at) => {
                    // Every input is drained like this, so no event may have been dropped
                    // (a dropped one can be a journal record or a completion).
                    if let Core::Peer(p) = &self.nodes[i].core {
                        debug_assert_eq!(p.events_lost(), 0, "peer {i} dropped an event");
                    }
                    self.rearm(i, at);
                    return;
                }
            }
        }
    }

    /// Sends a frame (and the body it promises) on the link of `tx.conn`.
    fn transmit(&mut self, i: usize, tx: Transmit, buf: &[u8]) {
        let Some(&link) = self.nodes[i].links.get(&tx.conn) else {
            return;
        };
        let mut bytes = buf[..tx.len].to_vec();
        if let Some(s) = tx.then {
            bytes.extend_from_slice(&self.read_store(i, s.key, s.offset, s.len));
        }
        self.send(i, link, &bytes);
        let l = self
            .links
            .get_mut(&link)
            .expect("link exists: it was just sent on");
        let side = usize::from(l.ends[0].0 != i);
        let queued = l.out[side].len();
        self.nodes[i].peak_queued = self.nodes[i].peak_queued.max(queued);
        if queued > SEND_BUFFER && !l.blocked[side] {
            l.blocked[side] = true;
            match &mut self.nodes[i].core {
                Core::Tracker(t) => t.handle_send_blocked(tx.conn),
                Core::Peer(p) => p.handle_send_blocked(tx.conn),
                Core::Hostile(_) | Core::Down => {}
            }
        }
    }

    /// Sends a node's FIN on `conn` after what it has queued.
    fn close_conn(&mut self, i: usize, conn: ConnId) {
        let now = self.now;
        if let Some(link) = self.nodes[i].links.remove(&conn) {
            if let Some(l) = self.links.get_mut(&link) {
                let side = usize::from(l.ends[0].0 != i);
                l.fin[side] = true;
                l.ends[side].1 = None;
                let empty = l.out[side].is_empty();
                if empty {
                    self.nodes[i].up_queue.push_back(link);
                    if !self.nodes[i].up_busy {
                        self.nodes[i].up_busy = true;
                        self.push(now, Ev::Uplink { node: i });
                    }
                }
            }
        }
    }

    /// Carries out what the hostile node wants sent, opened and closed. It ignores
    /// backpressure: an attacker's own buffers are its problem.
    fn drain_hostile(&mut self, i: usize) {
        loop {
            let Core::Hostile(h) = &mut self.nodes[i].core else {
                return;
            };
            if let Some((conn, bytes)) = h.poll_transmit() {
                if let Some(&link) = self.nodes[i].links.get(&conn) {
                    self.send(i, link, &bytes);
                }
                continue;
            }
            match h.poll_action() {
                Some(Action::Connect { conn, addr }) => self.connect(i, conn, addr),
                Some(Action::Close(conn)) => self.close_conn(i, conn),
                Some(_) => {}
                None => break,
            }
        }
        if let Core::Hostile(h) = &self.nodes[i].core {
            let at = h.poll_timeout();
            self.rearm(i, at);
        }
    }

    fn on_peer_event(&mut self, i: usize, ev: &PeerEvent) {
        let n = &mut self.nodes[i];
        match ev {
            PeerEvent::ChunkVerified { chunk, .. } => {
                let range = self.chunk_range(*chunk);
                let chunk_size = self.header.chunk_size;
                let n = &mut self.nodes[i];
                let c = *chunk as usize;
                let orig = &self.original[range];
                let block = self.header.block_len();
                // What storage holds, checked against the manifest's hash independently of
                // the peer; bytes equal to the original's need no hashing again.
                let good = match n.store.data.get(c) {
                    Some(Stored::Written(p)) if p.is_original(orig, block) => true,
                    Some(Stored::Original) => true,
                    Some(Stored::Written(p)) => {
                        ChunkHash::of(&p.bytes(orig, block), chunk_size).0[..]
                            == self.hashes[c * 32..c * 32 + 32]
                    }
                    _ => ChunkHash::of(&[], chunk_size).0[..] == self.hashes[c * 32..c * 32 + 32],
                };
                if !good {
                    self.bad_chunks += 1;
                } else if let Some(s) = n.store.data.get_mut(c) {
                    // Checked equal: keep no second copy.
                    *s = Stored::Original;
                }
            }
            PeerEvent::FileComplete { .. } if !n.seeder && n.completed_at.is_none() => {
                n.completed_at = Some(self.now);
            }
            _ => {}
        }
    }

    /// Sets node `i`'s timer to `at` (the instant its drain ended with).
    fn rearm(&mut self, i: usize, at: Instant) {
        let n = &mut self.nodes[i];
        if n.timer.is_some_and(|(t, _)| t == at) {
            return;
        }
        n.generation += 1;
        let generation = n.generation;
        n.timer = Some((at, generation));
        self.push(
            at,
            Ev::Timer {
                node: i,
                generation,
            },
        );
    }

    fn read_store(&self, i: usize, key: StorageKey, offset: u64, len: u64) -> Vec<u8> {
        if let Some(store) = self.tracker_stores.get(&i) {
            return store.read_vec(key, offset, len);
        }
        let n = &self.nodes[i];
        let content = Content {
            original: &self.original,
            leaves: &self.leaves,
            header: &self.header,
        };
        read_stored(&n.store, content, n.corrupt, key, offset, len)
    }

    /// Byte range of chunk `c` in the file.
    fn chunk_range(&self, c: u32) -> std::ops::Range<usize> {
        chunk_range(&self.header, c)
    }
}

/// A peer's store as its core sees it, through the storage contract: writes, reads (with the
/// corruption of a corrupt seeder), discards and the journal.
struct StoreView<'a> {
    store: &'a mut Store,
    content: Content<'a>,
    corrupt: bool,
}

/// The file every peer of the swarm holds or fetches: its bytes, its leaves and its header.
#[derive(Clone, Copy)]
struct Content<'a> {
    original: &'a [u8],
    leaves: &'a [u8],
    header: &'a ManifestHeader,
}

impl Storage for StoreView<'_> {
    type Error = Infallible;

    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), Infallible> {
        write_store(self.store, key, offset, data, self.content);
        Ok(())
    }

    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8]) -> Result<usize, Infallible> {
        let got = read_stored(
            self.store,
            self.content,
            self.corrupt,
            key,
            offset,
            buf.len() as u64,
        );
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }

    fn discard(&mut self, key: StorageKey) {
        if key.region == Region::Hashes {
            self.store.hashes.clear();
        }
    }

    fn manifest_received(
        &mut self,
        _slot: u16,
        file: FileId,
        header: &ManifestHeader,
    ) -> Result<(), Infallible> {
        let count = header.chunk_count() as usize;
        self.store.manifest = Some((file, header.clone()));
        self.store.data = vec![Stored::Missing; count];
        self.store.verified = vec![false; count];
        Ok(())
    }

    fn chunk_verified(&mut self, _slot: u16, chunk: u32) -> Result<(), Infallible> {
        if let Some(v) = self.store.verified.get_mut(chunk as usize) {
            *v = true;
        }
        Ok(())
    }
}

/// Byte range of chunk `c` in the file.
fn chunk_range(header: &ManifestHeader, c: u32) -> std::ops::Range<usize> {
    let start = header.chunk_offset(c) as usize;
    start..start + header.chunk_len(c) as usize
}

/// A node's core, and its store as the core sees it.
fn split<'a>(n: &'a mut Node, content: Content<'a>) -> (&'a mut Core, StoreView<'a>) {
    let view = StoreView {
        store: &mut n.store,
        content,
        corrupt: n.corrupt,
    };
    (&mut n.core, view)
}

/// `len` bytes at `offset` of `key` in a peer's store.
fn read_stored(
    store: &Store,
    content: Content<'_>,
    corrupt: bool,
    key: StorageKey,
    offset: u64,
    len: u64,
) -> Vec<u8> {
    let Content {
        original,
        leaves,
        header,
    } = content;
    let src: &[u8] = match key.region {
        Region::Hashes => &store.hashes,
        // A peer serves only leaves it checked against their chunk's root (of a verified
        // chunk, or of one it is fetching): they are the original's, so the simulator keeps
        // one copy for every peer (a thousand copies of a 64 MiB file's would be 128 MB).
        Region::Leaves => leaves,
        Region::Data => {
            // Reads for serving stay inside one chunk.
            let c = (offset / u64::from(header.chunk_size)) as u32;
            let base = header.chunk_offset(c);
            let orig = &original[chunk_range(header, c)];
            let start = ((offset - base) as usize).min(orig.len());
            let end = ((offset - base + len) as usize).min(orig.len());
            let mut out = match store.data.get(c as usize) {
                Some(Stored::Original) => orig[start..end].to_vec(),
                Some(Stored::Written(p)) if p.differ.is_empty() => orig[start..end].to_vec(),
                Some(Stored::Written(p)) => p.bytes(orig, header.block_len())[start..end].to_vec(),
                _ => Vec::new(),
            };
            if corrupt {
                for b in out.iter_mut().step_by(997) {
                    *b ^= 0x5a;
                }
            }
            return out;
        }
    };
    let start = (offset as usize).min(src.len());
    let end = (offset + len).min(src.len() as u64) as usize;
    src[start..end].to_vec()
}

fn write_store(store: &mut Store, key: StorageKey, offset: u64, data: &[u8], content: Content<'_>) {
    let header = content.header;
    match key.region {
        Region::Hashes => put(&mut store.hashes, offset, data),
        // Not kept (see `read_stored`).
        Region::Leaves => {}
        Region::Data => {
            // The core writes block payload, which never crosses a chunk boundary.
            let c = (offset / u64::from(header.chunk_size)) as u32;
            let within = offset - header.chunk_offset(c);
            let Some(slot) = store.data.get_mut(c as usize) else {
                return;
            };
            if !matches!(slot, Stored::Written(_)) {
                *slot = Stored::Written(Partial::default());
            }
            if let Stored::Written(p) = slot {
                let orig = &content.original[chunk_range(header, c)];
                p.write(orig, header.block_len(), within, data);
            }
        }
    }
}

fn put(dst: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if dst.len() < end {
        dst.resize(end, 0);
    }
    dst[offset as usize..end].copy_from_slice(data);
}

#[cfg(test)]
mod partial_tests {
    use super::Partial;

    #[test]
    fn a_partial_chunk_keeps_only_what_differs_from_the_original() {
        let orig: Vec<u8> = (0..40_000u32).map(|i| (i * 13) as u8).collect();
        let mut p = Partial::default();
        p.write(&orig, 16_384, 0, &orig[..20_000]);
        assert!(p.differ.is_empty());
        assert!(!p.is_original(&orig, 16_384), "not all written yet");
        // A corrupt piece across the second and third blocks is kept, and shows.
        let mut bad = orig[20_000..40_000].to_vec();
        bad[15_000] ^= 1;
        p.write(&orig, 16_384, 20_000, &bad);
        assert_eq!(p.differ.len(), 1);
        assert!(!p.is_original(&orig, 16_384));
        assert_eq!(p.bytes(&orig, 16_384)[20_000..], bad[..]);
        // Written again right, the copy goes.
        p.write(&orig, 16_384, 32_768, &orig[32_768..]);
        assert!(p.differ.is_empty());
        assert!(p.is_original(&orig, 16_384));
        assert_eq!(p.bytes(&orig, 16_384), orig);
    }
}
