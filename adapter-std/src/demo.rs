//! `shoal demo`: a whole swarm on loopback in one process.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use adapter_std::cli::{self, Bar, GetOptions};
use anyhow::{anyhow, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use sha2::{Digest, Sha256};

const SIZE: usize = 64 << 20;

/// A thread with room for a node: trackers and peers are large fixed-size structs that are
/// assembled on the stack before they are boxed.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(f)
        .expect("the OS refused to start a thread")
}
const DOWNLOADERS: usize = 3;

/// Runs the demo: tracker, seeder of a generated 64 MiB file, three downloaders.
pub(crate) fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path) -> anyhow::Result<()> {
    // Keep the demo's manifest cache out of the user's state directory.
    std::env::set_var("SHOAL_STATE_DIR", dir.join("state"));
    let source = dir.join("demo-64MiB.bin");
    eprintln!(
        "generating {} MiB of random data in {}",
        SIZE >> 20,
        source.display()
    );
    let mut data = vec![0u8; SIZE];
    getrandom::fill(&mut data).map_err(|e| anyhow!("no random data: {e}"))?;
    fs::write(&source, &data).with_context(|| format!("cannot write {}", source.display()))?;
    let want = Sha256::digest(&data);
    drop(data);

    let stop = Arc::new(AtomicBool::new(false));
    // The tracker stops last, so no peer reports losing it on the way out.
    let stop_tracker = Arc::new(AtomicBool::new(false));
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;

    let (tx, rx) = mpsc::channel();
    let s = stop_tracker.clone();
    let tracker = spawn(move || {
        cli::tracker(
            cli::TrackerOptions {
                listen: loopback,
                max_peers: 1024,
                http: None,
            },
            false,
            |a| {
                let _ = tx.send(a);
            },
            || s.load(Ordering::Relaxed),
        )
    });
    let tracker_addr = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the tracker did not start"))?;
    eprintln!("tracker on {tracker_addr}");

    let (tx, rx) = mpsc::channel();
    let s = stop.clone();
    let src = source.clone();
    let seeder = spawn(move || {
        cli::share(
            &[src],
            &[tracker_addr.to_string()],
            cli::ShareOptions {
                listen: loopback,
                chunk_size: None,
                limits: cli::Limits::default(),
                save: None,
            },
            false,
            |l| drop(tx.send(l)),
            || s.load(Ordering::Relaxed),
        )
    });
    let link = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow!("the seeder did not publish"))?;
    eprintln!("seeder shares {link}");

    let bars =
        MultiProgress::with_draw_target(if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
    let start = Instant::now();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Duration)>();
    let mut getters = Vec::new();
    for i in 0..DOWNLOADERS {
        let out = dir.join(format!("copy-{}.bin", i + 1));
        let opts = GetOptions {
            output: Some(out),
            trackers: Vec::new(),
            peers: Vec::new(),
            no_seed: false,
            listen: loopback,
            limits: cli::Limits::default(),
            signals: false,
        };
        let bar = bars.add(ProgressBar::hidden());
        let link = link.clone();
        let s = stop.clone();
        let done = done_tx.clone();
        getters.push(spawn(move || {
            let mut bar = Bar::attached(bar);
            cli::get(
                &link,
                opts,
                &mut bar,
                |_| {
                    let _ = done.send((i, start.elapsed()));
                },
                || s.load(Ordering::Relaxed),
            )
        }));
    }
    let mut times = [Duration::ZERO; DOWNLOADERS];
    for _ in 0..DOWNLOADERS {
        match done_rx.recv_timeout(Duration::from_secs(600)) {
            Ok((i, t)) => times[i] = t,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                stop_tracker.store(true, Ordering::Relaxed);
                return Err(anyhow!("the downloads did not finish within 10 minutes"));
            }
        }
    }
    let total = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut paths: Vec<PathBuf> = Vec::new();
    for g in getters {
        paths.push(
            g.join()
                .map_err(|_| anyhow!("a downloader thread panicked"))??,
        );
    }
    seeder
        .join()
        .map_err(|_| anyhow!("the seeder thread panicked"))??;
    stop_tracker.store(true, Ordering::Relaxed);
    tracker
        .join()
        .map_err(|_| anyhow!("the tracker thread panicked"))??;
    let _ = bars.clear();

    let mut out = std::io::stdout().lock();
    for (i, p) in paths.iter().enumerate() {
        let got =
            Sha256::digest(fs::read(p).with_context(|| format!("cannot read {}", p.display()))?);
        let ok = got == want;
        let mbps = SIZE as f64 / times[i].as_secs_f64() / 1e6;
        writeln!(
            out,
            "downloader {}: {:.2} s, {:.0} MB/s, copy {}",
            i + 1,
            times[i].as_secs_f64(),
            mbps,
            if ok { "identical" } else { "DIFFERS" }
        )?;
        if !ok {
            return Err(anyhow!("copy {} differs from the original", i + 1));
        }
    }
    writeln!(
        out,
        "demo: {} downloaders got {} MiB each from 1 seeder in {:.2} s; all copies verified",
        DOWNLOADERS,
        SIZE >> 20,
        total.as_secs_f64()
    )?;
    Ok(())
}
