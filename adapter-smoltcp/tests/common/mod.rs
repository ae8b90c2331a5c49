//! Shared pieces of the host tests: an in-memory IP link joining several smoltcp interfaces,
//! node set-up, a RAM store for the tracker, and a test file.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use adapter_smoltcp::flash::{FlashStore, RamFlash};
use adapter_smoltcp::smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use adapter_smoltcp::smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use adapter_smoltcp::smoltcp::socket::tcp;
use adapter_smoltcp::smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use adapter_smoltcp::{Driver, Storage};
use proto_core::manifest::ManifestHeader;
use proto_core::peer::{Peer, PeerConfig, SmallPeerMemory};
use proto_core::storage::StorageKey;
use proto_core::time::{Duration, Instant};
use proto_core::tracker::{Tracker, TrackerConfig, TrackerMemory};
use proto_core::wire::{FileId, NodeId};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The device's peer: 4 connections (the tracker's included), 1 file, 4 chunks in flight.
pub type DevicePeer = Peer<'static, 32>;

/// A device peer in fixed memory (4 connections, 1 file, 4 chunks in flight), as firmware
/// passes its static memory: nothing is allocated.
pub fn device_peer(config: PeerConfig, now: Instant) -> DevicePeer {
    let memory: &'static mut SmallPeerMemory = Box::leak(Box::default());
    Peer::with_memory(config, now, memory)
}
/// The tracker on the other end, in fixed memory as a device would give it.
pub type TestTracker = Tracker<'static>;
/// Sockets per node and their buffers: the budget the firmware example is sized for.
pub const SOCKETS: usize = 4;
pub const SOCKET_BUF: usize = 2048;
pub const SECTOR: u32 = 4096;
pub const FLASH: usize = 512 * 1024;
pub const MAX_CHUNKS: u32 = 64;

/// Packets in flight on the link, by destination.
pub struct Hub {
    pub now: Instant,
    pub latency: Duration,
    /// Probability a packet is dropped.
    pub loss: f64,
    rng: Xoshiro256PlusPlus,
    queues: HashMap<Ipv4Addr, VecDeque<(Instant, Vec<u8>)>>,
    /// Packets dropped so far.
    pub dropped: u64,
    /// Hosts that are down: packets to them vanish.
    pub down: Vec<Ipv4Addr>,
}

impl Hub {
    pub fn new(latency: Duration, loss: f64, seed: u64) -> Rc<RefCell<Hub>> {
        Rc::new(RefCell::new(Hub {
            now: Instant::ZERO,
            latency,
            loss,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            queues: HashMap::new(),
            dropped: 0,
            down: Vec::new(),
        }))
    }

    fn send(&mut self, packet: Vec<u8>) {
        if packet.len() < 20 {
            return;
        }
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let lost = self.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.loss;
        if lost || self.down.contains(&dst) {
            self.dropped += 1;
            return;
        }
        let at = self.now + self.latency;
        self.queues.entry(dst).or_default().push_back((at, packet));
    }

    fn take(&mut self, ip: Ipv4Addr) -> Option<Vec<u8>> {
        let q = self.queues.get_mut(&ip)?;
        if q.front().is_some_and(|(at, _)| *at <= self.now) {
            return q.pop_front().map(|(_, p)| p);
        }
        None
    }

    /// When the next packet arrives anywhere.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|(at, _)| *at))
            .min()
    }
}

/// One host's network device on the hub (IP medium: no ARP to simulate).
pub struct Port {
    pub ip: Ipv4Addr,
    pub hub: Rc<RefCell<Hub>>,
}

pub struct Rx(Vec<u8>);
pub struct Tx(Rc<RefCell<Hub>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.borrow_mut().send(buf);
        r
    }
}

impl Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: adapter_smoltcp::smoltcp::time::Instant) -> Option<(Rx, Tx)> {
        let p = self.hub.borrow_mut().take(self.ip)?;
        Some((Rx(p), Tx(self.hub.clone())))
    }

    fn transmit(&mut self, _: adapter_smoltcp::smoltcp::time::Instant) -> Option<Tx> {
        Some(Tx(self.hub.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

pub fn smol(now: Instant) -> adapter_smoltcp::smoltcp::time::Instant {
    adapter_smoltcp::smoltcp::time::Instant::from_micros(now.total_micros() as i64)
}

/// An interface with `ip` and `SOCKETS` TCP sockets of `SOCKET_BUF` bytes each way.
pub fn stack<D: Device>(
    dev: &mut D,
    hw: HardwareAddress,
    ip: Ipv4Addr,
    now: Instant,
) -> (
    Interface,
    SocketSet<'static>,
    [adapter_smoltcp::smoltcp::iface::SocketHandle; SOCKETS],
) {
    let mut config = Config::new(hw);
    config.random_seed = u64::from(u32::from(ip));
    let mut iface = Interface::new(config, dev, smol(now));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
    });
    let storage: &'static mut [SocketStorage<'static>] =
        Vec::leak((0..SOCKETS).map(|_| SocketStorage::EMPTY).collect());
    let mut sockets = SocketSet::new(storage);
    let handles = std::array::from_fn(|_| {
        let rx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]);
        let tx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]);
        sockets.add(tcp::Socket::new(rx, tx))
    });
    (iface, sockets, handles)
}

