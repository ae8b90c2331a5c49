//! Runs one simulated swarm and prints its summary line; exits non-zero if any surviving peer's
//! file differs from the original, a chunk was reported verified with bad bytes, or a live
//! downloader did not finish.
//!
//! ```text
//! cargo run --release -p tests --bin sim -- --peers 20 --seeders 1 --file-mib 16 --chunk-kib 256 \
//!     --loss 0 --latency-ms 10 --up-mbps 100 --down-mbps 100 --crash 0 --seed 1
//! ```

use std::process::ExitCode;

use clap::Parser;
use tests::hostile::Attack;
use tests::proto_core::auth::SwarmKey;
use tests::proto_core::time::Duration;
use tests::sim::{Sim, SimConfig};

/// The hostile node's attack (see `tests::hostile::Attack`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum HostileArg {
    Oversized,
    Flood,
    FalseAvailability,
    Unsolicited,
    WrongManifest,
    FakePeers,
    NoKey,
    LiesInExchange,
}

/// A deterministic shoal swarm: trackers, S seeders, N-S downloaders.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Bytes per block request, in KiB (default: the peer's, 64).
    #[arg(long)]
    request_kib: Option<u32>,
    /// Connections per peer, the tracker's included (the shipped default is 64)
    #[arg(long, default_value_t = 32)]
    max_conns: u16,
    /// Peers serve only whole chunks (no blocks of chunks they are still fetching).
    #[arg(long)]
    no_partial: bool,
    /// Downloaders (the last ones) whose links are ten times slower, both ways.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Peers in all, seeders included.
    #[arg(long, default_value_t = 20)]
    peers: usize,
    /// Peers that start with the whole file.
    #[arg(long, default_value_t = 1)]
    seeders: usize,
    /// File size in MiB.
    #[arg(long, default_value_t = 16)]
    file_mib: u64,
    /// Chunk size in KiB (a power of two, at least 1).
    #[arg(long, default_value_t = 256)]
    chunk_kib: u32,
    /// Probability a TCP segment is lost (it then arrives one RTO late).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way latency in milliseconds.
    #[arg(long, default_value_t = 10)]
    latency_ms: u64,
    /// Random extra one-way delay, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Upload bandwidth per peer, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    up_mbps: f64,
    /// Download bandwidth per peer, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    down_mbps: f64,
    /// Downloaders that crash at random times.
    #[arg(long, default_value_t = 0)]
    crash: usize,
    /// Crash the tracker mid-transfer and restart it 8 s later.
    #[arg(long)]
    crash_tracker: bool,
    /// Trackers; every peer registers with all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    trackers: u8,
    /// Seeders whose served blocks are corrupted.
    #[arg(long, default_value_t = 0)]
    corrupt: usize,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print every peer and tracker event with its time (to stderr).
    #[arg(long)]
    trace: bool,
    /// Give up after this many simulated seconds.
    #[arg(long, default_value_t = 3600)]
    time_limit_s: u64,
    /// Add a hostile node doing this to the swarm.
    #[arg(long, value_enum)]
    hostile: Option<HostileArg>,
    /// Give the tracker and every peer a swarm key (the hostile node never has it).
    #[arg(long)]
    swarm_key: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.seeders == 0 || a.seeders > a.peers {
        eprintln!("sim: --seeders must be between 1 and --peers");
        return ExitCode::from(2);
    }
    if !a.chunk_kib.is_power_of_two() {
        eprintln!("sim: --chunk-kib must be a power of two");
        return ExitCode::from(2);
    }
    let mbps = |m: f64| (m * 1e6 / 8.0) as u64;
    let cfg = SimConfig {
        peers: a.peers,
        seeders: a.seeders,
        file_bytes: a.file_mib << 20,
        chunk_bytes: a.chunk_kib * 1024,
        loss: a.loss,
        latency: Duration::from_millis(a.latency_ms),
        jitter: Duration::from_millis(a.jitter_ms),
        up: mbps(a.up_mbps),
        down: mbps(a.down_mbps),
        crashes: a.crash,
        crash_tracker: a.crash_tracker,
        corrupt_seeders: a.corrupt,
        seed: a.seed,
        time_limit: Duration::from_secs(a.time_limit_s),
        sniff: a.trace,
        swarm_key: a.swarm_key.then_some(SwarmKey([0x5a; 32])),
        request_bytes: a.request_kib.map(|k| k * 1024),
        max_conns: a.max_conns,
        serve_partial: !a.no_partial,
        slow_peers: a.slow,
        trackers: usize::from(a.trackers),
        hostile: a.hostile.map(|h| match h {
            HostileArg::Oversized => Attack::OversizedFrames,
            HostileArg::Flood => Attack::RequestFlood,
            HostileArg::FalseAvailability => Attack::FalseAvailability,
            HostileArg::Unsolicited => Attack::UnsolicitedBlocks,
            HostileArg::WrongManifest => Attack::WrongManifest,
            HostileArg::FakePeers => Attack::FakePeers(1000),
            HostileArg::NoKey => Attack::NoKey,
            HostileArg::LiesInExchange => Attack::LiesInExchange,
        }),
        tune: |_, c| {
            let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
            if let Some(v) = env("SIM_SLOTS") {
                c.upload_slots = v as usize;
            }
            if let Some(v) = env("SIM_CONNS") {
                c.max_conns_per_file = v as usize;
            }
        },
    };
    let mut sim = Sim::new(cfg);
    let report = sim.run();
    if a.trace {
        eprintln!(
            "uploaded MiB per node: {:?}",
            sim.uploaded().iter().map(|b| b >> 20).collect::<Vec<_>>()
        );
        // Bytes per 100 ms as a percentage of `links` links of `mbps` each.
        let percent = |timeline: &[u64], mbps: f64, links: usize| -> Vec<u64> {
            let cap = (mbps * 1e6 / 8.0) * links as f64 * 0.1;
            timeline
                .iter()
                .map(|b| (*b as f64 * 100.0 / cap) as u64)
                .collect()
        };
        let up = percent(&sim.upload_timeline, a.up_mbps, a.peers);
        eprintln!("uplink use % per 100 ms: {up:?}");
        eprintln!("rejects: {:?}", sim.rejects);
        let down = percent(&sim.download_timeline, a.down_mbps, a.peers - a.seeders);
        eprintln!("downloaders' downlink use % per 100 ms: {down:?}");
        let to_seed: Vec<_> = sim.requests.iter().filter(|r| r.to == 1).collect();
        let mut chunks: Vec<u32> = to_seed.iter().map(|r| r.block.chunk).collect();
        chunks.sort();
        chunks.dedup();
        let bytes: u64 = to_seed.iter().map(|r| u64::from(r.block.len)).sum();
        let mut per_chunk = std::collections::BTreeMap::<u32, Vec<(usize, u64)>>::new();
        for r in &to_seed {
            per_chunk
                .entry(r.block.chunk)
                .or_default()
                .push((r.from, r.at.total_millis()));
        }
        let mut hist = std::collections::BTreeMap::<usize, usize>::new();
        for v in per_chunk.values() {
            let mut who: Vec<usize> = v.iter().map(|x| x.0).collect();
            who.sort();
            who.dedup();
            *hist.entry(who.len()).or_default() += 1;
        }
        eprintln!("chunks by number of peers that asked the seeder for them: {hist:?}");
        // Each seed request for a block someone else already asked the seed for: how long
        // after the first such request, and where in the chunk.
        let mut first = std::collections::BTreeMap::<(u32, u32), (usize, u64)>::new();
        let mut dup_after = std::collections::BTreeMap::<u64, (usize, u64)>::new();
        for r in &to_seed {
            let key = (r.block.chunk, r.block.offset);
            let t = r.at.total_millis();
            match first.get(&key) {
                Some(&(who, t0)) if who != r.from => {
                    let bucket = match t - t0 {
                        d if d < 50 => 0,
                        d if d < 200 => 50,
                        d if d < 1000 => 200,
                        _ => 1000,
                    };
                    let e = dup_after.entry(bucket).or_default();
                    e.0 += 1;
                    e.1 += u64::from(r.block.len);
                }
                Some(_) => {}
                None => {
                    first.insert(key, (r.from, t));
                }
            }
        }
        eprintln!("duplicate seed requests by ms after the first (count, bytes): {dup_after:?}");
        // Bytes the seed sent of 16 KiB blocks it had sent before, by when (500 ms buckets),
        // and by how long after the first copy.
        let mut copies = std::collections::BTreeMap::<(u32, u32), u64>::new();
        let mut dup_when = std::collections::BTreeMap::<u64, u64>::new();
        let mut dup_gap = std::collections::BTreeMap::<u64, u64>::new();
        for s in sim.blocks_sent.iter().filter(|s| s.from == 1) {
            let t = s.at.total_millis();
            let mut o = s.block.offset;
            while o < s.block.offset + s.block.len {
                let key = (s.block.chunk, o / 16384);
                match copies.get(&key) {
                    Some(&t0) => {
                        *dup_when.entry(t / 500 * 500).or_default() += 16;
                        let g = match t - t0 {
                            d if d < 100 => 0,
                            d if d < 500 => 100,
                            d if d < 2000 => 500,
                            _ => 2000,
                        };
                        *dup_gap.entry(g).or_default() += 16;
                    }
                    None => {
                        copies.insert(key, t);
                    }
                }
                o += 16384;
            }
        }
        eprintln!("seed re-sent KiB by time: {dup_when:?}");
        let mut seed_tl = std::collections::BTreeMap::<u64, (u64, u64)>::new();
        let mut seen_blk = std::collections::BTreeSet::<(u32, u32)>::new();
        for s in sim.blocks_sent.iter().filter(|s| s.from == 1) {
            let e = seed_tl.entry(s.at.total_millis() / 250).or_default();
            let mut o = s.block.offset;
            while o < s.block.offset + s.block.len {
                if seen_blk.insert((s.block.chunk, o / 16384)) {
                    e.0 += 16
                } else {
                    e.1 += 16
                }
                o += 16384;
            }
        }
        // Capacity per 250 ms: up Mbit/s * 1e6 / 8 * 0.25 bytes.
        let cap = a.up_mbps * 1e6 / 8.0 * 0.25 / 1024.0;
        let line: Vec<String> = seed_tl
            .values()
            .map(|(n, d)| {
                format!(
                    "{}/{}",
                    (*n as f64 * 100.0 / cap) as u64,
                    (*d as f64 * 100.0 / cap) as u64
                )
            })
            .collect();
        eprintln!(
            "seed uplink % new/re-sent per 250 ms (queued): {}",
            line.join(" ")
        );
        let mut firsts: Vec<u64> = copies.values().copied().collect();
        firsts.sort();
        let pick = |q: usize| firsts.get(firsts.len() * q / 100).copied().unwrap_or(0);
        eprintln!(
            "first copies: {} blocks; 50% by {} ms, 90% by {} ms, 99% by {} ms, all by {} ms",
            firsts.len(),
            pick(50),
            pick(90),
            pick(99),
            firsts.last().copied().unwrap_or(0)
        );
        eprintln!("seed re-sent KiB by ms after the first copy: {dup_gap:?}");
        // How the last first copies spread: for each 16 KiB block the seeder first sent in
        // the last 500 ms of its first copies, when the last peer was sent it, and along how
        // many hops (the depth of its tree of senders).
        let last_first = firsts.last().copied().unwrap_or(0);
        let mut depth = std::collections::HashMap::<(u32, u32, usize), (u64, u32)>::new();
        let mut spread = std::collections::BTreeMap::<(u32, u32), (u64, u64, u32)>::new();
        for s in &sim.blocks_sent {
            let t = s.at.total_millis();
            let mut o = s.block.offset;
            while o < s.block.offset + s.block.len {
                let key = (s.block.chunk, o / 16384);
                let d = if s.from == 1 {
                    1
                } else {
                    depth
                        .get(&(key.0, key.1, s.from))
                        .map_or(99, |&(_, d)| d + 1)
                };
                depth.entry((key.0, key.1, s.to)).or_insert((t, d));
                if let Some(&t0) = copies.get(&key) {
                    if t0 + 500 >= last_first {
                        let e = spread.entry(key).or_insert((t0, t0, 0));
                        e.1 = e.1.max(t);
                        e.2 = e.2.max(d);
                    }
                }
                o += 16384;
            }
        }
        // How far the downloaders are behind the seeder, every 500 ms: KiB it has sent a
        // first copy of, less the KiB each has been sent (distinct), on average and at most.
        let mut behind = Vec::new();
        let mut got_at = vec![Vec::new(); a.peers + 1];
        for (k, v) in &depth {
            got_at[k.2].push(v.0);
        }
        for v in &mut got_at {
            v.sort_unstable();
        }
        for t in (500..=last_first + 500).step_by(500) {
            let injected = firsts.partition_point(|&f| f < t) as i64 * 16;
            let lags: Vec<i64> = (2..=a.peers)
                .map(|to| injected - got_at[to].partition_point(|&g| g < t) as i64 * 16)
                .collect();
            let mean = lags.iter().sum::<i64>() / lags.len().max(1) as i64;
            behind.push(format!("{t}:{mean}/{}", lags.iter().max().unwrap_or(&0)));
        }
        eprintln!(
            "KiB behind the seeder's first copies (mean/max): {}",
            behind.join(" ")
        );
        // At 3 s: how long ago the blocks each downloader lacks left the seeder (KiB per peer,
        // by 50 ms of age).
        let at = 3000u64;
        let mut ages = std::collections::BTreeMap::<u64, i64>::new();
        for to in 2..=a.peers {
            for (key, &t0) in &copies {
                if t0 < at && depth.get(&(key.0, key.1, to)).is_none_or(|v| v.0 >= at) {
                    *ages.entry((at - t0) / 50 * 50).or_default() += 16;
                }
            }
        }
        let n = (a.peers - 1).max(1) as i64;
        let ages: Vec<String> = ages.iter().map(|(k, v)| format!("{k}:{}", v / n)).collect();
        eprintln!(
            "at 3 s, KiB lacked per peer by ms since it left the seeder: {}",
            ages.join(" ")
        );
        let mut took: Vec<u64> = spread.values().map(|(a, b, _)| b - a).collect();
        let mut hops: Vec<u32> = spread.values().map(|v| v.2).collect();
        took.sort();
        hops.sort();
        let q = |v: &[u64], k: usize| v.get(v.len() * k / 100).copied().unwrap_or(0);
        eprintln!(
            "last 500 ms of first copies: {} blocks, to the last peer p50 {} ms, p90 {} ms, max {} ms; hops p50 {}, max {}",
            took.len(),
            q(&took, 50),
            q(&took, 90),
            took.last().copied().unwrap_or(0),
            hops.get(hops.len() / 2).copied().unwrap_or(0),
            hops.last().copied().unwrap_or(0)
        );
        let late: Vec<u64> = to_seed.iter().map(|r| r.at.total_millis() / 500).collect();
        let mut by_time = std::collections::BTreeMap::<u64, u64>::new();
        for b in late {
            *by_time.entry(b * 500).or_default() += 1;
        }
        eprintln!("seed requests per 500 ms: {by_time:?}");
        let mut again_by = std::collections::BTreeMap::<usize, (usize, u64)>::new();
        for v in per_chunk.values() {
            let firstwho = v[0].0;
            for (who, t) in v {
                if *who != firstwho {
                    let e = again_by.entry(*who).or_insert((0, u64::MAX));
                    e.0 += 1;
                    e.1 = e.1.min(*t);
                }
            }
        }
        eprintln!("requests to the seeder for chunks someone else asked it first, by peer (count, first ms): {again_by:?}");
        for (c, v) in per_chunk
            .iter()
            .filter(|(_, v)| v.iter().any(|x| x.0 != v[0].0))
            .take(4)
        {
            let mut who: Vec<(usize, u64)> = Vec::new();
            for x in v {
                if !who.iter().any(|w| w.0 == x.0) {
                    who.push(*x);
                }
            }
            eprintln!("  chunk {c} asked of the seeder by (peer, first ms): {who:?}");
        }
        for (c, v) in per_chunk.iter().filter(|(_, v)| v.len() > 30).take(2) {
            eprintln!("  chunk {c}: {v:?}");
        }
        eprintln!(
            "requests to the first seeder: {} ({} MiB), distinct chunks {}",
            to_seed.len(),
            bytes >> 20,
            chunks.len()
        );
        eprintln!(
            "completed at: {:?}",
            (1..=a.peers)
                .map(|i| sim.completed_at(i).map(|t| t.total_millis()))
                .collect::<Vec<_>>()
        );
        // Where each downloader's downlink went: when its first block was sent to it, the
        // block bytes sent to it, those it had been sent before (16 KiB units), and its end.
        let mut got = std::collections::BTreeMap::<usize, (u64, u64, u64)>::new();
        let mut seen = std::collections::BTreeSet::<(usize, u32, u32)>::new();
        for s in &sim.blocks_sent {
            let e = got.entry(s.to).or_insert((u64::MAX, 0, 0));
            e.0 = e.0.min(s.at.total_millis());
            let mut o = s.block.offset;
            while o < s.block.offset + s.block.len {
                let n = u64::from(16384.min(s.block.offset + s.block.len - o));
                e.1 += n;
                if !seen.insert((s.to, s.block.chunk, o / 16384)) {
                    e.2 += n;
                }
                o += 16384;
            }
        }
        // The start, 20 ms at a time: block KiB sent by the seeder and by downloaders.
        let mut start = std::collections::BTreeMap::<u64, (u64, u64)>::new();
        for s in sim.blocks_sent.iter().filter(|s| s.at.total_millis() < 600) {
            let e = start.entry(s.at.total_millis() / 20 * 20).or_default();
            if s.from == 1 {
                e.0 += u64::from(s.block.len) >> 10;
            } else {
                e.1 += u64::from(s.block.len) >> 10;
            }
        }
        eprintln!("block KiB sent per 20 ms at the start (seeder, downloaders): {start:?}");
        let mut again_when = std::collections::BTreeMap::<(u64, bool), u64>::new();
        let mut seen2 = std::collections::BTreeSet::<(usize, u32, u32)>::new();
        for s in &sim.blocks_sent {
            let mut o = s.block.offset;
            while o < s.block.offset + s.block.len {
                if !seen2.insert((s.to, s.block.chunk, o / 16384)) {
                    *again_when
                        .entry((s.at.total_millis() / 500 * 500, s.from == 1))
                        .or_default() += 16;
                }
                o += 16384;
            }
        }
        eprintln!("blocks sent again, KiB by (500 ms, from the seeder): {again_when:?}");
        let line: Vec<String> = got
            .iter()
            .map(|(to, (first, all, dup))| {
                let end = sim.completed_at(*to).map_or(0, |t| t.total_millis());
                format!("{to}:{first}ms/{}KiB/{}KiB/{end}ms", all >> 10, dup >> 10)
            })
            .collect();
        eprintln!(
            "downloaders (first block, received, of which again, done): {}",
            line.join(" ")
        );
        for (t, node, e) in &sim.events {
            eprintln!("{t} peer{node} {e:?}");
        }
        for (t, e) in &sim.tracker_events {
            eprintln!("{t} tracker {e:?}");
        }
    }
    println!("{}", report.line());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
