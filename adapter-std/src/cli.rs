//! The `shoal` commands, as functions the binary and the demo share.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use mio::net::TcpListener;
use proto_core::auth::SwarmKey;
use proto_core::link::Link;
use proto_core::manifest::{ManifestHeader, Name};
use proto_core::peer::{
    BlockCheck, FetchFailure, HostPeer, PeerConfig, PeerEvent, Progress, MAX_TRACKERS,
};
use proto_core::time::Instant;
use proto_core::tracker::{Table, Tracker, TrackerConfig, TrackerEvent};
use proto_core::wire::{ChunkRange, FileEntry, FileId, HolderItem, NodeId, PeerEntry, Refusal};

use crate::driver::{Driver, MemoryHashes, Stop};
use crate::status::StatusPage;
use crate::store::{manifest_for, output_exists, part_paths, read_journal, FileStore, Resume};

/// The tracker address used when none is given.
pub const DEFAULT_TRACKER: &str = "127.0.0.1:7070";
/// How long to wait for the tracker (and for a manifest it says it does not have) before
/// giving up: `$SHOAL_WAIT` seconds, default 10.
pub fn wait_limit() -> StdDuration {
    let secs = std::env::var("SHOAL_WAIT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(10.0);
    StdDuration::from_secs_f64(secs.clamp(0.1, 86_400.0))
}

/// The swarm key every node this process runs proves, once loaded.
static SWARM_KEY: OnceLock<SwarmKey> = OnceLock::new();

fn swarm_key() -> Option<SwarmKey> {
    SWARM_KEY.get().copied()
}

/// Reads a swarm key file (64 hex digits) and uses that key for every node this process runs.
pub fn load_swarm_key(path: &Path) -> anyhow::Result<()> {
    let make = format!("make one with `shoal keygen {}`", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read swarm key file {}: {e}; {make}", path.display()))?;
    let text = text.trim();
    let mut key = [0u8; 32];
    let ok = text.len() == 64
        && text.is_ascii()
        && key.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if !ok {
        bail!(
            "swarm key file {} must hold exactly 64 hex digits (32 bytes); {make}",
            path.display()
        );
    }
    // Set once, by main, before any node starts.
    let _ = SWARM_KEY.set(SwarmKey(key));
    Ok(())
}

/// Writes a new random swarm key to `path`, readable by its owner only; never overwrites.
pub fn keygen(path: &Path) -> anyhow::Result<()> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow!("no randomness from the OS: {e}"))?;
    let text = hex::encode(key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow!(
            "{} already exists; keys are never overwritten, choose another path",
            path.display()
        ),
        _ => anyhow!("cannot create {}: {e}", path.display()),
    })?;
    writeln!(f, "{text}")
        .and_then(|()| f.sync_all())
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// A seed from the OS generator: with a swarm key, handshake nonces must be unpredictable.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    u64::from_le_bytes(seed)
}

/// The error for a refusal by the tracker that retrying cannot fix; `None` for one that it can
/// (a full table, a duplicate that will time out).
pub(crate) fn fatal_refusal(tracker: &str, r: Refusal) -> Option<anyhow::Error> {
    match r {
        Refusal::SwarmKey if swarm_key().is_some() => Some(anyhow!(
            "the tracker at {tracker} refused our swarm key: it uses another key, or none; check --swarm-key-file"
        )),
        Refusal::SwarmKey => Some(anyhow!(
            "the tracker at {tracker} serves a private swarm: pass its key with --swarm-key-file"
        )),
        Refusal::VersionMismatch { supported } => Some(anyhow!(
            "the tracker at {tracker} speaks protocol version {supported}, this shoal speaks {}; use matching versions",
            proto_core::wire::PROTOCOL_VERSION
        )),
        _ => None,
    }
}

/// A fresh random node id.
pub fn random_node() -> NodeId {
    let mut id = [0u8; 16];
    // Without the OS generator two peers could share an id; the tracker would refuse one.
    let _ = getrandom::fill(&mut id);
    NodeId(id)
}

/// Resolves a tracker's `host:port`.
pub fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    resolve_as("tracker", addr)
}

/// Resolves `host:port`, naming `what` it is in the error.
pub(crate) fn resolve_as(what: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {what} address '{addr}' (expected host:port)"))?
        .next()
        .ok_or_else(|| anyhow!("{what} address '{addr}' resolves to nothing"))
}

/// Resolves every tracker; more than a peer can register with is an error.
pub fn resolve_trackers(texts: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    if texts.len() > MAX_TRACKERS {
        bail!(
            "{} trackers given; a swarm uses at most {MAX_TRACKERS}",
            texts.len()
        );
    }
    texts.iter().map(|t| resolve(t)).collect()
}

/// The trackers as a user reads them: `a:1`, or `a:1 and b:2`, or `a:1, b:2 and c:3`.
pub fn trackers_text(texts: &[String]) -> String {
    match texts {
        [] => "no tracker".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Binds a listener, with a message that says what to do when the port is taken.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    listen(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow!(
            "port {} is already in use; pick another with --listen",
            addr.port()
        ),
        _ => anyhow!("cannot listen on {addr}: {e}"),
    })
}

/// How many connections may wait to be accepted. The standard library (and mio) ask for 128,
/// and a fleet that reconnects at once (a tracker restart) overflows that: the kernel drops
/// the excess SYNs and each one waits a second before trying again. The kernel caps this at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A peer driven over real sockets with file storage.
pub type PeerDriver = Driver<Box<HostPeer>, FileStore>;