/// The tracker's hash store: proto-core's shared memory store.
pub type RamHashes = proto_core::testing::MemStore;

pub type PeerStore = FlashStore<RamFlash<Vec<u8>>>;
pub type PeerDriver = Driver<'static, DevicePeer, PeerStore, SOCKETS>;
pub type TrackerDriver = Driver<'static, TestTracker, RamHashes, SOCKETS>;

/// A file of `len` pseudo-random bytes in `chunk`-byte chunks: bytes, hashes, header, id.
pub struct TestFile {
    pub data: Vec<u8>,
    pub hashes: Vec<u8>,
    pub header: ManifestHeader,
    pub id: FileId,
}

pub fn test_file(len: usize, chunk: u32, seed: u64) -> TestFile {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    let m = proto_core::testing::manifest_of("image.bin", &data, chunk);
    TestFile {
        data,
        hashes: m.hashes,
        header: m.header,
        id: m.id,
    }
}

pub const TRACKER_PORT: u16 = 7070;
pub const PEER_PORT: u16 = 7000;

pub fn peer_config(n: u8, tracker: SocketAddr) -> PeerConfig {
    let mut c = PeerConfig::new(NodeId([n; 16]), PEER_PORT, Some(tracker));
    c.rng_seed = u64::from(n) * 7919;
    // Flash (RamFlash keeps its rules) cannot take a block written again in place, and the
    // store computes leaves from whole chunks.
    c.rewrite_blocks = false;
    c.serve_partial = false;
    c
}

pub fn tracker_driver(dev: &mut Port, now: Instant) -> TrackerDriver {
    let (iface, sockets, handles) = stack(dev, HardwareAddress::Ip, dev.ip, now);
    // Fixed memory, as a device would pass its static tables: nothing is allocated.
    let memory: &'static mut TrackerMemory<8, 2, 8, 32> = Box::leak(Box::default());
    let t = Tracker::with_memory(TrackerConfig::new(NodeId([0xee; 16])), now, memory);
    Driver::new(
        t,
        RamHashes::default(),
        iface,
        sockets,
        handles,
        TRACKER_PORT,
        now.total_micros() ^ 0x7070,
    )
}

/// A peer on the device's flash: opens (and resumes from) whatever the flash holds.
pub fn peer_driver(
    dev: &mut Port,
    now: Instant,
    config: PeerConfig,
    flash: RamFlash<Vec<u8>>,
) -> PeerDriver {
    let (iface, sockets, handles) = stack(dev, HardwareAddress::Ip, dev.ip, now);
    let mut peer = device_peer(config, now);
    let mut store = FlashStore::open(flash, MAX_CHUNKS).unwrap();
    store.resume(now, &mut peer).unwrap();
    let seed = config.rng_seed ^ now.total_micros();
    Driver::new(peer, store, iface, sockets, handles, PEER_PORT, seed)
}

pub fn fresh_flash() -> RamFlash<Vec<u8>> {
    RamFlash::new(vec![0u8; FLASH], SECTOR)
}

/// Flash that holds `f` whole, as a seeder's would.
pub fn seeded_flash(f: &TestFile) -> RamFlash<Vec<u8>> {
    let mut store = FlashStore::open(fresh_flash(), MAX_CHUNKS).unwrap();
    store
        .install(f.id, &f.header, &f.hashes, |off, buf| {
            buf.copy_from_slice(&f.data[off as usize..off as usize + buf.len()])
        })
        .unwrap();
    store.into_flash()
}

/// The bytes of the file as stored in a peer's flash (data region), for comparison.
pub fn stored_file(flash: RamFlash<Vec<u8>>, f: &TestFile) -> (RamFlash<Vec<u8>>, Vec<u8>) {
    let mut store = FlashStore::open(flash, MAX_CHUNKS).unwrap();
    let mut out = vec![0u8; f.data.len()];
    let key = StorageKey {
        slot: 0,
        region: proto_core::storage::Region::Data,
    };
    let n = Storage::read(&mut store, key, 0, &mut out).unwrap();
    assert_eq!(n, out.len());
    (store.into_flash(), out)
}
