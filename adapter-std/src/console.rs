//! `shoal peer`: an interactive console. Transfers go on in the background while the prompt
//! stays usable.
//!
//! Two threads: the event loop (the driver) owns the peer, and a line editor (rustyline) owns
//! the terminal. The editor hands each line to the loop; the loop prints answers through the
//! editor's external printer, which writes them above the prompt and redraws the line being
//! typed, so an answer arriving later (a file list, a finished download) never lands inside
//! it. A line is split into words as a shell does (quotes and backslashes) and parsed with
//! clap, so the console's commands take the same words and options as the `shoal` command and
//! `help` is clap's.
//!
//! Ctrl-C clears a line being typed; on an empty line it quits, asking first while downloads
//! run (as does `quit`, and Ctrl-D). Off a terminal (input from a pipe) nothing is asked and
//! the end of input quits.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{anyhow, bail};
use clap::Parser;
use proto_core::link::Link;
use proto_core::peer::PeerEvent;
use proto_core::time::Instant;
use proto_core::wire::{FileEntry, FileId, HolderItem};
use rustyline::error::ReadlineError;
use rustyline::{
    Cmd, ConditionalEventHandler, DefaultEditor, Event, EventContext, EventHandler,
    ExternalPrinter, KeyEvent, Movement, RepeatCount,
};

use crate::cli::{
    bind, human_bytes, link_for, peer_driver, ranges_text, resolve_as, resolve_trackers,
    trackers_text, Limits, PeerDriver,
};
use crate::store::manifest_for;

const PROMPT: &str = "shoal> ";

/// The console's commands: the words and options of the `shoal` command where they exist.
#[derive(Parser, Debug)]
#[command(
    multicall = true,
    help_template = "commands:\n{subcommands}\n\n`help COMMAND` tells more; quote names with \
                     spaces as in a shell: share 'my file.iso'"
)]
enum Line {
    /// Publish files and serve them
    Share {
        /// Files to share
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Download a file in the background
    Get {
        /// A shoal: link, or a file id
        #[arg(value_name = "LINK|ID")]
        link: String,
        /// Where to write it (a folder, or a path ending in /, puts it inside); default: its
        /// name
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// A peer to fetch from besides those the tracker names (host:port); repeatable
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
    },
    /// Files the tracker lists
    Ls,
    /// Which peers hold which chunks of a file
    Where {
        /// A link, a file id, or a name the tracker lists
        #[arg(value_name = "LINK|ID|NAME")]
        file: String,
    },
    /// Peers the tracker knows
    Peers,
    /// What this peer shares and fetches, with progress
    #[command(visible_alias = "status")]
    Files,
    /// Stop a download (its partial file stays: `get` it again to resume)
    Cancel {
        /// Its id, name or output path (as `files` shows)
        #[arg(value_name = "ID|NAME|PATH")]
        file: String,
    },
    /// Stop sharing a file (the trackers are told at once)
    Unshare {
        /// Its id, name or path (as `files` shows)
        #[arg(value_name = "ID|NAME|PATH")]
        file: String,
    },
    /// Leave the swarm and exit
    #[command(visible_alias = "exit")]
    Quit,
}

/// Where a file of this console stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Sharing,
    Fetching,
    /// Downloaded, and now shared.
    Done,
}

/// A file shared or fetched from this console, by slot.
struct Entry {
    id: FileId,
    /// Its name, once known (a download by id learns it with the manifest).
    name: Option<String>,
    /// The file shared, or the download's output (once known).
    path: Option<PathBuf>,
    state: State,
}

impl Entry {
    fn label(&self) -> String {
        match (&self.name, &self.path) {
            (_, Some(p)) => p.display().to_string(),
            (Some(n), None) => n.clone(),
            (None, None) => self.id.to_string(),
        }
    }
}

/// What the console is waiting for from the tracker.
#[derive(Default)]
struct Pending {
    files: Option<Vec<FileEntry>>,
    where_name: Option<String>,
    holders: Option<Vec<HolderItem>>,
    /// A peer list was asked for.
    peers: bool,
}

/// How the loop prints: through the line editor's printer on a terminal (above the prompt),
/// else plainly on stdout.
#[derive(Clone)]
struct Out(Option<Arc<Mutex<Box<dyn ExternalPrinter + Send>>>>);