/// How much a peer may take on: set on the command line of `share`, `get` and `peer`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Upload at most this many bytes per second.
    pub upload: Option<u64>,
    /// Download at most this many bytes per second.
    pub download: Option<u64>,
    /// Most connections at once, the tracker's included.
    pub max_conns: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload: None,
            download: None,
            max_conns: 64,
        }
    }
}

pub(crate) fn peer_driver(
    trackers: &[SocketAddr],
    listener: Option<TcpListener>,
    register: bool,
    signals: bool,
    limits: Limits,
) -> anyhow::Result<Driver<Box<HostPeer>, FileStore>> {
    if limits.max_conns < 2 {
        return Err(anyhow!(
            "--max-conns must be at least 2: one for the tracker and one for a peer"
        ));
    }
    let port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let mut config = PeerConfig::new(random_node(), port, None);
    for &t in trackers {
        if !config.trackers.push(t) {
            bail!("a swarm uses at most {MAX_TRACKERS} trackers");
        }
    }
    config.register = register;
    config.upload_rate = limits.upload;
    config.download_rate = limits.download;
    config.max_conns = limits.max_conns;
    config.rng_seed = random_seed();
    config.swarm_key = swarm_key();
    // Blocks are hashed on the driver's hashing thread, beside the receive loop.
    config.block_check = BlockCheck::Deferred;
    let peer = Box::new(HostPeer::new(config, Instant::now()));
    Ok(Driver::new(peer, FileStore::default(), listener, signals)?)
}

/// What `shoal tracker` is asked for.
pub struct TrackerOptions {
    /// Where peers reach it.
    pub listen: SocketAddr,
    /// The most peers it registers.
    pub max_peers: usize,
    /// Where to serve the operator's page ([`StatusPage`]), if anywhere.
    pub http: Option<SocketAddr>,
}

/// Runs a tracker until interrupted (or `stop` returns true), logging what happens. Calls
/// `ready` with the bound address first.
pub fn tracker(
    opts: TrackerOptions,
    signals: bool,
    ready: impl FnOnce(SocketAddr),
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let TrackerOptions {
        listen,
        max_peers,
        http,
    } = opts;
    if max_peers == 0 || max_peers > MAX_TRACKER_PEERS {
        return Err(anyhow!(
            "--max-peers must be between 1 and {MAX_TRACKER_PEERS} (one connection each)"
        ));
    }
    let listener = bind(listen)?;
    let files = raise_open_file_limit();
    let mut config = TrackerConfig::new(random_node());
    config.swarm_key = swarm_key();
    config.rng_seed = random_seed();
    // Each peer needs a connection and a descriptor; a few are kept for the listener, the
    // poll instance and the log.
    let by_files = usize::try_from(files.saturating_sub(16)).unwrap_or(usize::MAX);
    config.max_peers = max_peers.min(by_files);
    config.max_conns = config.max_peers;
    // Asked for explicitly: say why fewer. The default is "as many as fit", and the next line
    // says how many that is.
    if config.max_peers < max_peers && max_peers != MAX_TRACKER_PEERS {
        tracing::warn!(
            "the open-file limit ({files}) allows only {} peers of the {max_peers} asked for; \
             raise it with `ulimit -n` (hard limit) or ask for fewer",
            config.max_peers
        );
    }
    let tracker = Box::new(Tracker::new(config, Instant::now()));
    tracing::info!(
        "tracker holds up to {} peers, {} files, {} chunks per file",
        tracker.peer_capacity(),
        config.max_files,
        tracker.max_file_chunks()
    );
    let mut driver = Driver::new(tracker, MemoryHashes::default(), Some(listener), signals)?;
    let addr = driver.local_addr().unwrap_or(listen);
    tracing::info!(
        "tracker listening on {addr}{}",
        if swarm_key().is_some() {
            " (private swarm: nodes must prove the swarm key)"
        } else {
            ""
        }
    );
    let mut page = match http {
        Some(at) => {
            let page = StatusPage::start(at, addr)?;
            tracing::info!(
                "status page at http://{}/ (JSON at /status.json, metrics at /metrics)",
                page.addr()
            );
            Some(page)
        }
        None => None,
    };
    ready(addr);
    let result = driver.run(|d, e| match e {
        Some(e) => {
            log_tracker_event(&e);
            if let Some(p) = page.as_mut() {
                p.count(&e);
            }
            ControlFlow::Continue(())
        }
        None if stop() => ControlFlow::Break(()),
        None => {
            if let Some(p) = page.as_mut() {
                p.turn(&d.node);
            }
            ControlFlow::Continue(())
        }
    })?;
    tracing::info!("tracker stopped");
    interrupted(result, None)
}

/// A command stopped by SIGINT or SIGTERM: `shoal` exits with 130 (128 + SIGINT, as shells
/// report an interrupted command), saying the message first if there is one.
#[derive(Debug)]
pub struct Interrupted(pub Option<String>);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("interrupted"))
    }
}

impl std::error::Error for Interrupted {}

/// `Ok` unless the run ended on a signal, then [`Interrupted`] with `message`.
pub(crate) fn interrupted(result: Stop, message: Option<&str>) -> anyhow::Result<()> {
    match result {
        Stop::Interrupted => Err(Interrupted(message.map(str::to_owned)).into()),
        Stop::Done => Ok(()),
    }
}

/// The most peers `shoal tracker` holds: a connection handle's index is 16 bits.
pub const MAX_TRACKER_PEERS: usize = 65_535;

