//! shoal on a Cortex-M4F board: an STM32F429 (a NUCLEO-F429ZI: RMII Ethernet PHY on board) that
//! keeps one file, a firmware image say, in flash bank 2 and takes part in a swarm for it.
//!
//! At boot the store's journal says what the flash holds: a complete image is shared, a partial
//! one is fetched on from where it stopped, and an empty flash fetches the file named by the
//! link the firmware was built with (`SHOAL_LINK=shoal:<id>?tr=<tracker> cargo build`). The main
//! loop polls the driver and sleeps until the time it returns or the next interrupt.
//!
//! Budget (see BENCHMARKS.md for what the build measures): 4 TCP connections with 2 KiB
//! buffers each way, 2 + 2 Ethernet DMA descriptors, a peer for one file of up to 1024 chunks.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, Ordering};

use adapter_smoltcp::flash::{Flash, FlashError, FlashStore};
use adapter_smoltcp::Driver;
use cortex_m_rt::{entry, exception};
use panic_halt as _;
use proto_core::peer::{Peer, PeerConfig, SmallPeerMemory};
use proto_core::time::Instant;
use proto_core::wire::NodeId;
use rand_core::RngCore;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use stm32_eth::dma::{RxRingEntry, TxRingEntry};
use stm32_eth::hal::flash::{FlashExt, LockedFlash};
use stm32_eth::hal::gpio::GpioExt;
use stm32_eth::hal::prelude::_fugit_RateExtU32 as _;
use stm32_eth::hal::rcc::RccExt;
use stm32_eth::hal::rng::RngExt;
use stm32_eth::stm32::{CorePeripherals, Peripherals, SYST};
use stm32_eth::{EthPins, Parts, PartsIn};

/// The device's peer: 4 connections (the tracker's among them), 1 file of up to 1024 chunks,
/// 4 chunks in flight.
type DevicePeer = Peer<'static, 32>;
const SOCKETS: usize = 4;
const SOCKET_BUF: usize = 2048;
const MAX_CHUNKS: u32 = 1024;

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
const IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PEER_PORT: u16 = 7000;
// `FILE` and `TRACKERS`, from the link the firmware was built with (parsed by build.rs).
include!(concat!(env!("OUT_DIR"), "/link.rs"));

/// Milliseconds since boot, counted by SysTick.
static MILLIS: AtomicU32 = AtomicU32::new(0);

fn now() -> Instant {
    Instant::from_micros(u64::from(MILLIS.load(Ordering::Relaxed)) * 1000)
}

/// Flash bank 2's seven 128 KiB sectors (17-23, from 0x0812_0000): the shared file lives there,
/// away from the firmware in bank 1.
struct Bank2(LockedFlash);

const FIRST_SECTOR: u8 = 17;
const SECTOR: u32 = 128 * 1024;
const SECTORS: u32 = 7;
const OFFSET: usize = 0x12_0000;

impl Flash for Bank2 {
    fn sector_size(&self) -> u32 {
        SECTOR
    }

    fn capacity(&self) -> u32 {
        SECTOR * SECTORS
    }

    fn erase(&mut self, sector: u32) -> Result<(), FlashError> {
        if sector >= SECTORS {
            return Err(FlashError::OutOfBounds);
        }
        self.0
            .unlocked()
            .erase(FIRST_SECTOR + sector as u8)
            .map_err(|_| FlashError::Device)
    }

