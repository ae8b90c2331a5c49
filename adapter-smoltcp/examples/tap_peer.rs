//! The device peer (smoltcp, flash store, 4 sockets of 2 KiB) on a Linux TAP device: the
//! smoltcp end of the cross-stack test in `tests/tests/cross_stack.rs`, which runs it inside a
//! network namespace of its own against `shoal` on the Linux TCP stack.
//!
//! ```text
//! tap_peer --tap TAP --ip 10.77.0.2 --tracker 10.77.0.1:7070 --get LINK --out PATH
//! tap_peer --tap TAP --ip 10.77.0.2 --tracker 10.77.0.1:7070 --seed PATH   # prints the link
//! ```
//!
//! Exits 0 once a fetched file is written whole to `--out`; a seeder serves until killed. Gives
//! up with exit 1 after 120 seconds either way.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Instant as StdInstant;

use adapter_smoltcp::flash::{FlashStore, RamFlash};
use adapter_smoltcp::smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use adapter_smoltcp::smoltcp::phy::{wait, Medium, TunTapInterface};
use adapter_smoltcp::smoltcp::socket::tcp;
use adapter_smoltcp::smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use adapter_smoltcp::{Driver, Storage};
use proto_core::link::Link;
use proto_core::manifest::{Built, ManifestBuilder, ManifestHeader};
use proto_core::peer::{Peer, PeerConfig, PeerEvent, SmallPeerMemory};
use proto_core::storage::{Region, StorageKey};
use proto_core::time::{Duration, Instant};
use proto_core::wire::NodeId;

type DevicePeer = Peer<'static, 32>;
const SOCKETS: usize = 4;
const SOCKET_BUF: usize = 2048;
const SECTOR: u32 = 4096;
const MAX_CHUNKS: u32 = 64;
const PEER_PORT: u16 = 7000;
const GIVE_UP: Duration = Duration::from_secs(120);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tap_peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let tap = arg("--tap").ok_or("--tap is required")?;
    let ip: Ipv4Addr = arg("--ip")
        .ok_or("--ip is required")?
        .parse()
        .map_err(|e| format!("--ip: {e}"))?;
    let tracker_text = arg("--tracker").ok_or("--tracker is required")?;
    let tracker: SocketAddr = tracker_text
        .parse()
        .map_err(|e| format!("--tracker: {e}"))?;
    let started = StdInstant::now();
    let now = || Instant::from_micros(started.elapsed().as_micros() as u64);

    let mut dev = TunTapInterface::new(&tap, Medium::Ethernet)
        .map_err(|e| format!("cannot open TAP device {tap}: {e}"))?;
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    mac[2..].copy_from_slice(&ip.octets());
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = u64::from(std::process::id());
    let smol_now =
        |t: Instant| adapter_smoltcp::smoltcp::time::Instant::from_micros(t.total_micros() as i64);
    let mut iface = Interface::new(config, &mut dev, smol_now(now()));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
    });
    let storage: &'static mut [SocketStorage<'static>] =
        Vec::leak((0..SOCKETS).map(|_| SocketStorage::EMPTY).collect());
    let mut sockets = SocketSet::new(storage);
    let handles = [(); SOCKETS].map(|()| {
        sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]),
        ))
    });

    let mut node = [0u8; 16];
    node[..4].copy_from_slice(&ip.octets());
    node[4..8].copy_from_slice(&std::process::id().to_le_bytes());
    let mut peer_config = PeerConfig::new(NodeId(node), PEER_PORT, Some(tracker));
    peer_config.rng_seed = u64::from(std::process::id()) << 16 | u64::from(ip.octets()[3]);
    peer_config.rewrite_blocks = false;
    peer_config.serve_partial = false;
    // Fixed memory, as the firmware gives it: 4 connections, 1 file, 4 chunks in flight.
    let memory: &'static mut SmallPeerMemory = Box::leak(Box::default());
    let mut peer = Peer::with_memory(peer_config, now(), memory);
    let flash = RamFlash::new(vec![0u8; 4 << 20], SECTOR);
    let mut store = FlashStore::open(flash, MAX_CHUNKS).map_err(|e| e.to_string())?;

    let out = arg("--out");
    if let Some(path) = arg("--seed") {
        let data = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let name = std::path::Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let header =
            ManifestHeader::new(name, data.len() as u64, 128 * 1024).map_err(|e| e.to_string())?;
        let mut b = ManifestBuilder::new(header);
        let mut hashes = Vec::new();
        b.update(&data, |built| {
            if let Built::Chunk { hash, .. } = built {
                hashes.extend_from_slice(&hash.0)
            }
        })
        .map_err(|e| e.to_string())?;
        let (header, id) = b.finish().map_err(|e| e.to_string())?;
        store
            .install(id, &header, &hashes, |off, buf| {
                buf.copy_from_slice(&data[off as usize..off as usize + buf.len()])
            })
            .map_err(|e| e.to_string())?;
        store.resume(now(), &mut peer).map_err(|e| e.to_string())?;
    } else {
        let link = arg("--get").ok_or("one of --get and --seed is required")?;
        let link = Link::parse(&link).map_err(|e| format!("--get: {e}"))?;
        peer.fetch(now(), link.file).map_err(|e| e.to_string())?;
    }

    let seed = u64::from(std::process::id());
    let mut driver: Driver<'static, DevicePeer, _, SOCKETS> =
        Driver::new(peer, store, iface, sockets, handles, PEER_PORT, seed);
    let mut done = false;
    let mut failed = None;
    loop {
        let t = now();
        if t - Instant::ZERO > GIVE_UP {
            return Err("gave up after 120 s".into());
        }
        let name = driver.store.manifest().map(|(_, h)| h.name.clone());
        let wake = driver.poll(t, &mut dev, |_, e| match e {
            PeerEvent::Published { file } => {
                let link = Link {
                    file,
                    trackers: heapless::String::try_from(tracker_text.as_str())
                        .into_iter()
                        .collect(),
                    name: name.clone(),
                };
                println!("{link}");
            }
            PeerEvent::FileComplete { .. } => done = true,
            PeerEvent::FetchFailed { reason, .. } => failed = Some(format!("{reason:?}")),
            _ => {}
        });
        if let Some(f) = failed {
            return Err(format!("the download failed: {f}"));
        }
        if done {
            if let Some(out) = &out {
                let size = driver.store.manifest().map_or(0, |(_, h)| h.size) as usize;
                let mut bytes = vec![0u8; size];
                let key = StorageKey {
                    slot: 0,
                    region: Region::Data,
                };
                Storage::read(&mut driver.store, key, 0, &mut bytes).map_err(|e| e.to_string())?;
                std::fs::write(out, &bytes).map_err(|e| format!("cannot write {out}: {e}"))?;
                return Ok(());
            }
        }
        let t = now();
        let delay = if wake > t { wake - t } else { Duration::ZERO };
        let delay = adapter_smoltcp::smoltcp::time::Duration::from_micros(
            delay.total_micros().min(100_000),
        );
        wait(dev.as_raw_fd(), Some(delay)).map_err(|e| format!("wait: {e}"))?;
    }
}