/// Raises this process's open-file limit to its hard limit (a tracker needs a descriptor per
/// peer) and returns the limit now in force.
fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Logs a full table at most once a second per kind, with how often it happened since: under
/// a flood of connections this would otherwise be a line per connection.
fn overloaded(t: Table) {
    use std::sync::Mutex;
    static LAST: Mutex<[(Option<std::time::Instant>, u64); 3]> = Mutex::new([(None, 0); 3]);
    let (k, what) = match t {
        Table::Holdings => (0, "holdings table full: a have-update was not recorded"),
        Table::ConnectionsPerIp => (
            1,
            "an address reached its connection limit: a connection from it was refused",
        ),
        Table::Connections => (
            2,
            "connection table full: a connection that had not registered was closed to let a \
             new one in",
        ),
    };
    let Ok(mut last) = LAST.lock() else { return };
    let (at, n) = &mut last[k];
    *n += 1;
    if at.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)) {
        match *n {
            1 => tracing::warn!("{what}"),
            n => tracing::warn!("{what} ({n} times since the last report)"),
        }
        *at = Some(std::time::Instant::now());
        *n = 0;
    }
}

fn log_tracker_event(e: &TrackerEvent) {
    match e {
        TrackerEvent::PeerJoined { node, addr } => tracing::info!("peer {addr} joined ({node})"),
        TrackerEvent::PeerLeft { addr, reason, .. } => {
            tracing::info!("peer {addr} left: {reason}")
        }
        TrackerEvent::Refused { remote, reason } => tracing::warn!("refused {remote}: {reason}"),
        TrackerEvent::Published {
            name,
            size,
            by,
            first,
            file,
        } => {
            tracing::info!(
                "{} {name} ({size} bytes, {file}) by {by}",
                if *first { "published" } else { "new holder of" }
            )
        }
        TrackerEvent::PublishRefused { file, reason } => {
            tracing::warn!("publish of {file} refused: {reason}")
        }
        TrackerEvent::Delisted { name, file } => {
            tracing::info!("delisted {name} ({file}): no complete holder online")
        }
        TrackerEvent::Misbehaved { remote, offence } => {
            tracing::warn!("{remote} {offence}; disconnected")
        }
        TrackerEvent::Overloaded(t) => overloaded(*t),
    }
}

/// Says once per tracker, at once, that it could not be reached and that the command keeps
/// trying (a plain line on stderr, not a warning: the error, if it comes, is the last line).
fn tracker_notice<S>(d: &Driver<Box<HostPeer>, S>, tracker: SocketAddr, told: &mut Vec<SocketAddr>)
where
    S: crate::driver::Storage<Error = std::io::Error> + crate::hasher::SharedRead,
{
    if told.contains(&tracker) {
        return;
    }
    told.push(tracker);
    let why = match d.connect_failures.get(&tracker) {
        Some(std::io::ErrorKind::ConnectionRefused) => "refused the connection",
        Some(std::io::ErrorKind::TimedOut) => "did not answer",
        _ => "could not be reached",
    };
    eprintln!(
        "tracker {tracker} {why}; retrying for {:.0} s",
        wait_limit().as_secs_f64()
    );
}

fn unreachable(trackers: &[String]) -> anyhow::Error {
    let tracker = trackers_text(trackers);
    anyhow!(
        "tracker {tracker} unreachable after {:.0}s; start one with `shoal tracker` or pass --tracker",
        wait_limit().as_secs_f64()
    )
}

/// How `share` serves its files.
pub struct ShareOptions {
    /// Where peers reach it.
    pub listen: SocketAddr,
    /// The chunk size, or `None` for one chosen from each file's size.
    pub chunk_size: Option<u32>,
    /// What it may take on.
    pub limits: Limits,
    /// Save the (one) file's metainfo here, naming the trackers, before serving.
    pub save: Option<PathBuf>,
}

/// A size in bytes with an optional binary unit: `262144`, `256K`, `256KiB`, `1M`, `2G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("'{text}' is not a size: write a number of bytes, optionally followed by K, M or G (powers of 1024)")),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: it must start with a number"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A link to `id` named `name` on `trackers`.
pub fn link_for(id: FileId, trackers: &[String], name: &str) -> String {
    Link {
        file: id,
        trackers: trackers
            .iter()
            .filter_map(|t| heapless::String::try_from(t.as_str()).ok())
            .take(MAX_TRACKERS)
            .collect(),
        name: Name::try_from(name).ok(),
    }
    .to_string()
}

