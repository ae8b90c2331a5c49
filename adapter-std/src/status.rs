//! The operator's view of a tracker: `shoal tracker --http ADDR` serves a status page (peers,
//! files, holders, the transfer rates peers report), the same as JSON, and Prometheus metrics.
//!
//! The tracker's loop owns the tracker; the page is served from a thread of its own
//! (`tiny_http`). They meet in [`Shared`]: a request asks for a fresh copy of what the page shows
//! ([`Status`]) and waits, at most [`WAIT`], for the loop to take one on its next turn (the
//! loop turns at least every 100 ms). A copy younger than [`FRESH`] is served as it is. So a
//! tracker nobody looks at copies nothing, and one looked at by many pays for at most a few
//! copies a second, each one walk over its tables.
//!
//! Nothing listens unless `--http` is given. The page has no authentication: bind it to a
//! private address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use anyhow::anyhow;
use maud::{html, Markup, DOCTYPE};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto_core::time::Instant;
use proto_core::tracker::{LeaveReason, Table, Tracker, TrackerEvent};
use proto_core::wire::FileId;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::cli::human_bytes;

/// A copy this young is served without asking the loop for another.
const FRESH: StdDuration = StdDuration::from_millis(500);
/// The longest a request waits for the loop's copy before it is served the last one.
const WAIT: StdDuration = StdDuration::from_secs(2);
/// Rows of the page's tables; everything is in `/status.json`.
const PAGE_ROWS: usize = 500;

/// One registered peer, as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRow {
    /// Where other peers reach it.
    pub addr: SocketAddr,
    /// Its node id, hex.
    pub node: String,
    /// Seconds since its connection opened.
    pub connected_secs: u64,
    /// Files it holds chunks of.
    pub files: u32,
    /// Bytes it reports having served, and fetched, over the files it has.
    pub uploaded: u64,
    /// See `uploaded`.
    pub downloaded: u64,
    /// Its upload rate over its last two reports, bytes per second.
    pub upload_rate: u64,
    /// Its download rate over its last two reports, bytes per second.
    pub download_rate: u64,
}

/// One holder of a file.
#[derive(Clone, Debug, Serialize)]
pub struct HolderRow {
    /// Where other peers reach it.
    pub addr: SocketAddr,
    /// Chunks of the file it holds.
    pub chunks: u32,
    /// Its upload rate (all files), bytes per second.
    pub upload_rate: u64,
    /// Its download rate (all files), bytes per second.
    pub download_rate: u64,
}

/// One listed file.
#[derive(Clone, Debug, Serialize)]
pub struct FileRow {
    /// Its id, hex.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks.
    pub chunks: u32,
    /// Peers holding any chunk of it.
    pub holders: u32,
    /// Peers holding all of it.
    pub complete: u32,
    /// Every holder.
    pub holder_list: Vec<HolderRow>,
}

/// What happened since the tracker started, counted from its events.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    /// Peers that registered.
    pub joined: u64,
    /// Peers that left, by why: said goodbye, connection closed, stopped answering pings,
    /// broke the protocol.
    pub left: [u64; 4],
    /// Connections or registrations refused.
    pub refused: u64,
    /// Publishes of a new file, and of a file already listed (a new holder).
    pub published: u64,
    /// Publishes refused.
    pub publish_refused: u64,
    /// Files delisted (no complete holder online).
    pub delisted: u64,
    /// Connections cut for breaking the protocol.
    pub misbehaved: u64,
    /// A table was full, by table: holdings, connections per IP, connections.
    pub overloaded: [u64; 3],
}

const LEFT: [(LeaveReason, &str); 4] = [
    (LeaveReason::Left, "left"),
    (LeaveReason::Disconnected, "disconnected"),
    (LeaveReason::TimedOut, "timed_out"),
    (LeaveReason::Misbehaved, "misbehaved"),
];
const TABLES: [(Table, &str); 3] = [
    (Table::Holdings, "holdings"),
    (Table::ConnectionsPerIp, "connections_per_ip"),
    (Table::Connections, "connections"),
];

