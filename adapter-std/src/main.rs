//! `shoal`: peer-to-peer file sharing. `shoal --help` lists the commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use adapter_std::cli::{self, Answers, Bar, GetOptions, Query, DEFAULT_TRACKER};
use adapter_std::proto_core::wire::ChunkRange;
use clap::{Args, Parser, Subcommand};

mod demo;

/// Peer-to-peer file sharing: a tracker, peers that share and fetch files chunk by verified
/// chunk from several peers at once.
#[derive(Parser)]
#[command(name = "shoal", version, about, propagate_version = true, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log more (repeat for more still).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

const EXAMPLES: &str = "Examples:
  shoal tracker                                    run a tracker on port 7070
  shoal share big.iso --tracker HOST:7070          share a file; prints its link
  shoal get 'shoal:ID?tr=HOST:7070&name=big.iso'   download it (then seed it)
  shoal get big.iso.shoal -o downloads/            from a metainfo file, into a folder
  shoal ls --tracker HOST:7070                     what the tracker lists
  shoal demo                                       a whole swarm on this machine";

/// The swarm key, for every command that talks to other nodes.
#[derive(Args)]
struct KeyArg {
    /// A private swarm: prove this key (64 hex digits in the file) at every handshake, and
    /// refuse nodes that cannot. Make one with `shoal keygen FILE`.
    #[arg(long, env = "SHOAL_SWARM_KEY_FILE", value_name = "FILE")]
    swarm_key_file: Option<PathBuf>,
}

/// How long a command waits, for every command that needs a tracker's answer.
#[derive(Args)]
struct WaitArg {
    /// Seconds to wait for an unreachable tracker (or an unknown file) before giving up.
    #[arg(
        long,
        env = "SHOAL_WAIT",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    wait: f64,
}

/// What a peer may take on (`share`, `get`, `peer`).
#[derive(Args)]
struct LimitArgs {
    /// Upload at most this many bytes per second (units K, M, G: powers of 1024; e.g. 10M).
    #[arg(long, value_name = "RATE", value_parser = rate)]
    upload_limit: Option<u64>,
    /// Download at most this many bytes per second (units as for --upload-limit).
    #[arg(long, value_name = "RATE", value_parser = rate)]
    download_limit: Option<u64>,
    /// Most connections at once, the tracker's included (a full table makes room by closing
    /// a connection that has done least).
    #[arg(long, default_value_t = 64)]
    max_conns: u16,
}

/// A rate in bytes per second with an optional unit (`10M`, `512K`, `2000000`); 0 is refused,
/// as it would stop every transfer rather than mean "no limit".
fn rate(text: &str) -> Result<u64, String> {
    match cli::parse_size(text)? {
        0 => {
            Err("a limit of 0 would stop every transfer; leave the option out for no limit".into())
        }
        n => Ok(n),
    }
}

/// A chunk size with an optional unit (`128K`, `1M`, `262144`).
fn chunk_size(text: &str) -> Result<u32, String> {
    let bytes = cli::parse_size(text)?;
    u32::try_from(bytes).map_err(|_| format!("{text} is larger than the largest chunk size, 16M"))
}

