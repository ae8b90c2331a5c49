//! The device peer on smoltcp, on the host: a tracker, a seeder and a downloader, each with its
//! own smoltcp interface, joined by an in-memory IP link with latency and loss. Time is virtual
//! and jumps to the next thing due, so the runs are deterministic and take no wall-clock waits.

mod common;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use common::*;
use proto_core::peer::PeerEvent;
use proto_core::time::{Duration, Instant};

const TRACKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SEEDER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GETTER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const LIMIT: Duration = Duration::from_secs(600);

/// A node that can be switched off (its RAM lost, its flash kept) and on again.
struct Device {
    port: Port,
    driver: Option<PeerDriver>,
    flash: Option<adapter_smoltcp::flash::RamFlash<Vec<u8>>>,
    config: proto_core::peer::PeerConfig,
    /// Chunks verified, over all runs of this device.
    verified: Vec<u32>,
    complete: bool,
}

impl Device {
    fn new(
        ip: Ipv4Addr,
        hub: &Rc<RefCell<Hub>>,
        n: u8,
        flash: adapter_smoltcp::flash::RamFlash<Vec<u8>>,
    ) -> Self {
        Device {
            port: Port {
                ip,
                hub: hub.clone(),
            },
            driver: None,
            flash: Some(flash),
            config: peer_config(n, SocketAddr::from((TRACKER_IP, TRACKER_PORT))),
            verified: Vec::new(),
            complete: false,
        }
    }

    fn power_on(&mut self, now: Instant) {
        let flash = self.flash.take().expect("flash is kept while off");
        self.port
            .hub
            .borrow_mut()
            .down
            .retain(|ip| *ip != self.port.ip);
        self.driver = Some(peer_driver(&mut self.port, now, self.config, flash));
    }

    /// A reset: RAM (the peer, the sockets) is gone; the flash stays.
    fn power_off(&mut self) {
        let d = self.driver.take().expect("on");
        self.flash = Some(d.store.into_flash());
        self.port.hub.borrow_mut().down.push(self.port.ip);
    }

    fn poll(&mut self, now: Instant) -> Option<Instant> {
        let d = self.driver.as_mut()?;
        let (verified, complete) = (&mut self.verified, &mut self.complete);
        Some(d.poll(now, &mut self.port, |_, e| match e {
            PeerEvent::ChunkVerified { chunk, .. } => verified.push(chunk),
            PeerEvent::FileComplete { .. } => *complete = true,
            _ => {}
        }))
    }
}

struct Swarm {
    hub: Rc<RefCell<Hub>>,
    tracker_port: Port,
    tracker: TrackerDriver,
    seeder: Device,
    getter: Device,
    now: Instant,
    file: TestFile,
}

impl Swarm {
    fn new(latency: Duration, loss: f64, seed: u64) -> Self {
        let hub = Hub::new(latency, loss, seed);
        let file = test_file(200 * 1024 + 123, 16 * 1024, seed);
        let mut tracker_port = Port {
            ip: TRACKER_IP,
            hub: hub.clone(),
        };
        let now = Instant::ZERO;
        let tracker = tracker_driver(&mut tracker_port, now);
        let mut seeder = Device::new(SEEDER_IP, &hub, 2, seeded_flash(&file));
        let mut getter = Device::new(GETTER_IP, &hub, 3, fresh_flash());
        seeder.power_on(now);
        getter.power_on(now);
        getter
            .driver
            .as_mut()
            .unwrap()
            .node
            .fetch(now, file.id)
            .unwrap();
        Swarm {
            hub,
            tracker_port,
            tracker,
            seeder,
            getter,
            now,
            file,
        }
    }