impl Out {
    fn say(&self, text: &str) {
        if let Some(p) = &self.0 {
            if let Ok(mut p) = p.lock() {
                if p.print(format!("{text}\n")).is_ok() {
                    return;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// From the line editor to the loop.
enum Input {
    Line(String),
    Quit,
}

/// Runs the console until `quit`, end of input, or SIGINT/SIGTERM.
pub fn run(trackers: &[String], listen: SocketAddr, limits: Limits) -> anyhow::Result<()> {
    let resolved = resolve_trackers(trackers)?;
    let tracker_text = trackers_text(trackers);
    let mut driver = peer_driver(&resolved, Some(bind(listen)?), true, true, limits)?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let terminal = tty.then(Terminal::save).flatten();
    let mut editor = DefaultEditor::new().map_err(|e| anyhow!("cannot read the terminal: {e}"))?;
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ClearOrQuit)),
    );
    let printer = editor
        .create_external_printer()
        .ok()
        .map(|p| Arc::new(Mutex::new(Box::new(p) as Box<dyn ExternalPrinter + Send>)));
    let out = Out(printer);
    let running = Arc::new(AtomicUsize::new(0));
    let (tx, lines) = mpsc::channel::<Input>();
    {
        let running = running.clone();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || read_lines(editor, &tx, &running, tty))?;
    }
    out.say(&format!(
        "shoal peer, tracker {tracker_text}; type help for commands"
    ));
    let mut console = Console {
        trackers: trackers.to_vec(),
        entries: BTreeMap::new(),
        pending: Pending::default(),
        out,
    };
    let started = std::time::Instant::now();
    let mut ready = false;
    let result = driver.run(|d, e| {
        match e {
            // Lines typed before the tracker answered wait for it (up to the wait limit).
            None if !ready && started.elapsed() < crate::cli::wait_limit() => {}
            None => loop {
                let _ = d.store.tick();
                match lines.try_recv() {
                    Ok(Input::Line(line)) => {
                        if console.line(d, &line).is_break() {
                            return ControlFlow::Break(());
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Ok(Input::Quit) | Err(mpsc::TryRecvError::Disconnected) => {
                        return ControlFlow::Break(());
                    }
                }
            },
            Some(e) => {
                if matches!(e, PeerEvent::Registered { .. }) {
                    ready = true;
                }
                console.on_event(d, e);
            }
        }
        running.store(console.running(), Ordering::Relaxed);
        ControlFlow::Continue(())
    });
    let _ = driver.store.flush();
    crate::cli::leave(&mut driver);
    if let Some(t) = terminal {
        t.restore();
    }
    crate::cli::interrupted(result?, None)
}

/// The terminal's settings at start, put back at the end: the editor's thread may still be in
/// raw mode when the console ends (a signal, a quit from a pipe), and a shell left in raw mode
/// is unusable.
struct Terminal(rustix::termios::Termios);

impl Terminal {
    fn save() -> Option<Terminal> {
        rustix::termios::tcgetattr(std::io::stdin())
            .ok()
            .map(Terminal)
    }

    fn restore(self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Ctrl-C: clears the line if there is one; on an empty line it interrupts (quit, asked).
struct ClearOrQuit;

impl ConditionalEventHandler for ClearOrQuit {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        (!ctx.line().is_empty()).then_some(Cmd::Kill(Movement::WholeLine))
    }
}

/// The editor's thread: reads lines (with history) and hands them to the loop until the user
/// quits. On a terminal, quitting while downloads run is confirmed first.
fn read_lines(
    mut editor: DefaultEditor,
    tx: &mpsc::Sender<Input>,
    running: &AtomicUsize,
    tty: bool,
) {
    loop {
        let quit = match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let quits = shlex::split(&line)
                    .and_then(|w| w.first().cloned())
                    .is_some_and(|w| w == "quit" || w == "exit");
                if !quits {
                    if tx.send(Input::Line(line)).is_err() {
                        return;
                    }
                    continue;
                }
                true
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => true,
            Err(_) => true,
        };
        if quit && (!tty || confirm_quit(&mut editor, running)) {
            let _ = tx.send(Input::Quit);
            return;
        }
    }
}

/// Asks before quitting while downloads run; true to quit. Ctrl-C or Ctrl-D again means yes.
fn confirm_quit(editor: &mut DefaultEditor, running: &AtomicUsize) -> bool {
    let n = running.load(Ordering::Relaxed);
    if n == 0 {
        return true;
    }
    let question = format!(
        "{n} download{} running; quit anyway? [y/N] ",
        if n == 1 { " is" } else { "s are" }
    );
    match editor.readline(&question) {
        Ok(answer) => matches!(answer.trim(), "y" | "Y" | "yes"),
        Err(_) => true,
    }
}

/// The loop's side: the files of this console and what it waits for.
struct Console {
    trackers: Vec<String>,
    entries: BTreeMap<u16, Entry>,
    pending: Pending,
    out: Out,
}

impl Console {
    fn say(&self, text: &str) {
        self.out.say(text);
    }

    /// Downloads not finished.
    fn running(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.state == State::Fetching)
            .count()
    }

    /// Runs one typed line; `Break` to quit.
    fn line(&mut self, d: &mut PeerDriver, line: &str) -> ControlFlow<()> {
        let Some(words) = shlex::split(line) else {
            self.say("error: a quote is not closed");
            return ControlFlow::Continue(());
        };
        if words.is_empty() {
            return ControlFlow::Continue(());
        }
        match Line::try_parse_from(&words) {
            Ok(Line::Quit) => return ControlFlow::Break(()),
            Ok(cmd) => {
                if let Err(e) = self.command(d, cmd) {
                    self.say(&format!("error: {e:#}"));
                }
            }
            // Help asked for, or a usage error: clap's own words.
            Err(e) => self.say(e.render().to_string().trim_end()),
        }
        ControlFlow::Continue(())
    }

    fn command(&mut self, d: &mut PeerDriver, cmd: Line) -> anyhow::Result<()> {
        let now = Instant::now();
        match cmd {
            Line::Quit => {}
            Line::Share { files } => {
                for path in files {
                    self.share(d, &path)?;
                }
            }
            Line::Get {
                link,
                output,
                peers,
            } => self.get(d, &link, output, &peers)?,
            Line::Ls => {
                d.node.list_files(now).map_err(|e| anyhow!("{e}"))?;
                self.pending.files = Some(Vec::new());
            }
            Line::Where { file } => match Link::parse(&file) {
                Ok(l) => {
                    d.node.locate(now, l.file).map_err(|e| anyhow!("{e}"))?;
                    self.pending.holders = Some(Vec::new());
                }
                Err(_) => {
                    d.node.list_files(now).map_err(|e| anyhow!("{e}"))?;
                    self.pending.files = Some(Vec::new());
                    self.pending.where_name = Some(file);
                }
            },
            Line::Peers => {
                d.node.list_peers(now).map_err(|e| anyhow!("{e}"))?;
                self.pending.peers = true;
            }
            Line::Files => self.files(d),
            Line::Cancel { file } => {
                let slot = self.find(&file, "download", |e| e.state == State::Fetching)?;
                let e = self.drop_slot(d, slot)?;
                match e.path {
                    Some(p) => self.say(&format!(
                        "cancelled {}; what was verified stays beside it: `get` it again to \
                         resume",
                        p.display()
                    )),
                    None => self.say(&format!("cancelled {}", e.id)),
                }
            }
            Line::Unshare { file } => {
                let slot = self.find(&file, "shared file", |e| e.state != State::Fetching)?;
                let e = self.drop_slot(d, slot)?;
                self.say(&format!("stopped sharing {}", e.label()));
            }
        }
        Ok(())
    }

    fn share(&mut self, d: &mut PeerDriver, path: &Path) -> anyhow::Result<()> {
        let m = manifest_for(path, None, proto_core::peer::HostPeer::MAX_FILE_CHUNKS)?;
        let slot = d
            .node
            .share(Instant::now(), m.id, m.header.clone())
            .map_err(|e| anyhow!("{e}"))?;
        d.store.add_shared(slot, path, &m)?;
        self.entries.insert(
            slot,
            Entry {
                id: m.id,
                name: Some(m.header.name.to_string()),
                path: Some(path.to_path_buf()),
                state: State::Sharing,
            },
        );
        self.say(&format!(
            "sharing {}: {}",
            m.header.name,
            link_for(m.id, &self.trackers, &m.header.name)
        ));
        Ok(())
    }

    fn get(
        &mut self,
        d: &mut PeerDriver,
        link: &str,
        output: Option<PathBuf>,
        peers: &[String],
    ) -> anyhow::Result<()> {
        let link = Link::parse(link).map_err(|e| anyhow!("{e}"))?;
        // An output already there is checked when the manifest comes (see ManifestReceived).
        let (out, dir) = crate::cli::output_target(output, link.name.as_ref())?;
        let addrs = peers
            .iter()
            .map(|p| resolve_as("peer", p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (slot, resume) = crate::cli::start_download(d, link.file, out.as_ref(), dir.as_ref())?;
        for a in addrs {
            d.node
                .add_peer(Instant::now(), slot, a)
                .map_err(|e| anyhow!("{e}"))?;
        }
        let existing = d.store.existing(slot).map(Path::to_path_buf);
        match (resume, existing) {
            (Some(r), _) => self.say(&format!(
                "resuming: {} chunks already verified",
                r.verified.len()
            )),
            (None, Some(p)) => self.say(&format!(
                "{} is already there: checking it once the manifest comes",
                p.display()
            )),
            (None, None) => self.say(&format!(
                "fetching {} in the background; `files` shows progress",
                out.as_ref()
                    .map_or(link.file.to_string(), |o| o.display().to_string())
            )),
        }
        self.entries.insert(
            slot,
            Entry {
                id: link.file,
                name: link.name.map(|n| n.to_string()),
                path: out,
                state: State::Fetching,
            },
        );
        Ok(())
    }

    /// The slot of the one entry that `want` accepts and `what` names: its id (or a link to
    /// it), name or path.
    fn find(&self, what: &str, kind: &str, want: impl Fn(&Entry) -> bool) -> anyhow::Result<u16> {
        let id = Link::parse(what).ok().map(|l| l.file);
        let hits: Vec<(u16, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| want(e))
            .filter(|(_, e)| {
                Some(e.id) == id
                    || e.name.as_deref() == Some(what)
                    || e.path.as_deref() == Some(Path::new(what))
            })
            .map(|(s, e)| (*s, e))
            .collect();
        match hits.as_slice() {
            [] => bail!("no {kind} here is '{what}'; `files` lists them"),
            [(slot, _)] => Ok(*slot),
            many => bail!(
                "'{what}' names {} files; give its id: {}",
                many.len(),
                many.iter()
                    .map(|(_, e)| e.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Drops `slot` from the peer (the trackers are told) and its storage.
    fn drop_slot(&mut self, d: &mut PeerDriver, slot: u16) -> anyhow::Result<Entry> {
        d.node
            .cancel(Instant::now(), slot)
            .map_err(|e| anyhow!("{e}"))?;
        // What was verified is on disk before the files close.
        let _ = d.store.flush();
        d.store.remove(slot);
        self.entries
            .remove(&slot)
            .ok_or_else(|| anyhow!("no such file"))
    }

    fn files(&self, d: &PeerDriver) {
        self.say(&match d.node.registered() {
            Some(addr) => format!("registered as {addr}"),
            None => "not registered with a tracker (retrying)".to_owned(),
        });
        if self.entries.is_empty() {
            self.say("  nothing shared or fetched yet: share FILE, get LINK");
        }
        for (slot, e) in &self.entries {
            let p = d.node.progress(*slot);
            let uploaded = p.map_or(String::new(), |p| {
                format!(
                    ", uploaded {} to {} peers",
                    human_bytes(p.bytes_uploaded),
                    p.peers_served
                )
            });
            let line = match (e.state, p) {
                (State::Sharing, _) => format!("  sharing {}{uploaded}", e.label()),
                (State::Done, _) => format!("  done {} -> {}{uploaded}", e.id, e.label()),
                (State::Fetching, Some(p)) if p.bytes_total > 0 => format!(
                    "  {}: {}% of {}, {}/s, {} peers",
                    e.label(),
                    p.bytes_done * 100 / p.bytes_total,
                    human_bytes(p.bytes_total),
                    human_bytes(p.rate),
                    p.peers
                ),
                (State::Fetching, _) => format!("  {}: waiting for its manifest", e.label()),
            };
            self.say(&line);
        }
    }

    fn on_event(&mut self, d: &mut PeerDriver, e: PeerEvent) {
        let now = Instant::now();
        match e {
            PeerEvent::Published { file } => {
                if let Some(e) = self.entries.values().find(|e| e.id == file) {
                    self.say(&format!("the tracker lists {}", e.label()));
                }
            }
            PeerEvent::FileListed(f) => {
                if let Some(files) = self.pending.files.as_mut() {
                    files.push(f);
                }
            }
            PeerEvent::FileListEnd { .. } => {
                let files = self.pending.files.take().unwrap_or_default();
                if let Some(name) = self.pending.where_name.take() {
                    match crate::cli::by_name(&files, &name) {
                        Ok(id) if d.node.locate(now, id).is_ok() => {
                            self.pending.holders = Some(Vec::new());
                        }
                        Ok(_) => self.say("not connected to a tracker"),
                        Err(e) => self.say(&e.to_string()),
                    }
                } else {
                    self.say(&format!("{} files", files.len()));
                    for f in &files {
                        self.say(&format!(
                            "  {}  {}  {} holders  {}",
                            f.name,
                            human_bytes(f.size),
                            f.holders,
                            link_for(f.file, &self.trackers, &f.name)
                        ));
                    }
                }
            }
            PeerEvent::PeerList { count } if self.pending.peers => {
                self.pending.peers = false;
                let me = d.node.registered();
                let others = usize::from(count).saturating_sub(usize::from(me.is_some()));
                self.say(&format!("{others} other peers online"));
                for p in d.node.peers().filter(|p| Some(p.addr) != me) {
                    self.say(&format!("  {}  {}", p.addr, p.node));
                }
            }
            PeerEvent::Holder(h) => {
                if let Some(hs) = self.pending.holders.as_mut() {
                    hs.push(h);
                }
            }
            PeerEvent::LocateEnd { holders, .. } => {
                let found = self.pending.holders.take().unwrap_or_default();
                self.say(&format!("{holders} holders"));
                for h in found {
                    self.say(&format!(
                        "  {}  {}",
                        h.peer.addr,
                        if h.ranges.is_empty() {
                            "-".to_owned()
                        } else {
                            ranges_text(&h.ranges)
                        }
                    ));
                }
            }
            PeerEvent::NotFound { file } => {
                self.say(&format!("the tracker does not list {file}"));
            }
            // The output was there before: checked as `shoal get` checks it, seeded if it is
            // the content asked for, else the download ends with one line.
            PeerEvent::ManifestReceived { slot, file, header }
                if d.store.existing(slot).is_some() =>
            {
                let path = d
                    .store
                    .existing(slot)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let Some(mut e) = self.entries.remove(&slot) else {
                    return;
                };
                match crate::cli::seed_existing(d, Some(slot), &path, file, &header) {
                    Ok(shared) => {
                        e.name = Some(header.name.to_string());
                        e.path = Some(path.clone());
                        e.state = State::Done;
                        self.entries.insert(shared, e);
                        self.say(&format!("{} is already here; sharing it", path.display()));
                    }
                    Err(err) => {
                        let _ = d.node.cancel(Instant::now(), slot);
                        d.store.remove(slot);
                        self.say(&err.to_string());
                    }
                }
            }
            // The store journals manifests and chunks itself (see proto_core::storage::Storage).
            PeerEvent::ManifestReceived { slot, header, .. } => {
                if let Some(e) = self.entries.get_mut(&slot) {
                    e.path = d.store.path(slot).map(Path::to_path_buf);
                    e.name = Some(header.name.to_string());
                }
            }
            PeerEvent::FileComplete { slot } => {
                let Some(e) = self.entries.get_mut(&slot) else {
                    return;
                };
                match d.store.final_path(slot) {
                    Some(p) => {
                        e.path = Some(p.to_path_buf());
                        e.state = State::Done;
                        self.say(&format!("done: {} (now sharing it)", p.display()));
                    }
                    None => {
                        let why = d
                            .last_storage_error
                            .take()
                            .map_or_else(|| "unknown error".to_owned(), |e| e.to_string());
                        self.say(&format!("cannot finish the download: {why}"));
                    }
                }
            }
            PeerEvent::FetchFailed { slot, reason } => {
                if let Some(e) = self.entries.remove(&slot) {
                    d.store.remove(slot);
                    self.say(&format!("the download of {} failed: {reason}", e.label()));
                }
            }
            PeerEvent::TrackerRefused(r) => {
                // Said once per refusal; the core retries with backoff (a full table clears).
                let why = crate::cli::fatal_refusal(&trackers_text(&self.trackers), r).map_or_else(
                    || format!("a tracker refused us: {r}; retrying"),
                    |e| e.to_string(),
                );
                self.say(&why);
            }
            _ => {}
        }
        let _ = d.store.tick();
    }
}