impl From<LimitArgs> for cli::Limits {
    fn from(a: LimitArgs) -> Self {
        cli::Limits {
            upload: a.upload_limit,
            download: a.download_limit,
            max_conns: a.max_conns,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a tracker: it knows who is online and who holds which chunks.
    #[command(after_help = "Examples:
  shoal tracker --listen 0.0.0.0:7070
  shoal tracker --http 127.0.0.1:8080     then open http://127.0.0.1:8080/")]
    Tracker {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: SocketAddr,
        /// Serve a status page (peers, files, holders, the rates peers report) at
        /// http://ADDR/, the same as JSON at /status.json, and Prometheus metrics at /metrics.
        /// Off unless given. No authentication: use a private address.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Most peers registered at once (each holds one connection). The open-file limit is
        /// raised to its hard limit at start; the log says how many peers fit.
        #[arg(long, default_value_t = cli::MAX_TRACKER_PEERS)]
        max_peers: usize,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Share files: prints one link per file, then serves until interrupted.
    #[command(after_help = "Examples:
  shoal share big.iso --tracker HOST:7070
  shoal share big.iso --tracker T1:7070 --tracker T2:7070 --save big.iso.shoal
  shoal share fw.bin --chunk-size 128K --upload-limit 2000000")]
    Share {
        /// Files to share.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A tracker (host:port); repeat for up to 4: each is told of the files, the links
        /// name them all, and any one of them lets a getter find the swarm.
        #[arg(long = "tracker", value_name = "HOST:PORT", env = "SHOAL_TRACKER",
              value_delimiter = ',', default_value = DEFAULT_TRACKER)]
        trackers: Vec<String>,
        /// Address to serve peers on (port 0: any free port).
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        /// Chunk size: a power of two from 16K to 16M (128K for devices whose flash sectors
        /// are 128 KiB). Default: 256K, doubled until the file has at most 8192 chunks.
        #[arg(long, value_name = "SIZE", value_parser = chunk_size)]
        chunk_size: Option<u32>,
        /// Also write the file's metainfo (manifest and trackers) to this path, e.g.
        /// big.iso.shoal: `shoal get big.iso.shoal` then needs no tracker that lists the file.
        #[arg(long, value_name = "PATH")]
        save: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Download a file by link, id or metainfo file; prints its path, then seeds until
    /// interrupted.
    #[command(after_help = "Examples:
  shoal get 'shoal:ID?tr=HOST:7070&name=big.iso'
  shoal get ID --tracker HOST:7070 -o downloads/
  shoal get big.iso.shoal --no-seed
  shoal get ID --peer 10.0.0.5:41234        (no tracker: join through one peer)")]
    Get {
        /// A shoal: link, a 64-digit file id, or a metainfo file (NAME.shoal).
        link: String,
        /// Where to write the file or folder (default: its name, in the current directory);
        /// an existing folder, or a path ending in '/', puts it inside. An output already
        /// there is checked and seeded if it is the content asked for, else left alone.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// A tracker (host:port), repeatable; default: the link's, else $SHOAL_TRACKER, else
        /// 127.0.0.1:7070 (none with --peer).
        #[arg(long = "tracker", value_name = "HOST:PORT")]
        trackers: Vec<String>,
        /// A peer to join through (host:port), repeatable: with no tracker reachable, the
        /// manifest comes from it and peer exchange finds the rest of the swarm.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
        /// Exit once the file is complete instead of seeding it.
        #[arg(long)]
        no_seed: bool,
        /// Address to serve peers on (port 0: any free port).
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// List the files the tracker knows.
    Ls(QueryArgs),
    /// Show which peers hold which chunks of a file (by id, link or name).
    Where {
        /// File id, link or name.
        file: String,
        #[command(flatten)]
        q: QueryArgs,
    },
    /// List the active peers.
    Peers(QueryArgs),
    /// An interactive console: share, get, ls, where, peers, status, help, quit; transfers
    /// run in the background while the prompt stays usable.
    Peer {
        /// A tracker (host:port); repeat for up to 4.
        #[arg(long = "tracker", value_name = "HOST:PORT", env = "SHOAL_TRACKER",
              value_delimiter = ',', default_value = DEFAULT_TRACKER)]
        trackers: Vec<String>,
        /// Address to serve peers on (port 0: any free port).
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Run a whole swarm on this machine: a tracker, a seeder of a generated 64 MiB file and
    /// three downloaders; verifies the copies and prints a summary.
    Demo,
    /// Write a new random swarm key to FILE (readable by you only), for --swarm-key-file.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct QueryArgs {
    /// The tracker (host:port).
    #[arg(long, env = "SHOAL_TRACKER", default_value = DEFAULT_TRACKER)]
    tracker: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    wait: WaitArg,
}

impl Cmd {
    /// The swarm key file and the wait limit, for the commands that take them.
    fn net(&self) -> (Option<&PathBuf>, Option<f64>) {
        fn both<'a>(k: &'a KeyArg, w: &WaitArg) -> (Option<&'a PathBuf>, Option<f64>) {
            (k.swarm_key_file.as_ref(), Some(w.wait))
        }
        match self {
            Cmd::Tracker { key, .. } => (key.swarm_key_file.as_ref(), None),
            Cmd::Share { key, wait, .. }
            | Cmd::Get { key, wait, .. }
            | Cmd::Peer { key, wait, .. } => both(key, wait),
            Cmd::Ls(q) | Cmd::Where { q, .. } | Cmd::Peers(q) => both(&q.key, &q.wait),
            Cmd::Demo | Cmd::Keygen { .. } => (None, None),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (key_file, wait) = cli.cmd.net();
    let key_file = key_file.cloned();
    // The commands read the limit where they wait; one place to set it.
    if let Some(w) = wait {
        std::env::set_var("SHOAL_WAIT", w.to_string());
    }
    let default = match (&cli.cmd, cli.verbose) {
        (_, 2..) => "debug",
        (_, 1) | (Cmd::Tracker { .. } | Cmd::Share { .. }, 0) => "info",
        // The console's own lines are the interface; logs would interleave with them.
        (Cmd::Peer { .. }, 0) => "error",
        _ => "warn",
    };
    // `.init()` also routes the `log` records of proto-core (its `log` feature) into tracing,
    // so `-v` and the filter variables show what the core decides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let key = match &key_file {
        Some(path) => cli::load_swarm_key(path),
        None => Ok(()),
    };
    match key.and_then(|()| run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::Interrupted>() {
            Some(cli::Interrupted(message)) => {
                if let Some(m) = message {
                    eprintln!("shoal: {m}");
                }
                ExitCode::from(130)
            }
            None => {
                eprintln!("shoal: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Tracker {
            listen,
            max_peers,
            http,
            ..
        } => cli::tracker(
            cli::TrackerOptions {
                listen,
                max_peers,
                http,
            },
            true,
            |_| {},
            || false,
        ),
        Cmd::Share {
            files,
            trackers,
            listen,
            chunk_size,
            save,
            limits,
            ..
        } => cli::share(
            &files,
            &trackers,
            cli::ShareOptions {
                listen,
                chunk_size,
                limits: limits.into(),
                save,
            },
            true,
            |l| cli::println_flush(&l),
            || false,
        ),
        Cmd::Get {
            link,
            output,
            trackers,
            peers,
            no_seed,
            listen,
            limits,
            ..
        } => {
            let opts = GetOptions {
                output,
                trackers,
                peers,
                no_seed,
                listen,
                limits: limits.into(),
                signals: true,
            };
            let mut bar = Bar::new(false);
            cli::get(
                &link,
                opts,
                &mut bar,
                |p| cli::println_flush(&p.display().to_string()),
                || false,
            )?;
            Ok(())
        }
        Cmd::Ls(q) => print_files(cli::query(&q.tracker, Query::Files)?, q.json),
        Cmd::Where { file, q } => {
            print_holders(cli::query(&q.tracker, Query::Where(file))?, q.json)
        }
        Cmd::Peers(q) => print_peers(cli::query(&q.tracker, Query::Peers)?, q.json),
        Cmd::Peer {
            trackers,
            listen,
            limits,
            ..
        } => adapter_std::console::run(&trackers, listen, limits.into()),
        Cmd::Demo => demo::run(),
        Cmd::Keygen { file } => {
            cli::keygen(&file)?;
            cli::println_flush(&format!(
                "wrote a new swarm key to {}; give it to every node of the swarm with --swarm-key-file",
                file.display()
            ));
            Ok(())
        }
    }
}

fn print_files(a: Answers, json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<_> = a
            .files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.file.to_string(), "name": f.name.as_str(), "size": f.size,
                    "chunk_size": f.chunk_size, "chunks": f.chunks, "holders": f.holders, "seeders": f.seeders,
                })
            })
            .collect();
        cli::println_flush(&serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = a
        .files
        .iter()
        .map(|f| {
            [
                f.name.to_string(),
                cli::human_bytes(f.size),
                f.chunks.to_string(),
                f.holders.to_string(),
                f.seeders.to_string(),
                f.file.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "SIZE", "CHUNKS", "HOLDERS", "SEEDERS", "ID"],
        &rows,
    );
    Ok(())
}

fn print_holders(a: Answers, json: bool) -> anyhow::Result<()> {
    // A holder with many ranges arrives as several items: join them.
    let mut joined: Vec<(String, String, Vec<ChunkRange>)> = Vec::new();
    for h in &a.holders {
        let addr = h.peer.addr.to_string();
        match joined.last_mut() {
            Some(last) if last.0 == addr => last.2.extend(h.ranges.iter().copied()),
            _ => joined.push((addr, h.peer.node.to_string(), h.ranges.to_vec())),
        }
    }
    if json {
        let v: Vec<_> = joined
            .iter()
            .map(|(addr, node, ranges)| {
                serde_json::json!({
                    "peer": addr, "node": node,
                    "chunks": ranges.iter().map(|r| r.end - r.start).sum::<u32>(),
                    "ranges": ranges.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
                })
            })
            .collect();
        cli::println_flush(&serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<[String; 3]> = joined
        .iter()
        .map(|(addr, _, ranges)| {
            let n: u32 = ranges.iter().map(|r| r.end - r.start).sum();
            [
                addr.clone(),
                n.to_string(),
                if ranges.is_empty() {
                    "-".into()
                } else {
                    cli::ranges_text(ranges)
                },
            ]
        })
        .collect();
    table(&["PEER", "CHUNKS", "RANGES"], &rows);
    Ok(())
}

fn print_peers(a: Answers, json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<_> = a
            .peers
            .iter()
            .map(|p| serde_json::json!({"addr": p.addr.to_string(), "node": p.node.to_string()}))
            .collect();
        cli::println_flush(&serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<[String; 2]> = a
        .peers
        .iter()
        .map(|p| [p.addr.to_string(), p.node.to_string()])
        .collect();
    table(&["ADDRESS", "NODE"], &rows);
    Ok(())
}

/// Columns padded to their widest cell.
fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut width = head.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        cli::println_flush(s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