    fn program(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError> {
        if addr as usize + data.len() > (SECTOR * SECTORS) as usize {
            return Err(FlashError::OutOfBounds);
        }
        self.0
            .unlocked()
            .program(OFFSET + addr as usize, data.iter())
            .map_err(|_| FlashError::Device)
    }

    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let start = OFFSET + addr as usize;
        let src = self
            .0
            .read()
            .get(start..start + buf.len())
            .ok_or(FlashError::OutOfBounds)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

type Store = FlashStore<Bank2>;
type Node = Driver<'static, DevicePeer, Store, SOCKETS>;

#[entry]
fn main() -> ! {
    // Static, not on the stack: this is the RAM the build measures.
    static mut RX_RING: [RxRingEntry; 2] = [RxRingEntry::RX_INIT, RxRingEntry::RX_INIT];
    static mut TX_RING: [TxRingEntry; 2] = [TxRingEntry::new(), TxRingEntry::new()];
    static mut SOCKET_STORAGE: [SocketStorage<'static>; SOCKETS] = [SocketStorage::EMPTY; SOCKETS];
    static mut BUFFERS: [[u8; SOCKET_BUF]; 2 * SOCKETS] = [[0; SOCKET_BUF]; 2 * SOCKETS];
    static mut NODE: MaybeUninit<Node> = MaybeUninit::uninit();
    // The peer's tables: 4 connections, 1 file, 4 chunks in flight (uninitialised until the
    // peer is made over them, so no image of them is kept in flash).
    static mut PEER_MEMORY: SmallPeerMemory = SmallPeerMemory::new();

    let (Some(p), Some(mut cp)) = (Peripherals::take(), CorePeripherals::take()) else {
        halt()
    };
    let clocks = p
        .RCC
        .constrain()
        .cfgr
        .sysclk(96_u32.MHz())
        .hclk(96_u32.MHz())
        // The hardware RNG runs from the 48 MHz PLL output.
        .require_pll48clk()
        .freeze();
    let gpioa = p.GPIOA.split();
    let gpiob = p.GPIOB.split();
    let gpioc = p.GPIOC.split();
    let gpiog = p.GPIOG.split();
    // The NUCLEO-F429ZI's RMII pins.
    let pins = EthPins {
        ref_clk: gpioa.pa1,
        crs: gpioa.pa7,
        tx_en: gpiog.pg11,
        tx_d0: gpiog.pg13,
        tx_d1: gpiob.pb13,
        rx_d0: gpioc.pc4,
        rx_d1: gpioc.pc5,
    };
    let parts = PartsIn {
        mac: p.ETHERNET_MAC,
        mmc: p.ETHERNET_MMC,
        dma: p.ETHERNET_DMA,
    };
    let Ok(Parts { mut dma, .. }) = stm32_eth::new(parts, RX_RING, TX_RING, clocks, pins) else {
        halt()
    };

    cp.SYST.set_reload(SYST::get_ticks_per_10ms() / 10);
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    // The hardware RNG seeds everything random: TCP sequence numbers and ports, the peer's
    // choices and its handshake nonces (which a swarm key needs unpredictable on every boot).
    let mut rng = p.RNG.constrain(&clocks);
    let seed = rng.next_u64();
    let mut config = Config::new(EthernetAddress(MAC).into());
    config.random_seed = seed;
    let mut iface = Interface::new(config, &mut dma, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IP.into(), 24));
    });
    let mut sockets = SocketSet::new(&mut SOCKET_STORAGE[..]);
    let mut bufs = BUFFERS.iter_mut();
    let handles = [(); SOCKETS].map(|()| {
        let (Some(rx), Some(tx)) = (bufs.next(), bufs.next()) else {
            halt()
        };
        sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        ))
    });

    let mut node = [0u8; 16];
    node[..6].copy_from_slice(&MAC);
    let mut peer_config = PeerConfig::new(NodeId(node), PEER_PORT, None);
    for &t in TRACKERS {
        peer_config.trackers.push(t);
    }
    peer_config.rng_seed = rng.next_u64();
    // Flash is programmed only where erased: a bad block restarts its chunk (and sector); and
    // the store computes leaves from whole chunks, so only whole chunks are served.
    peer_config.rewrite_blocks = false;
    peer_config.serve_partial = false;
    let mut peer: DevicePeer = Peer::with_memory(peer_config, now(), PEER_MEMORY);
    let Ok(mut store) = FlashStore::open(Bank2(LockedFlash::new(p.FLASH)), MAX_CHUNKS) else {
        halt()
    };
    // Whatever the flash holds goes on from where it was; an empty flash fetches the link.
    match store.resume(now(), &mut peer) {
        Ok(Some(_)) => {}
        _ => {
            let _ = peer.fetch(now(), FILE);
        }
    }
    let node = NODE.write(Driver::new(
        peer,
        store,
        iface,
        sockets,
        handles,
        PEER_PORT,
        rng.next_u64(),
    ));

    loop {
        let wake = node.poll(now(), &mut dma, |_, _| {});
        if now() < wake {
            // SysTick (every millisecond) or the Ethernet interrupt wakes us.
            cortex_m::asm::wfi();
        }
    }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}
