//! Cross-stack: the device peer on smoltcp (adapter-smoltcp's `tap_peer`, on a TAP device)
//! and `shoal` on the Linux TCP stack swap files both ways, inside a network namespace this
//! test creates (10.77.0.1 is Linux's end of the TAP, 10.77.0.2 smoltcp's). Needs root, `ip`
//! and /dev/net/tun; where any is missing the test says so and skips. Every process it starts
//! is killed, and the namespace deleted, when it ends.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TAP: &str = "shoaltap0";
const LINUX_IP: &str = "10.77.0.1";
const DEVICE_IP: &str = "10.77.0.2";
const DEADLINE: Duration = Duration::from_secs(120);

/// The namespace, deleted (with its TAP device) on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process in the namespace, killed on drop.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }
    fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "no exit in time: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace with its TAP device up, or why it cannot be made here.
fn namespace() -> Result<Netns, String> {
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    let name = format!("shoal-x-{}", std::process::id());
    sh(&["ip", "netns", "add", &name])?;
    let ns = Netns(name.clone());
    let inside = |cmd: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", name.as_str()];
        a.extend_from_slice(cmd);
        sh(&a)
    };
    inside(&["ip", "link", "set", "lo", "up"])?;
    inside(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])?;
    inside(&["ip", "addr", "add", &format!("{LINUX_IP}/24"), "dev", TAP])?;
    inside(&["ip", "link", "set", TAP, "up"])?;
    Ok(ns)
}

/// `target/<profile>`, where cargo put this test and the binaries it needs.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Builds the two programs (cheap when they are up to date) and returns their paths.
fn programs() -> (PathBuf, PathBuf) {
    let dir = target_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "adapter-std",
        "--bin",
        "shoal",
        "-p",
        "adapter-smoltcp",
        "--example",
        "tap_peer",
    ]);
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "building shoal and tap_peer"
    );
    (dir.join("shoal"), dir.join("examples").join("tap_peer"))
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    fs::write(path, &data).unwrap();
    data
}

#[test]
fn smoltcp_and_linux_peers_swap_files_both_ways() {
    let ns = match namespace() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipping the cross-stack test: cannot create a network namespace with a TAP device here ({why}); it needs root, `ip` and /dev/net/tun");
            return;
        }
    };
    let (shoal, tap_peer) = programs();
    let dir = std::env::temp_dir().join(format!("shoal-x-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state")).unwrap();
    let start = |tag: &str, program: &Path, args: &[&str]| -> Proc {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(program)
            .args(args)
            .current_dir(&dir)
            .env("SHOAL_STATE_DIR", dir.join("state"))
            .env("SHOAL_WAIT", "30")
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Proc { child, out, err }
    };
    let tracker_addr = format!("{LINUX_IP}:7070");
    let tracker = start("tracker", &shoal, &["tracker", "--listen", &tracker_addr]);
    until("the tracker to listen", || {
        tracker.stderr().contains("tracker listening")
    });
    let listen = format!("{LINUX_IP}:0");

    // Linux shares, the device fetches.
    let a = random_file(&dir.join("a.bin"), 1_000_000);
    let sharer = start(
        "share",
        &shoal,
        &[
            "share",
            "a.bin",
            // The device keeps leaves for chunks of up to 128 KiB.
            "--chunk-size",
            "128K",
            "--tracker",
            &tracker_addr,
            "--listen",
            &listen,
        ],
    );
    let mut link = String::new();
    until("the share link", || {
        link = sharer
            .stdout()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        !link.is_empty()
    });
    let mut device_get = start(
        "device-get",
        &tap_peer,
        &[
            "--tap",
            TAP,
            "--ip",
            DEVICE_IP,
            "--tracker",
            &tracker_addr,
            "--get",
            &link,
            "--out",
            "a.out",
        ],
    );
    let status = device_get.wait();
    assert!(status.success(), "device fetch: {}", device_get.stderr());
    assert!(
        fs::read(dir.join("a.out")).unwrap() == a,
        "the device's copy differs"
    );
    drop(sharer);

    // The device shares, Linux fetches (from the device: no one else has the file).
    let b = random_file(&dir.join("b.bin"), 1_300_000);
    let device_seed = start(
        "device-seed",
        &tap_peer,
        &[
            "--tap",
            TAP,
            "--ip",
            DEVICE_IP,
            "--tracker",
            &tracker_addr,
            "--seed",
            "b.bin",
        ],
    );
    let mut link = String::new();
    until("the device's link", || {
        link = device_seed
            .stdout()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        !link.is_empty() || device_seed.stderr().contains("tap_peer:")
    });
    assert!(link.starts_with("shoal:"), "{}", device_seed.stderr());
    let mut get = start(
        "linux-get",
        &shoal,
        &[
            "get",
            &link,
            "-o",
            "b.out",
            "--no-seed",
            "--listen",
            &listen,
        ],
    );
    assert!(get.wait().success(), "linux fetch: {}", get.stderr());
    assert!(
        fs::read(dir.join("b.out")).unwrap() == b,
        "Linux's copy differs"
    );
    drop(device_seed);
    drop(tracker);
    let _ = fs::remove_dir_all(&dir);
}