/// Shares `files` through `trackers`, printing one link per file (to `links`) once the
/// first tracker lists it; serves until interrupted, or until `stop` returns true.
pub fn share(
    files: &[PathBuf],
    tracker_texts: &[String],
    how: ShareOptions,
    signals: bool,
    mut links: impl FnMut(String),
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let trackers = resolve_trackers(tracker_texts)?;
    let tracker_text = &trackers_text(tracker_texts);
    if how.save.is_some() && files.len() != 1 {
        bail!("--save writes the metainfo of one file; share the files one at a time to save each");
    }
    // Every path is checked before any is hashed: a typo in the last one costs nothing.
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        if !meta.is_file() && !meta.is_dir() {
            bail!("{} is not a regular file or a folder", f.display());
        }
    }
    let mut manifests = Vec::new();
    for f in files {
        manifests.push((
            f.clone(),
            manifest_for(f, how.chunk_size, HostPeer::MAX_FILE_CHUNKS)?,
        ));
    }
    if let (Some(path), Some((_, m))) = (&how.save, manifests.first()) {
        crate::metainfo::save(path, m, tracker_texts)?;
        tracing::info!(
            "saved the metainfo to {}; `shoal get {}` fetches the file with it",
            path.display(),
            path.display()
        );
    }
    let mut driver = peer_driver(
        &trackers,
        Some(bind(how.listen)?),
        true,
        signals,
        how.limits,
    )?;
    let now = Instant::now();
    for (path, m) in &manifests {
        let slot = driver
            .node
            .share(now, m.id, m.header.clone())
            .map_err(|e| anyhow!("cannot share {}: {e}", path.display()))?;
        driver
            .store
            .add_shared(slot, path, m)
            .with_context(|| format!("cannot open {}", path.display()))?;
    }
    let started = StdInstant::now();
    let mut waiting: Vec<FileId> = manifests.iter().map(|(_, m)| m.id).collect();
    let mut refused: Vec<FileId> = Vec::new();
    let mut error = None;
    let mut registered = false;
    let mut told = Vec::new();
    let result = driver.run(|d, e| {
        match e {
            Some(PeerEvent::Registered { .. }) => registered = true,
            Some(PeerEvent::TrackerLost { tracker }) if !registered => {
                tracker_notice(d, tracker, &mut told)
            }
            Some(PeerEvent::Published { file }) => {
                if let Some(i) = waiting.iter().position(|w| *w == file) {
                    waiting.remove(i);
                    if let Some((_, m)) = manifests.iter().find(|(_, m)| m.id == file) {
                        links(link_for(file, tracker_texts, &m.header.name));
                    }
                }
            }
            // One file refused (by one tracker) ends nothing else: the others go on being
            // served; only when every file is refused and none listed is there nothing to do.
            Some(PeerEvent::PublishRefused { file, reason }) => {
                let name = manifests
                    .iter()
                    .find(|(_, m)| m.id == file)
                    .map_or_else(|| file.to_string(), |(p, _)| p.display().to_string());
                if !refused.contains(&file) {
                    refused.push(file);
                    tracing::warn!("a tracker refused to list {name}: {reason}");
                }
                if refused.len() == manifests.len() && waiting.len() == manifests.len() {
                    error = Some(anyhow!("the tracker refused to list {name}: {reason}"));
                    return ControlFlow::Break(());
                }
            }
            Some(PeerEvent::TrackerRefused(r)) => match fatal_refusal(tracker_text, r) {
                Some(e) => {
                    error = Some(e);
                    return ControlFlow::Break(());
                }
                None => tracing::warn!("a tracker refused us: {r}; retrying"),
            },
            Some(PeerEvent::SwarmKeyMismatch { addr, .. }) => {
                tracing::warn!("{addr} does not share our swarm key; disconnected")
            }
            Some(PeerEvent::TrackerLost { tracker }) if registered => {
                tracing::warn!("lost the tracker at {tracker}; still serving peers, reconnecting")
            }
            Some(_) => {}
            None => {
                if !registered && started.elapsed() > wait_limit() {
                    error = Some(unreachable(tracker_texts));
                    return ControlFlow::Break(());
                }
                if stop() {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    leave(&mut driver);
    interrupted(result, None)
}

/// Tells the tracker we leave and gives the goodbye a moment to go out.
pub(crate) fn leave<
    S: crate::driver::Storage<Error = std::io::Error> + crate::hasher::SharedRead,
>(
    driver: &mut Driver<Box<HostPeer>, S>,
) {
    driver.node.leave(Instant::now());
    let deadline = StdInstant::now() + StdDuration::from_millis(500);
    let _ = driver.run(|d, e| match e {
        None if d.node.is_idle() || StdInstant::now() > deadline => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
}

/// What `get` reports as it goes.
pub trait GetProgress {
    /// The manifest is known: `size` bytes.
    fn start(&mut self, name: &str, size: u64);
    /// Where the download stands: on every verified chunk and every tick of the loop.
    fn update(&mut self, p: &Progress);
    /// Done (or abandoned).
    fn finish(&mut self);
    /// Seeding after the download: what has been served (every tick).
    fn seeding(&mut self, _p: &Progress) {}
}

/// How long no byte may arrive before progress says "stalled".
const STALLED_AFTER: StdDuration = StdDuration::from_secs(3);
/// Off a terminal, a progress line this often while downloading...
const LINE_EVERY: StdDuration = StdDuration::from_secs(5);
/// ...and while seeding.
const SEEDING_LINE_EVERY: StdDuration = StdDuration::from_secs(30);

/// Progress on stderr: on a terminal an indicatif bar (bytes, the core's current rate, peers,
/// ETA, or "stalled" when nothing arrives), then a seeding line (uploaded, peers); off a
/// terminal one plain line every few seconds. The rate is the core's, so bytes a resumed
/// download already held never count as speed.
pub struct Bar {
    bar: Option<ProgressBar>,
    /// Plain lines instead of a bar.
    plain: bool,
    name: String,
    size: u64,
    last_line: Option<StdInstant>,
    last_bytes: u64,
    moved: StdInstant,
    /// The seeding line on a terminal (not for a bar in someone else's multi-bar).
    seeding: Option<ProgressBar>,
    show_seeding: bool,
}

impl Bar {
    /// A bar if stderr is a terminal (or `force`), else plain lines.
    pub fn new(force: bool) -> Self {
        let terminal = force || std::io::stderr().is_terminal();
        Bar::with(terminal.then(ProgressBar::hidden), !terminal, true)
    }

    /// A bar attached to a multi-bar (for the demo).
    pub fn attached(bar: ProgressBar) -> Self {
        Bar::with(Some(bar), false, false)
    }

    fn with(bar: Option<ProgressBar>, plain: bool, show_seeding: bool) -> Self {
        Bar {
            show_seeding,
            bar,
            plain,
            name: String::new(),
            size: 0,
            last_line: None,
            last_bytes: 0,
            moved: StdInstant::now(),
            seeding: None,
        }
    }

    /// Rate, peers and ETA, or "stalled".
    fn status(&self, p: &Progress) -> String {
        let peers = match p.peers {
            1 => "1 peer".to_owned(),
            n => format!("{n} peers"),
        };
        if self.moved.elapsed() >= STALLED_AFTER || p.rate == 0 {
            return format!("stalled, {peers}");
        }
        let left = self.size.saturating_sub(p.bytes_done);
        let eta = StdDuration::from_secs(left.div_ceil(p.rate.max(1)));
        format!(
            "{}/s, {peers}, ETA {}",
            human_bytes(p.rate),
            human_duration(eta)
        )
    }
}

/// A duration as people read it: `45s`, `3m 20s`, `1h 02m`.
pub fn human_duration(d: StdDuration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

impl GetProgress for Bar {
    fn start(&mut self, name: &str, size: u64) {
        self.name = name.to_owned();
        self.size = size;
        self.moved = StdInstant::now();
        if let Some(b) = &self.bar {
            if b.is_hidden() {
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            b.set_length(size);
            b.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(name.to_owned());
        }
        if self.plain {
            eprintln!("{name}: {}, starting", human_bytes(size));
            self.last_line = Some(StdInstant::now());
        }
    }

    fn update(&mut self, p: &Progress) {
        if p.bytes_done != self.last_bytes {
            self.last_bytes = p.bytes_done;
            self.moved = StdInstant::now();
        }
        let status = self.status(p);
        if let Some(b) = &self.bar {
            b.set_position(p.bytes_done);
            b.set_message(status.clone());
        }
        if self.plain && self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            let pct = (p.bytes_done * 100).checked_div(self.size).unwrap_or(100);
            eprintln!(
                "{}: {} of {} ({pct}%), {status}",
                self.name,
                human_bytes(p.bytes_done),
                human_bytes(self.size)
            );
            self.last_line = Some(StdInstant::now());
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_with_message("done");
        }
        if self.plain && !self.name.is_empty() {
            eprintln!("{}: done, {}", self.name, human_bytes(self.size));
            self.last_line = Some(StdInstant::now());
        }
    }

    fn seeding(&mut self, p: &Progress) {
        let line = format!(
            "{}: seeding, uploaded {} to {} {}, {} connected",
            self.name,
            human_bytes(p.bytes_uploaded),
            p.peers_served,
            if p.peers_served == 1 { "peer" } else { "peers" },
            p.peers
        );
        if self.bar.is_some() && self.show_seeding {
            let s = self.seeding.get_or_insert_with(|| {
                let s = ProgressBar::new_spinner();
                s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                s
            });
            s.set_message(line);
            s.tick();
        } else if self.plain
            && self
                .last_line
                .is_none_or(|t| t.elapsed() >= SEEDING_LINE_EVERY)
        {
            eprintln!("{line}");
            self.last_line = Some(StdInstant::now());
        }
    }
}

/// Starts fetching `file` into `out` (if known yet), resuming from its journal when a
/// download to `out` was interrupted; returns the slot and what was resumed.
pub(crate) fn start_download(
    driver: &mut PeerDriver,
    file: FileId,
    out: Option<&PathBuf>,
    dir: Option<&PathBuf>,
) -> anyhow::Result<(u16, Option<Resume>)> {
    let now = Instant::now();
    let resume = out.and_then(|o| read_journal(o, &file));
    let slot = match (&resume, out) {
        (Some(r), Some(out)) => {
            let verified = r.verified.iter().copied();
            let slot = driver
                .node
                .resume(now, file, r.manifest.header.clone(), verified)
                .map_err(|e| anyhow!("cannot resume: {e}"))?;
            driver
                .store
                .add_resumed(slot, out.clone(), r)
                .with_context(|| format!("cannot reopen {}", out.display()))?;
            tracing::info!(
                "resuming {}: {} chunks already verified",
                out.display(),
                r.verified.len()
            );
            slot
        }
        _ => {
            let slot = driver.node.fetch(now, file).map_err(|e| anyhow!("{e}"))?;
            if let Err(e) = driver.store.add_fetch(slot, out.cloned(), dir.cloned()) {
                let _ = driver.node.cancel(now, slot);
                bail!("{e}");
            }
            slot
        }
    };
    Ok((slot, resume))
}

/// The output is already there: if that file or folder is the one asked for (it hashes to
/// `file` with the manifest's chunk size), it is shared instead (the fetch in `slot`, if any,
/// cancelled); the shared slot is returned. Otherwise one line says so.
pub(crate) fn seed_existing(
    d: &mut PeerDriver,
    slot: Option<u16>,
    path: &Path,
    file: FileId,
    header: &ManifestHeader,
) -> anyhow::Result<u16> {
    // A file where a folder is asked for, or the reverse, is other content: said without
    // hashing it.
    let m = if path.is_dir() == header.is_folder() {
        Some(manifest_for(
            path,
            Some(header.chunk_size),
            HostPeer::MAX_FILE_CHUNKS,
        )?)
    } else {
        None
    };
    let Some(m) = m.filter(|m| m.id == file) else {
        bail!(
            "{} already exists with other content; remove it or choose another path with -o",
            path.display()
        );
    };
    let now = Instant::now();
    if let Some(slot) = slot {
        let _ = d.node.cancel(now, slot);
        d.store.remove(slot);
    }
    let shared = d
        .node
        .share(now, file, header.clone())
        .map_err(|e| anyhow!("cannot share {}: {e}", path.display()))?;
    d.store
        .add_shared(shared, path, &m)
        .with_context(|| format!("cannot open {}", path.display()))?;
    tracing::info!(
        "{} is already what was asked for; seeding it",
        path.display()
    );
    Ok(shared)
}

/// Options of `get`.
pub struct GetOptions {
    /// Where to write; `None`: the manifest's name in the current directory.
    pub output: Option<PathBuf>,
    /// The trackers given on the command line; if none, the link's, else `$SHOAL_TRACKER`,
    /// else (with no `peers` either) the default.
    pub trackers: Vec<String>,
    /// Peers to join through (`host:port`), besides whatever the trackers say.
    pub peers: Vec<String>,
    /// Exit once complete instead of seeding.
    pub no_seed: bool,
    /// Listen address for serving others.
    pub listen: SocketAddr,
    /// Upload and connection limits.
    pub limits: Limits,
    /// Catch SIGINT/SIGTERM.
    pub signals: bool,
}

/// The trackers a `get` registers with: those given, else the link's, else
/// `$SHOAL_TRACKER`, else the default (none when the user named peers to join through).
fn get_trackers(opts: &GetOptions, link: &Link) -> Vec<String> {
    if !opts.trackers.is_empty() {
        return opts.trackers.clone();
    }
    if !link.trackers.is_empty() {
        return link.trackers.iter().map(|t| t.to_string()).collect();
    }
    if let Ok(env) = std::env::var("SHOAL_TRACKER") {
        return env.split(',').map(|t| t.trim().to_owned()).collect();
    }
    if opts.peers.is_empty() {
        vec![DEFAULT_TRACKER.to_owned()]
    } else {
        Vec::new()
    }
}

/// Where a download of a file called `name` (if known) goes, given `-o`: the output path if
/// it can be told yet, else the folder its name will be joined to. `-o DIR` (an existing
/// folder, or a path ending in '/', made if missing) puts the file inside; no `-o` means its
/// name, here.
pub(crate) fn output_target(
    output: Option<PathBuf>,
    name: Option<&Name>,
) -> anyhow::Result<(Option<PathBuf>, Option<PathBuf>)> {
    Ok(match output {
        Some(o) if o.is_dir() || o.as_os_str().to_string_lossy().ends_with('/') => {
            std::fs::create_dir_all(&o)
                .with_context(|| format!("cannot create the folder {}", o.display()))?;
            match name {
                Some(n) => (Some(o.join(n.as_str())), None),
                None => (None, Some(o)),
            }
        }
        Some(o) => (Some(o), None),
        None => (name.map(|n| PathBuf::from(n.as_str())), None),
    })
}

/// Downloads `link_text`; returns the final path (after seeding, unless `no_seed`).
pub fn get(
    link_text: &str,
    opts: GetOptions,
    progress: &mut dyn GetProgress,
    mut on_done: impl FnMut(&Path),
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<PathBuf> {
    // A link or id; else the path of a metainfo file, whose manifest needs no tracker.
    let (link, meta) = match Link::parse(link_text) {
        Ok(link) => (link, None),
        Err(_) if Path::new(link_text).is_file() => {
            let m = crate::metainfo::load(Path::new(link_text))?;
            let link = Link {
                file: m.manifest.id,
                trackers: m
                    .trackers
                    .iter()
                    .filter_map(|t| heapless::String::try_from(t.as_str()).ok())
                    .collect(),
                name: Some(m.manifest.header.name.clone()),
            };
            (link, Some(m))
        }
        Err(e) => bail!("{e}"),
    };
    let tracker_texts = get_trackers(&opts, &link);
    let trackers = resolve_trackers(&tracker_texts)?;
    let tracker_text = trackers_text(&tracker_texts);
    let peers = opts
        .peers
        .iter()
        .map(|p| resolve_as("peer", p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (output, into) = output_target(opts.output.clone(), link.name.as_ref())?;
    // An output that exists already is checked against the manifest and seeded, not refused.
    if let Some(out) = output.as_ref().filter(|o| !output_exists(o)) {
        check_output(out)?;
    }
    let mut driver = peer_driver(
        &trackers,
        Some(bind(opts.listen)?),
        true,
        opts.signals,
        opts.limits,
    )?;
    if let (Some(m), Some(out)) = (&meta, &output) {
        // The manifest is known: the download starts as a resumed one with nothing verified.
        if read_journal(out, &m.manifest.id).is_none() && !output_exists(out) {
            if let Err(e) = crate::store::prepare_download(out, &m.manifest) {
                // Nothing was downloaded: leave nothing behind.
                let (part, journal) = part_paths(out);
                for p in [part, journal, crate::store::leaves_path(out)] {
                    let _ = std::fs::remove_file(p);
                }
                return Err(disk_error(e));
            }
        }
    }
    // A metainfo file and an output already there: check it at once, with no one to ask.
    let held = match (&meta, &output) {
        (Some(m), Some(out)) if output_exists(out) => {
            let h = &m.manifest.header;
            Some((
                seed_existing(&mut driver, None, out, m.manifest.id, h)?,
                out.clone(),
            ))
        }
        _ => None,
    };
    let (mut slot, resume) = match &held {
        Some((shared, _)) => (*shared, None),
        None => start_download(&mut driver, link.file, output.as_ref(), into.as_ref())?,
    };
    for &p in &peers {
        driver
            .node
            .add_peer(Instant::now(), slot, p)
            .map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(r) = &resume {
        progress.start(&r.manifest.header.name, r.manifest.header.size);
    }
    let started = StdInstant::now();
    let mut told = Vec::new();
    let mut registered = false;
    let mut manifest: Option<ManifestHeader> = resume.as_ref().map(|r| r.manifest.header.clone());
    let mut not_found_since: Option<StdInstant> = None;
    let mut final_path: Option<PathBuf> = None;
    if let Some((_, path)) = held {
        manifest = meta.as_ref().map(|m| m.manifest.header.clone());
        on_done(&path);
        if opts.no_seed {
            leave(&mut driver);
            return Ok(path);
        }
        final_path = Some(path);
    }
    let mut error: Option<anyhow::Error> = None;
    let result = driver.run(|d, e| {
        let Some(e) = e else {
            if let Err(e) = d.store.tick() {
                error = Some(disk_error(e));
                return ControlFlow::Break(());
            }
            if let Some(p) = d.node.progress(slot) {
                if final_path.is_some() {
                    progress.seeding(&p);
                } else if manifest.is_some() {
                    progress.update(&p);
                }
            }
            if !registered && manifest.is_none() && started.elapsed() > wait_limit() {
                error = Some(if peers.is_empty() {
                    unreachable(&tracker_texts)
                } else {
                    anyhow!(
                        "no manifest for {} after {:.0}s from {} or from {tracker_text}; check the addresses, and that a peer there holds the file",
                        link.file,
                        wait_limit().as_secs_f64(),
                        opts.peers.join(", "),
                    )
                });
                return ControlFlow::Break(());
            }
            if manifest.is_none() && not_found_since.is_some_and(|t| t.elapsed() > wait_limit()) {
                error = Some(anyhow!(
                    "the tracker at {tracker_text} knows no file {}; check the link, or share the file first",
                    link.file
                ));
                return ControlFlow::Break(());
            }
            return if stop() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
        };
            match e {
                PeerEvent::Registered { .. } => registered = true,
                PeerEvent::TrackerLost { tracker } if !registered => {
                    tracker_notice(d, tracker, &mut told)
                }
                PeerEvent::NotFound { file } if file == link.file && manifest.is_none() => {
                    not_found_since.get_or_insert_with(StdInstant::now);
                }
                // The output was there before: check it, and seed it if it is the file.
                PeerEvent::ManifestReceived { slot: s, file, header } if s == slot && d.store.existing(slot).is_some() => {
                    let path = d.store.existing(slot).map(Path::to_path_buf).unwrap_or_default();
                    match seed_existing(d, Some(slot), &path, file, &header) {
                        Ok(shared) => {
                            slot = shared;
                            manifest = Some(header);
                            on_done(&path);
                            final_path = Some(path);
                            if opts.no_seed {
                                return ControlFlow::Break(());
                            }
                        }
                        Err(e) => {
                            error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                }
                // The store has journalled it (and created the part file) already.
                PeerEvent::ManifestReceived { header, .. } => {
                    progress.start(&header.name, header.size);
                    manifest = Some(header);
                }
                PeerEvent::Progress(p) if p.slot == slot => progress.update(&p),
                PeerEvent::ChunkRejected { chunk, from, .. } => tracing::warn!("chunk {chunk} from {from} failed its hash; fetching it again"),
                PeerEvent::PeerBanned { addr, .. } => tracing::warn!("banned {addr}: repeated bad chunks"),
                PeerEvent::Unavailable { missing, first, .. } => {
                    tracing::warn!("{missing} chunks have no online holder (first: {}-{}); waiting for one", first.start, first.end - 1)
                }
                // The store has moved the part file to its final name already, or failed to.
                PeerEvent::FileComplete { slot: s } if s == slot => {
                    match d.store.final_path(slot) {
                        Some(path) => {
                            let path = path.to_path_buf();
                            progress.finish();
                            on_done(&path);
                            final_path = Some(path);
                            if opts.no_seed {
                                return ControlFlow::Break(());
                            }
                        }
                        None => {
                            error = Some(disk_error(d.last_storage_error.take().unwrap_or_else(|| {
                                std::io::Error::other("the download could not be moved to its final name")
                            })));
                            return ControlFlow::Break(());
                        }
                    }
                }
                PeerEvent::FetchFailed { slot: s, reason } if s == slot => {
                    error = Some(match (reason, d.last_storage_error.take()) {
                        (FetchFailure::Storage, Some(e)) => disk_error(e),
                        (FetchFailure::Unavailable { missing }, _) => {
                            anyhow!("{missing} chunks had no online holder; run the same command again later to resume")
                        }
                        (reason, _) => anyhow!("the download failed: {reason}"),
                    });
                    return ControlFlow::Break(());
                }
                PeerEvent::TrackerRefused(r) => match fatal_refusal(&tracker_text, r) {
                    Some(e) => {
                        error = Some(e);
                        return ControlFlow::Break(());
                    }
                    None => tracing::warn!("a tracker refused us: {r}; retrying"),
                },
                PeerEvent::SwarmKeyMismatch { addr, .. } => {
                    tracing::warn!("{addr} does not share our swarm key; disconnected")
                }
                _ => {}
            }
            ControlFlow::Continue(())
    })?;
    let _ = d_flush(&mut driver);
    if let Some(e) = error {
        if manifest.is_none() {
            // Nothing was downloaded: do not leave the empty part file behind.
            if let Some(out) = &output {
                let (part, journal) = part_paths(out);
                if !journal.exists() {
                    let _ = std::fs::remove_file(part);
                }
            }
        }
        return Err(e);
    }
    match final_path {
        Some(p) => {
            leave(&mut driver);
            // Interrupted while seeding: the download itself is done (its path was printed).
            interrupted(result, None)?;
            Ok(p)
        }
        None if result == Stop::Interrupted => {
            leave(&mut driver);
            interrupted(
                result,
                Some("interrupted; run the same command again to resume"),
            )?;
            bail!("stopped before the download completed")
        }
        None => bail!("stopped before the download completed"),
    }
}

fn d_flush(driver: &mut Driver<Box<HostPeer>, FileStore>) -> std::io::Result<()> {
    driver.store.flush()
}

fn disk_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        anyhow!("the disk is full; free some space and run the same command again to resume")
    } else if e.kind() == std::io::ErrorKind::AlreadyExists {
        // check_output's own words (an output named by the manifest that already exists).
        anyhow!("{e}")
    } else {
        anyhow!("cannot write the download: {e}")
    }
}

/// The output must not exist yet, and its folder must be writable.
fn check_output(out: &Path) -> anyhow::Result<()> {
    crate::store::check_output(out).map_err(|e| anyhow!("{e}"))
}

/// Answers of the tracker to a query.
#[derive(Default)]
pub struct Answers {
    /// Files listed.
    pub files: Vec<FileEntry>,
    /// Holders located.
    pub holders: Vec<HolderItem>,
    /// Active peers.
    pub peers: Vec<PeerEntry>,
}

/// What to ask the tracker.
pub enum Query {
    /// The file list.
    Files,
    /// Holders of a file, by id or name.
    Where(String),
    /// The active peer list.
    Peers,
}

/// The id of the one listed file named `name`; if none or several are, says so (listing the
/// ids of those that share the name, to ask by).
pub fn by_name(files: &[FileEntry], name: &str) -> anyhow::Result<FileId> {
    let named: Vec<&FileEntry> = files.iter().filter(|f| f.name.as_str() == name).collect();
    match named[..] {
        [one] => Ok(one.file),
        [] => bail!("no file named '{name}' is listed; see `shoal ls`"),
        _ => {
            let ids: Vec<String> = named
                .iter()
                .map(|f| format!("{} ({})", f.file, human_bytes(f.size)))
                .collect();
            bail!(
                "{} files are named '{name}': {}; ask by id",
                named.len(),
                ids.join(", ")
            )
        }
    }
}

/// A byte count as people read it: `512 B`, `1.5 KiB`, `64.0 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Asks the tracker and waits for the whole answer.
pub fn query(tracker_text: &str, q: Query) -> anyhow::Result<Answers> {
    let tracker = resolve(tracker_text)?;
    // Listing peers needs the pushed list, which only registered peers get.
    let register = matches!(q, Query::Peers);
    let mut driver = peer_driver(&[tracker], None, register, true, Limits::default())?;
    let mut answers = Answers::default();
    let by_id = match &q {
        Query::Where(w) => Link::parse(w).ok().map(|l| l.file),
        _ => None,
    };
    let name = match &q {
        Query::Where(w) if by_id.is_none() => Some(w.clone()),
        _ => None,
    };
    let started = StdInstant::now();
    let mut ready = false;
    let mut told = Vec::new();
    let mut done = false;
    let mut error = None;
    driver.run(|d, e| {
        let Some(e) = e else {
            if !done && started.elapsed() > wait_limit() {
                error = Some(if ready {
                    anyhow!("the tracker at {tracker_text} did not answer")
                } else {
                    unreachable(&[tracker_text.to_owned()])
                });
                return ControlFlow::Break(());
            }
            return ControlFlow::Continue(());
        };
        let now = Instant::now();
        match e {
            PeerEvent::TrackerLost { tracker } if !ready => tracker_notice(d, tracker, &mut told),
            PeerEvent::TrackerReady { .. } => {
                ready = true;
                let sent = match (&q, by_id) {
                    (Query::Files, _) | (Query::Where(_), None) => d.node.list_files(now),
                    (Query::Where(_), Some(id)) => d.node.locate(now, id),
                    (Query::Peers, _) => d.node.list_peers(now),
                };
                if let Err(e) = sent {
                    error = Some(anyhow!("{e}"));
                    return ControlFlow::Break(());
                }
            }
            PeerEvent::PeerList { .. } if matches!(q, Query::Peers) => {
                let me = d.node.registered();
                answers.peers = d
                    .node
                    .peers()
                    .filter(|p| Some(p.addr) != me)
                    .copied()
                    .collect();
                done = true;
                return ControlFlow::Break(());
            }
            PeerEvent::FileListed(f) => answers.files.push(f),
            PeerEvent::FileListEnd { .. } => {
                if let Some(n) = &name {
                    match by_name(&answers.files, n) {
                        Ok(id) => {
                            if let Err(e) = d.node.locate(now, id) {
                                error = Some(anyhow!("{e}"));
                                return ControlFlow::Break(());
                            }
                        }
                        Err(e) => {
                            error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                } else {
                    done = true;
                    return ControlFlow::Break(());
                }
            }
            PeerEvent::Holder(h) => answers.holders.push(h),
            PeerEvent::LocateEnd { .. } => {
                done = true;
                return ControlFlow::Break(());
            }
            PeerEvent::NotFound { file } => {
                error = Some(anyhow!("the tracker lists no file {file}; see `shoal ls`"));
                return ControlFlow::Break(());
            }
            PeerEvent::TrackerRefused(r) => {
                if let Some(e) = fatal_refusal(tracker_text, r) {
                    error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    if register {
        leave(&mut driver);
    }
    Ok(answers)
}

/// Ranges as `0-9,12,20-31`.
pub fn ranges_text(ranges: &[ChunkRange]) -> String {
    ranges
        .iter()
        .map(|r| {
            if r.end - r.start == 1 {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end - 1)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes a line to stdout and flushes it (links and paths are read by scripts).
pub fn println_flush(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("128kib"), Ok(128 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("12Q").unwrap_err().contains("not a size"));
        assert!(parse_size("K").unwrap_err().contains("start with a number"));
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