    /// Polls every node, then moves time to the next thing due (at least 100 us on).
    fn step(&mut self) {
        self.hub.borrow_mut().now = self.now;
        let mut next = self
            .tracker
            .poll(self.now, &mut self.tracker_port, |_, _| {});
        for d in [&mut self.seeder, &mut self.getter] {
            if let Some(t) = d.poll(self.now) {
                next = next.min(t);
            }
        }
        if let Some(t) = self.hub.borrow().next_arrival() {
            next = next.min(t);
        }
        self.now = next.max(self.now + Duration::from_micros(100));
    }

    fn run_until(&mut self, mut done: impl FnMut(&Swarm) -> bool) {
        while !done(self) {
            assert!(
                self.now < Instant::ZERO + LIMIT,
                "not done after {LIMIT:?} of virtual time: getter verified {}/{} chunks",
                self.getter.verified.len(),
                self.file.header.chunk_count()
            );
            self.step();
        }
    }

    /// The getter finished, and what its flash holds is the file, every chunk recorded.
    fn check_getter(&mut self) {
        assert!(self.getter.complete);
        let d = self.getter.driver.take().unwrap();
        assert_eq!(d.store.verified(), self.file.header.chunk_count());
        let (_, bytes) = stored_file(d.store.into_flash(), &self.file);
        assert!(
            bytes == self.file.data,
            "the stored file differs from the original"
        );
    }
}

#[test]
fn a_device_downloads_a_file_through_the_tracker_intact() {
    let mut s = Swarm::new(Duration::from_millis(2), 0.0, 1);
    s.run_until(|s| s.getter.complete);
    let count = s.file.header.chunk_count() as usize;
    // Each chunk verified exactly once: nothing fetched twice.
    let mut v = s.getter.verified.clone();
    v.sort_unstable();
    v.dedup();
    assert_eq!(v.len(), count);
    assert_eq!(s.getter.verified.len(), count);
    s.check_getter();
}

#[test]
fn a_lossy_link_slows_the_download_but_it_arrives_intact() {
    for seed in 1..=3 {
        let mut s = Swarm::new(Duration::from_millis(5), 0.05, seed);
        s.run_until(|s| s.getter.complete);
        assert!(s.hub.borrow().dropped > 0, "the link dropped packets");
        s.check_getter();
    }
}

#[test]
fn the_seeder_resets_mid_transfer_and_serves_again_from_its_flash() {
    let mut s = Swarm::new(Duration::from_millis(2), 0.0, 4);
    s.run_until(|s| s.getter.verified.len() >= 3);
    s.seeder.power_off();
    let off_at = s.now;
    s.run_until(|s| s.now >= off_at + Duration::from_secs(3));
    assert!(
        !s.getter.complete,
        "nothing to fetch from while the seeder is off"
    );
    s.seeder.power_on(s.now);
    // Back up, it resumed sharing from its journal without erasing anything.
    let d = s.seeder.driver.as_ref().unwrap();
    assert_eq!(d.store.verified(), s.file.header.chunk_count());
    s.run_until(|s| s.getter.complete);
    s.check_getter();
}

#[test]
fn the_downloader_resets_mid_transfer_and_resumes_without_fetching_again() {
    let mut s = Swarm::new(Duration::from_millis(2), 0.0, 5);
    s.run_until(|s| s.getter.verified.len() >= 5);
    s.getter.power_off();
    let before: Vec<u32> = s.getter.verified.clone();
    let off_at = s.now;
    s.run_until(|s| s.now >= off_at + Duration::from_secs(1));
    s.getter.power_on(s.now);
    let d = s.getter.driver.as_ref().unwrap();
    assert_eq!(
        d.store.verified() as usize,
        before.len(),
        "the journal kept every chunk verified before the reset"
    );
    s.getter.verified.clear();
    s.run_until(|s| s.getter.complete);
    for c in &s.getter.verified {
        assert!(
            !before.contains(c),
            "chunk {c} was fetched again after the reset"
        );
    }
    assert_eq!(
        before.len() + s.getter.verified.len(),
        s.file.header.chunk_count() as usize
    );
    s.check_getter();
}
