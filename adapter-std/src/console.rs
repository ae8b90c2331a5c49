//! `shoal peer`: an interactive console. Lines are read on their own thread and handed to the
//! event loop, so transfers go on in the background while the prompt stays usable.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::anyhow;
use proto_core::link::Link;
use proto_core::peer::PeerEvent;
use proto_core::time::Instant;
use proto_core::wire::{FileEntry, FileId, HolderItem};

use crate::cli::{
    bind, link_for, peer_driver, ranges_text, resolve_trackers, trackers_text, Limits, PeerDriver,
};
use crate::store::manifest_for;

const HELP: &str = "commands:
  share FILE            publish FILE and serve it
  get LINK|ID [PATH]    download in the background (to PATH, default: the file's name)
  ls                    files the tracker lists
  where LINK|ID|NAME    which peers hold which chunks of a file
  peers                 active peers
  status                what this peer shares and fetches, with progress
  help                  this text
  quit                  leave the swarm and exit";

/// A download started from the console.
struct Fetch {
    id: FileId,
    out: Option<PathBuf>,
    done: Option<PathBuf>,
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

/// Runs the console until `quit`, end of input, or SIGINT.
pub fn run(trackers: &[String], listen: SocketAddr, limits: Limits) -> anyhow::Result<()> {
    let resolved = resolve_trackers(trackers)?;
    let text = trackers_text(trackers);
    let tracker_text = text.as_str();
    let mut driver = peer_driver(&resolved, Some(bind(listen)?), true, true, limits)?;
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    say(&format!(
        "shoal peer, tracker {tracker_text}; type help for commands"
    ));
    prompt();
    let mut fetches: HashMap<u16, Fetch> = HashMap::new();
    let mut shared: HashMap<FileId, String> = HashMap::new();
    let mut pending = Pending::default();
    let mut quit = false;
    let started = std::time::Instant::now();
    let mut ready = false;
    let result = driver.run(|d, e| {
        match e {
            // Lines typed before the tracker answered wait for it (up to the wait limit).
            None if !ready && started.elapsed() < crate::cli::wait_limit() => {}
            None => loop {
                let _ = d.store.tick();
                match lines.try_recv() {
                    Ok(line) => {
                        if let Err(e) = command(
                            d,
                            &line,
                            trackers,
                            &mut fetches,
                            &mut shared,
                            &mut pending,
                            &mut quit,
                        ) {
                            say(&format!("error: {e:#}"));
                        }
                        if quit {
                            return ControlFlow::Break(());
                        }
                        prompt();
                    }
                    Err(mpsc::TryRecvError::Empty) => return ControlFlow::Continue(()),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        quit = true;
                        return ControlFlow::Break(());
                    }
                }
            },
            Some(e) => {
                if matches!(e, PeerEvent::Registered { .. }) {
                    ready = true;
                }
                on_event(d, e, trackers, &mut fetches, &shared, &mut pending)
            }
        }
        ControlFlow::Continue(())
    })?;
    let _ = driver.store.flush();
    crate::cli::leave(&mut driver);
    crate::cli::interrupted(result, None)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn prompt() {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "shoal> ");
    let _ = out.flush();
}

fn command(
    d: &mut PeerDriver,
    line: &str,
    trackers: &[String],
    fetches: &mut HashMap<u16, Fetch>,
    shared: &mut HashMap<FileId, String>,
    pending: &mut Pending,
    quit: &mut bool,
) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => {}
        (Some("help"), _, _) => say(HELP),
        (Some("quit" | "exit"), _, _) => *quit = true,
        (Some("share"), Some(file), _) => {
            let path = PathBuf::from(file);
            let m = manifest_for(&path, None, proto_core::peer::HostPeer::MAX_FILE_CHUNKS)?;
            let slot = d
                .node
                .share(now, m.id, m.header.clone())
                .map_err(|e| anyhow!("{e}"))?;
            d.store.add_shared(slot, &path, &m)?;
            shared.insert(m.id, m.header.name.to_string());
            say(&format!(
                "sharing {}: {}",
                m.header.name,
                link_for(m.id, trackers, &m.header.name)
            ));
        }
        (Some("get"), Some(link), out) => {
            let link = Link::parse(link).map_err(|e| anyhow!("{e}"))?;
            let out = out
                .map(PathBuf::from)
                .or_else(|| link.name.as_ref().map(|n| PathBuf::from(n.as_str())));
            if let Some(o) = &out {
                if o.exists() {
                    return Err(anyhow!("{} already exists; give another path", o.display()));
                }
            }
            let (slot, resume) = crate::cli::start_download(d, link.file, out.as_ref(), None)?;
            match resume {
                Some(r) => say(&format!(
                    "resuming: {} chunks already verified",
                    r.verified.len()
                )),
                None => say(&format!(
                    "fetching {} in the background; `status` shows progress",
                    link.file
                )),
            }
            fetches.insert(
                slot,
                Fetch {
                    id: link.file,
                    out,
                    done: None,
                },
            );
        }
        (Some("ls"), _, _) => {
            d.node.list_files(now).map_err(|e| anyhow!("{e}"))?;
            pending.files = Some(Vec::new());
        }
        (Some("where"), Some(what), _) => match Link::parse(what) {
            Ok(l) => {
                d.node.locate(now, l.file).map_err(|e| anyhow!("{e}"))?;
                pending.holders = Some(Vec::new());
            }
            Err(_) => {
                d.node.list_files(now).map_err(|e| anyhow!("{e}"))?;
                pending.files = Some(Vec::new());
                pending.where_name = Some(what.to_owned());
            }
        },
        (Some("peers"), _, _) => {
            d.node.list_peers(now).map_err(|e| anyhow!("{e}"))?;
            pending.peers = true;
        }
        (Some("status"), _, _) => {
            say(&match d.node.registered() {
                Some(addr) => format!("registered as {addr}"),
                None => "not registered with a tracker (retrying)".to_owned(),
            });
            for name in shared.values() {
                say(&format!("  sharing {name}"));
            }
            for (slot, f) in fetches.iter() {
                match (&f.done, d.node.progress(*slot)) {
                    (Some(p), _) => say(&format!("  done {} -> {}", f.id, p.display())),
                    (None, Some(p)) => say(&format!(
                        "  {}: {}/{} bytes, {} chunks of {}, {:.1} MB/s, {} peers",
                        f.out
                            .as_ref()
                            .map_or(f.id.to_string(), |o| o.display().to_string()),
                        p.bytes_done,
                        p.bytes_total,
                        p.chunks_done,
                        p.chunks_total,
                        p.rate as f64 / 1e6,
                        p.peers
                    )),
                    (None, None) => say(&format!("  {}: stopped", f.id)),
                }
            }
        }
        (Some(other), _, _) => return Err(anyhow!("unknown command '{other}'; type help")),
    }
    Ok(())
}