impl Counts {
    /// Counts one tracker event.
    pub fn count(&mut self, e: &TrackerEvent) {
        match e {
            TrackerEvent::PeerJoined { .. } => self.joined += 1,
            TrackerEvent::PeerLeft { reason, .. } => {
                if let Some(i) = LEFT.iter().position(|(r, _)| r == reason) {
                    self.left[i] += 1;
                }
            }
            TrackerEvent::Refused { .. } => self.refused += 1,
            TrackerEvent::Published { .. } => self.published += 1,
            TrackerEvent::PublishRefused { .. } => self.publish_refused += 1,
            TrackerEvent::Delisted { .. } => self.delisted += 1,
            TrackerEvent::Misbehaved { .. } => self.misbehaved += 1,
            TrackerEvent::Overloaded(t) => {
                if let Some(i) = TABLES.iter().position(|(x, _)| x == t) {
                    self.overloaded[i] += 1;
                }
            }
        }
    }
}

/// Everything the page shows, copied from the tracker at one instant.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// The tracker's peer address.
    pub tracker: String,
    /// shoal's version.
    pub version: &'static str,
    /// Seconds since the tracker started.
    pub uptime_secs: u64,
    /// The most peers it registers.
    pub peer_capacity: usize,
    /// Holdings (a peer and a file it holds chunks of).
    pub holdings: usize,
    /// Registered peers, busiest uploader first.
    pub peers: Vec<PeerRow>,
    /// Listed files, most holders first.
    pub files: Vec<FileRow>,
    /// Events counted since the start.
    pub counts: Counts,
    /// Events the loop did not take in time (should stay 0).
    pub events_lost: u32,
}

impl Status {
    /// A copy of what `t` shows now.
    fn of(t: &Tracker<'_>, tracker: SocketAddr, started: StdInstant, counts: Counts) -> Status {
        let now = Instant::now();
        let mut peers: Vec<PeerRow> = t
            .peers()
            .map(|p| PeerRow {
                addr: p.addr,
                node: p.node.to_string(),
                connected_secs: now.saturating_since(p.since).total_millis() / 1000,
                files: p.files,
                uploaded: p.uploaded,
                downloaded: p.downloaded,
                upload_rate: p.upload_rate,
                download_rate: p.download_rate,
            })
            .collect();
        peers.sort_by(|a, b| {
            (b.upload_rate, b.download_rate, a.addr).cmp(&(a.upload_rate, a.download_rate, b.addr))
        });
        let mut files: Vec<FileRow> = t
            .files()
            .map(|f| {
                let mut holder_list: Vec<HolderRow> = t
                    .holders(&f.file)
                    .map(|h| HolderRow {
                        addr: h.peer.addr,
                        chunks: h.chunks,
                        upload_rate: h.peer.upload_rate,
                        download_rate: h.peer.download_rate,
                    })
                    .collect();
                holder_list.sort_by(|a, b| (b.chunks, a.addr).cmp(&(a.chunks, b.addr)));
                FileRow {
                    id: f.file.to_string(),
                    name: f.header.name.as_str().to_owned(),
                    size: f.header.size,
                    chunks: f.header.chunk_count(),
                    holders: f.holders,
                    complete: f.complete,
                    holder_list,
                }
            })
            .collect();
        files.sort_by(|a, b| (b.holders, &a.name).cmp(&(a.holders, &b.name)));
        Status {
            tracker: tracker.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: started.elapsed().as_secs(),
            peer_capacity: t.peer_capacity(),
            holdings: t.holding_count(),
            peers,
            files,
            counts,
            events_lost: t.events_lost(),
        }
    }

    fn upload_rate(&self) -> u64 {
        self.peers.iter().map(|p| p.upload_rate).sum()
    }

    fn download_rate(&self) -> u64 {
        self.peers.iter().map(|p| p.download_rate).sum()
    }
}

/// The last copy and the loop's promise to take a new one.
struct Snap {
    /// Counts the copies taken, so a waiting request sees a new one arrive.
    generation: u64,
    taken: Option<StdInstant>,
    status: Arc<Status>,
}

/// Where the tracker's loop and the page's thread meet.
struct Shared {
    snap: Mutex<Snap>,
    /// Notified when a copy is taken.
    fresh: Condvar,
    /// A request waits for a copy.
    wanted: AtomicBool,
}