fn on_event(
    d: &mut PeerDriver,
    e: PeerEvent,
    trackers: &[String],
    fetches: &mut HashMap<u16, Fetch>,
    shared: &HashMap<FileId, String>,
    pending: &mut Pending,
) {
    let now = Instant::now();
    match e {
        PeerEvent::Published { file } => {
            if let Some(name) = shared.get(&file) {
                say(&format!("\ntracker lists {name}"));
                prompt();
            }
        }
        PeerEvent::FileListed(f) => {
            if let Some(files) = pending.files.as_mut() {
                files.push(f);
            }
        }
        PeerEvent::FileListEnd { .. } => {
            let files = pending.files.take().unwrap_or_default();
            if let Some(name) = pending.where_name.take() {
                match crate::cli::by_name(&files, &name) {
                    Ok(id) if d.node.locate(now, id).is_ok() => pending.holders = Some(Vec::new()),
                    Ok(_) => say("\nnot connected to a tracker"),
                    Err(e) => say(&format!("\n{e}")),
                }
            } else {
                say(&format!("\n{} files", files.len()));
                for f in &files {
                    say(&format!(
                        "  {}  {} bytes  {} chunks  {} holders  {}",
                        f.name,
                        f.size,
                        f.chunks,
                        f.holders,
                        link_for(f.file, trackers, &f.name)
                    ));
                }
            }
            prompt();
        }
        PeerEvent::PeerList { count } if pending.peers => {
            pending.peers = false;
            let me = d.node.registered();
            let others = usize::from(count).saturating_sub(usize::from(me.is_some()));
            say(&format!("\n{others} other peers online"));
            for p in d.node.peers().filter(|p| Some(p.addr) != me) {
                say(&format!("  {}  {}", p.addr, p.node));
            }
            prompt();
        }
        PeerEvent::Holder(h) => {
            if let Some(hs) = pending.holders.as_mut() {
                hs.push(h);
            }
        }
        PeerEvent::LocateEnd { .. } => {
            for h in pending.holders.take().unwrap_or_default() {
                say(&format!(
                    "  {}  {}",
                    h.peer.addr,
                    if h.ranges.is_empty() {
                        "-".to_owned()
                    } else {
                        ranges_text(&h.ranges)
                    }
                ));
            }
            prompt();
        }
        PeerEvent::NotFound { file } => {
            say(&format!("\nthe tracker does not list {file}"));
            prompt();
        }
        // The store journals manifests and chunks itself (see proto_core::storage::Storage).
        PeerEvent::ManifestReceived { slot, .. } => {
            if let Some(f) = fetches.get_mut(&slot) {
                f.out = d.store.path(slot).map(std::path::Path::to_path_buf);
            }
        }
        PeerEvent::FileComplete { slot } => {
            if let Some(f) = fetches.get_mut(&slot) {
                match d.store.final_path(slot) {
                    Some(p) => {
                        say(&format!("\ndone: {} (now sharing it)", p.display()));
                        f.done = Some(p.to_path_buf());
                    }
                    None => {
                        let why = d
                            .last_storage_error
                            .take()
                            .map_or_else(|| "unknown error".to_owned(), |e| e.to_string());
                        say(&format!("\ncannot finish the download: {why}"));
                    }
                }
                prompt();
            }
        }
        PeerEvent::FetchFailed { slot, reason } => {
            say(&format!("\ndownload in slot {slot} failed: {reason}"));
            prompt();
        }
        PeerEvent::TrackerRefused(r) => {
            // Said once per refusal; the core retries with backoff (a full table clears).
            let why = crate::cli::fatal_refusal(&trackers_text(trackers), r).map_or_else(
                || format!("a tracker refused us: {r}; retrying"),
                |e| e.to_string(),
            );
            say(&format!("\n{why}"));
            prompt();
        }
        _ => {}
    }
    let _ = d.store.tick();
}