impl Shared {
    /// A copy no older than [`FRESH`], or the last one if the loop does not answer in [`WAIT`].
    fn current(&self) -> Arc<Status> {
        let Ok(mut snap) = self.snap.lock() else {
            return Arc::default();
        };
        if snap.taken.is_some_and(|t| t.elapsed() < FRESH) {
            return snap.status.clone();
        }
        let seen = snap.generation;
        self.wanted.store(true, Ordering::Release);
        let end = StdInstant::now() + WAIT;
        while snap.generation == seen {
            let left = end.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                break;
            }
            snap = match self.fresh.wait_timeout(snap, left) {
                Ok((s, _)) => s,
                Err(_) => return Arc::default(),
            };
        }
        snap.status.clone()
    }
}

/// The page's server: started by `shoal tracker --http`, stopped when dropped.
pub struct StatusPage {
    shared: Arc<Shared>,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
    tracker: SocketAddr,
    started: StdInstant,
    counts: Counts,
}

impl StatusPage {
    /// Listens on `addr` and serves the page of the tracker listening on `tracker`.
    pub fn start(addr: SocketAddr, tracker: SocketAddr) -> anyhow::Result<StatusPage> {
        let server = Server::http(addr).map_err(|e| match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::AddrInUse => anyhow!(
                "port {} is already in use; pick another with --http",
                addr.port()
            ),
            _ => anyhow!("cannot serve the status page on {addr}: {e}"),
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("cannot serve the status page on {addr}: not an IP address"))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            snap: Mutex::new(Snap {
                generation: 0,
                taken: None,
                status: Arc::default(),
            }),
            fresh: Condvar::new(),
            wanted: AtomicBool::new(false),
        });
        let thread = {
            let (server, shared) = (server.clone(), shared.clone());
            std::thread::Builder::new()
                .name("status-page".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        respond(&shared, request);
                    }
                })?
        };
        Ok(StatusPage {
            shared,
            server,
            thread: Some(thread),
            addr: bound,
            tracker,
            started: StdInstant::now(),
            counts: Counts::default(),
        })
    }

    /// The address the page is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts a tracker event for the page and the metrics.
    pub fn count(&mut self, e: &TrackerEvent) {
        self.counts.count(e);
    }

    /// Called on every turn of the tracker's loop: takes a copy if a request waits for one.
    pub fn turn(&mut self, t: &Tracker<'_>) {
        if !self.shared.wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let status = Arc::new(Status::of(t, self.tracker, self.started, self.counts));
        if let Ok(mut snap) = self.shared.snap.lock() {
            snap.generation += 1;
            snap.taken = Some(StdInstant::now());
            snap.status = status;
        }
        self.shared.fresh.notify_all();
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(value: &str) -> Header {
    // The values here are constants that are valid header values.
    Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("a valid header")
}

/// Answers one request: `/` the page, `/file/ID` a file's holders, `/status.json` everything
/// as JSON, `/metrics` Prometheus metrics.
fn respond(shared: &Shared, request: Request) {
    if !matches!(request.method(), Method::Get | Method::Head) {
        let _ = request.respond(Response::from_string("only GET\n").with_status_code(405));
        return;
    }
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let reply = match path.as_str() {
        "/" => {
            let s = shared.current();
            Some((page(&s).into_string(), "text/html; charset=utf-8"))
        }
        "/status.json" => {
            let s = shared.current();
            serde_json::to_string(&*s)
                .ok()
                .map(|j| (j, "application/json"))
        }
        "/metrics" => {
            let s = shared.current();
            Some((
                metrics(&s),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ))
        }
        p => p
            .strip_prefix("/file/")
            .and_then(FileId::from_hex)
            .and_then(|id| {
                let s = shared.current();
                let id = id.to_string();
                let f = s.files.iter().find(|f| f.id == id)?;
                Some((file_page(&s, f).into_string(), "text/html; charset=utf-8"))
            }),
    };
    let _ = match reply {
        Some((body, kind)) => {
            request.respond(Response::from_string(body).with_header(header(kind)))
        }
        None => request.respond(
            Response::from_string("not found: try / , /status.json or /metrics\n")
                .with_status_code(404),
        ),
    };
}

fn rate(r: u64) -> String {
    format!("{}/s", human_bytes(r))
}

fn uptime(secs: u64) -> String {
    crate::cli::human_duration(StdDuration::from_secs(secs))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
    table{border-collapse:collapse;margin-bottom:1.5em}\
    th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}\
    td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
    .id{font-family:monospace;font-size:.9em;color:#555}\
    .summary td{border:none;padding:.1em .8em .1em 0}";

fn shell(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// The status page.
fn page(s: &Status) -> Markup {
    let c = &s.counts;
    shell(
        &format!("shoal tracker {}", s.tracker),
        html! {
            h1 { "shoal tracker " (s.tracker) }
            table.summary {
                tr { td { "peers" } td { (s.peers.len()) " of " (s.peer_capacity) } }
                tr { td { "files" } td { (s.files.len()) } }
                tr { td { "holdings" } td { (s.holdings) } }
                tr { td { "reported upload" } td { (rate(s.upload_rate())) } }
                tr { td { "reported download" } td { (rate(s.download_rate())) } }
                tr { td { "up" } td { (uptime(s.uptime_secs)) ", shoal " (s.version) } }
                tr {
                    td { "since start" }
                    td {
                        (c.joined) " joined, " (c.left.iter().sum::<u64>()) " left, "
                        (c.published) " publishes, " (c.delisted) " delisted, "
                        (c.refused) " refused, " (c.misbehaved) " misbehaved"
                    }
                }
            }
            h2 { "Files" }
            @if s.files.is_empty() {
                p { "No file is listed." }
            } @else {
                table {
                    tr {
                        th { "name" } th.n { "size" } th.n { "chunks" } th.n { "holders" }
                        th.n { "complete" } th { "id" }
                    }
                    @for f in s.files.iter().take(PAGE_ROWS) {
                        tr {
                            td { a href={ "/file/" (f.id) } { (f.name) } }
                            td.n { (human_bytes(f.size)) }
                            td.n { (f.chunks) }
                            td.n { (f.holders) }
                            td.n { (f.complete) }
                            td.id { (f.id[..16]) "…" }
                        }
                    }
                }
                (more(s.files.len(), "files"))
            }
            h2 { "Peers" }
            @if s.peers.is_empty() {
                p { "No peer is registered." }
            } @else {
                table {
                    tr {
                        th { "address" } th.n { "files" } th.n { "upload" } th.n { "download" }
                        th.n { "uploaded" } th.n { "downloaded" } th.n { "connected" } th { "node" }
                    }
                    @for p in s.peers.iter().take(PAGE_ROWS) {
                        tr {
                            td { (p.addr) }
                            td.n { (p.files) }
                            td.n { (rate(p.upload_rate)) }
                            td.n { (rate(p.download_rate)) }
                            td.n { (human_bytes(p.uploaded)) }
                            td.n { (human_bytes(p.downloaded)) }
                            td.n { (uptime(p.connected_secs)) }
                            td.id { (p.node[..12]) "…" }
                        }
                    }
                }
                (more(s.peers.len(), "peers"))
            }
            p {
                "Rates and totals are what peers report with each pong (every few seconds). "
                "All of it as JSON: " a href="/status.json" { "/status.json" }
                "; Prometheus metrics: " a href="/metrics" { "/metrics" } "."
            }
        },
    )
}

fn more(len: usize, what: &str) -> Markup {
    html! {
        @if len > PAGE_ROWS {
            p { "The first " (PAGE_ROWS) " of " (len) " " (what) "; all of them in "
                a href="/status.json" { "/status.json" } "." }
        }
    }
}

/// A file's page: its holders.
fn file_page(s: &Status, f: &FileRow) -> Markup {
    shell(
        &format!("{} on shoal tracker {}", f.name, s.tracker),
        html! {
            p { a href="/" { "← tracker " (s.tracker) } }
            h1 { (f.name) }
            table.summary {
                tr { td { "id" } td.id { (f.id) } }
                tr { td { "size" } td { (human_bytes(f.size)) " in " (f.chunks) " chunks" } }
                tr { td { "holders" } td { (f.holders) ", " (f.complete) " with every chunk" } }
            }
            table {
                tr {
                    th { "holder" } th.n { "chunks" } th.n { "held" } th.n { "upload" }
                    th.n { "download" }
                }
                @for h in f.holder_list.iter().take(PAGE_ROWS) {
                    tr {
                        td { (h.addr) }
                        td.n { (h.chunks) " of " (f.chunks) }
                        td.n { (percent(h.chunks, f.chunks)) }
                        td.n { (rate(h.upload_rate)) }
                        td.n { (rate(h.download_rate)) }
                    }
                }
            }
            (more(f.holder_list.len(), "holders"))
        },
    )
}

fn percent(part: u32, whole: u32) -> String {
    if whole == 0 {
        return "100%".into();
    }
    format!("{}%", u64::from(part) * 100 / u64::from(whole))
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    let g = Gauge::<u64, std::sync::atomic::AtomicU64>::default();
    g.set(v);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    r.register(name, help, c);
}

type Labels = Vec<(String, String)>;

/// A counter per value of one label: `names[i]` counted `counts[i]` times.
fn by_label<T, const N: usize>(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    names: &[(T, &str); N],
    counts: &[u64; N],
) {
    let family = Family::<Labels, Counter>::default();
    for ((_, value), n) in names.iter().zip(counts) {
        family
            .get_or_create(&vec![(label.to_owned(), (*value).to_owned())])
            .inc_by(*n);
    }
    r.register(name, help, family);
}

/// The metrics, in the OpenMetrics text format Prometheus reads.
fn metrics(s: &Status) -> String {
    let mut r = Registry::with_prefix("shoal_tracker");
    let c = &s.counts;
    gauge(&mut r, "peers", "Registered peers", s.peers.len() as u64);
    gauge(
        &mut r,
        "peer_capacity",
        "The most peers the tracker registers",
        s.peer_capacity as u64,
    );
    gauge(&mut r, "files", "Listed files", s.files.len() as u64);
    gauge(
        &mut r,
        "holdings",
        "Holdings: a peer and a file it holds chunks of",
        s.holdings as u64,
    );
    gauge(
        &mut r,
        "reported_upload_bytes_per_second",
        "The sum of the upload rates peers report",
        s.upload_rate(),
    );
    gauge(
        &mut r,
        "reported_download_bytes_per_second",
        "The sum of the download rates peers report",
        s.download_rate(),
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the tracker started",
        s.uptime_secs,
    );
    counter(&mut r, "peers_joined", "Peers that registered", c.joined);
    by_label(
        &mut r,
        "peers_left",
        "Peers that left, by why",
        "reason",
        &LEFT,
        &c.left,
    );
    counter(
        &mut r,
        "refused",
        "Connections or registrations refused",
        c.refused,
    );
    counter(
        &mut r,
        "publishes",
        "Publishes accepted (a new file or a new holder)",
        c.published,
    );
    counter(
        &mut r,
        "publishes_refused",
        "Publishes refused",
        c.publish_refused,
    );
    counter(
        &mut r,
        "files_delisted",
        "Files delisted: no complete holder online",
        c.delisted,
    );
    counter(
        &mut r,
        "misbehaved",
        "Connections cut for breaking the protocol",
        c.misbehaved,
    );
    by_label(
        &mut r,
        "table_full",
        "Times a table was full, by table",
        "table",
        &TABLES,
        &c.overloaded,
    );
    counter(
        &mut r,
        "events_lost",
        "Events the loop did not take in time",
        u64::from(s.events_lost),
    );
    let holders = Family::<Labels, Gauge>::default();
    let complete = Family::<Labels, Gauge>::default();
    let by_file: BTreeMap<&str, &FileRow> = s.files.iter().map(|f| (f.id.as_str(), f)).collect();
    for (id, f) in by_file {
        let labels = vec![
            ("file".into(), id.to_owned()),
            ("name".into(), f.name.clone()),
        ];
        holders.get_or_create(&labels).set(i64::from(f.holders));
        complete.get_or_create(&labels).set(i64::from(f.complete));
    }
    r.register("file_holders", "Peers holding any chunk of a file", holders);
    r.register(
        "file_complete_holders",
        "Peers holding all of a file",
        complete,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}
