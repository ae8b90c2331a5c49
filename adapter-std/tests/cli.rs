//! The seed documents' flows end to end with the built `shoal` binary: real processes on
//! 127.0.0.1, every wait bounded by a deadline, every process stopped when its handle drops.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
const DEADLINE: Duration = Duration::from_secs(60);

/// A scratch folder per test, with its own state directory.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "shoal-it-{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("state")).unwrap();
    d
}

fn shoal(dir: &Path) -> Command {
    let mut c = Command::new(SHOAL);
    c.current_dir(dir)
        .env("SHOAL_STATE_DIR", dir.join("state"))
        .env_remove("SHOAL_TRACKER")
        .env("SHOAL_WAIT", "3");
    c
}

/// A running process, killed when dropped.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn start(dir: &Path, tag: &str, args: &[&str]) -> Proc {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = shoal(dir)
            .args(args)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("the shoal binary runs");
        Proc { child, out, err }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the process to exit; panics (killing it) past the deadline.
    fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "process did not exit in time; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it holds; panics past the deadline.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tracker(dir: &Path, listen: &str) -> (Proc, String) {
    tracker_with(dir, listen, &[])
}

fn tracker_with(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["tracker", "--listen", listen];
    args.extend_from_slice(extra);
    let p = Proc::start(dir, &format!("tracker-{}", listen.replace(':', "_")), &args);
    let mut addr = String::new();
    until("the tracker to listen", || {
        addr = p
            .stderr()
            .lines()
            .find_map(|l| l.split("tracker listening on ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        !addr.is_empty()
    });
    (p, addr)
}

fn share(dir: &Path, tag: &str, tracker: &str, file: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "share",
        file.to_str().unwrap(),
        "--tracker",
        tracker,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let p = Proc::start(dir, tag, &args);
    let mut link = String::new();
    until("the share link", || {
        link = p.stdout().lines().next().unwrap_or_default().to_owned();
        !link.is_empty()
    });
    assert!(link.starts_with("shoal:"), "{link}");
    (p, link)
}

/// Chunks recorded in a download's journal: the journal is a header (magic, id, manifest with
/// 32 bytes per chunk) followed by 4 bytes per verified chunk. Files here are 8 MiB in 256 KiB
/// chunks, so the header is 8 + 32 + 2 + (postcard header) + 32 * 32 bytes.
fn records(journal: &Path) -> u64 {
    const HEADER: u64 = 8 + 32 + 2 + 16 + 32 * 32;
    fs::metadata(journal).map_or(0, |m| m.len().saturating_sub(HEADER) / 4)
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

fn get_args<'a>(link: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["get", link, "-o", out, "--listen", "127.0.0.1:0"];
    a.extend_from_slice(extra);
    a
}

/// A tracker and a seeder of a random `src.bin` of `len` bytes (shared with `extra`), in a
/// scratch folder of its own.
struct Seeded {
    dir: PathBuf,
    data: Vec<u8>,
    tracker: Proc,
    tr: String,
    seed: Proc,
    link: String,
}

fn seeded(name: &str, len: usize, extra: &[&str]) -> Seeded {
    let dir = scratch(name);
    let data = random_file(&dir.join("src.bin"), len);
    let (tracker, tr) = tracker(&dir, "127.0.0.1:0");
    let (seed, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), extra);
    Seeded {
        dir,
        data,
        tracker,
        tr,
        seed,
        link,
    }
}

/// A `get --no-seed` of `link` to `out`, returned once its first chunk is journaled.
fn get_started(dir: &Path, link: &str, out: &str) -> Proc {
    let g = Proc::start(dir, "g", &get_args(link, out, &["--no-seed"]));
    let journal = dir.join(format!("{out}.shoal-journal"));
    until("the transfer to start", || records(&journal) >= 1);
    g
}

/// The file id in a link.
fn link_id(link: &str) -> String {
    link["shoal:".len()..].split('?').next().unwrap().to_owned()
}

/// The address of the first peer the tracker at `tr` lists (a test's only seeder).
fn first_peer(dir: &Path, tr: &str) -> String {
    let peers: serde_json::Value =
        serde_json::from_slice(&run(dir, &["peers", "--json", "--tracker", tr]).stdout).unwrap();
    peers[0]["addr"].as_str().unwrap().to_owned()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let mut p = Proc::start(dir, "run", args);
    let status = p.wait();
    Output {
        status,
        stdout: p.stdout().into_bytes(),
        stderr: p.stderr().into_bytes(),
    }
}

#[test]
fn tracker_seeder_and_two_concurrent_getters() {
    let dir = scratch("flow");
    let data = random_file(&dir.join("src.bin"), 6_000_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), &[]);
    let mut a = Proc::start(&dir, "a", &get_args(&link, "a.bin", &["--no-seed"]));
    let mut b = Proc::start(&dir, "b", &get_args(&link, "b.bin", &["--no-seed"]));
    assert!(a.wait().success(), "{}", a.stderr());
    assert!(b.wait().success(), "{}", b.stderr());
    assert_eq!(fs::read(dir.join("a.bin")).unwrap(), data);
    assert_eq!(fs::read(dir.join("b.bin")).unwrap(), data);
    // The final path is printed on stdout, and nothing is left beside it; stderr (not a
    // terminal) had plain progress lines.
    assert_eq!(a.stdout().trim(), "a.bin");
    assert!(
        a.stderr().contains("src.bin: 5.7 MiB, starting"),
        "{}",
        a.stderr()
    );
    assert!(
        a.stderr().contains("src.bin: done, 5.7 MiB"),
        "{}",
        a.stderr()
    );
    assert!(!dir.join("a.bin.part").exists() && !dir.join("a.bin.shoal-journal").exists());

    // ls / where / peers tell the truth: one file, one seeder online (the getters left).
    let ls = run(&dir, &["ls", "--tracker", &tr]);
    let ls_out = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success() && ls_out.contains("src.bin") && ls_out.contains("5.7 MiB"),
        "{ls_out}"
    );
    let ls_json: serde_json::Value =
        serde_json::from_slice(&run(&dir, &["ls", "--json", "--tracker", &tr]).stdout).unwrap();
    assert_eq!(ls_json[0]["name"], "src.bin");
    assert_eq!(ls_json[0]["size"], 6_000_000);
    assert_eq!(ls_json[0]["seeders"], 1);
    let chunks = ls_json[0]["chunks"].as_u64().unwrap();
    let w: serde_json::Value = serde_json::from_slice(
        &run(&dir, &["where", "src.bin", "--json", "--tracker", &tr]).stdout,
    )
    .unwrap();
    assert_eq!(w.as_array().unwrap().len(), 1);
    assert_eq!(w[0]["chunks"].as_u64().unwrap(), chunks);
    assert_eq!(w[0]["ranges"][0][1].as_u64().unwrap(), chunks);
    let where_text =
        String::from_utf8_lossy(&run(&dir, &["where", &link, "--tracker", &tr]).stdout).to_string();
    assert!(
        where_text.contains(&format!("0-{}", chunks - 1)),
        "{where_text}"
    );
    let peers: serde_json::Value =
        serde_json::from_slice(&run(&dir, &["peers", "--json", "--tracker", &tr]).stdout).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
}

#[test]
fn a_getter_killed_with_sigkill_resumes_without_fetching_verified_chunks_again() {
    let dir = scratch("resume");
    let data = random_file(&dir.join("src.bin"), 8 << 20);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    // A slow seeder (2 MB/s) so the getter is surely mid-transfer when it is killed.
    let (_s, link) = share(
        &dir,
        "seed",
        &tr,
        &dir.join("src.bin"),
        &["--upload-limit", "2000000"],
    );
    let mut g = Proc::start(&dir, "g1", &get_args(&link, "out.bin", &["--no-seed"]));
    let journal = dir.join("out.bin.shoal-journal");
    until("a few journaled chunks", || records(&journal) >= 4);
    g.kill();
    assert!(
        !dir.join("out.bin").exists(),
        "a killed download must not appear under its final name"
    );
    let mut g2 = Proc::start(
        &dir,
        "g2",
        &get_args(&link, "out.bin", &["--no-seed", "-v"]),
    );
    assert!(g2.wait().success(), "{}", g2.stderr());
    let resumed = g2.stderr();
    let line = resumed
        .lines()
        .find(|l| l.contains("resuming"))
        .unwrap_or_else(|| panic!("no resume: {resumed}"));
    let n: u32 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(n >= 4, "{line}");
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
}

#[test]
fn a_seeder_killed_mid_transfer_while_another_holds_the_file() {
    let dir = scratch("seedkill");
    let data = random_file(&dir.join("src.bin"), 8 << 20);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (mut s1, link) = share(
        &dir,
        "s1",
        &tr,
        &dir.join("src.bin"),
        &["--upload-limit", "1500000"],
    );
    let (_s2, _) = share(
        &dir,
        "s2",
        &tr,
        &dir.join("src.bin"),
        &["--upload-limit", "1500000"],
    );
    let mut g = get_started(&dir, &link, "out.bin");
    s1.kill();
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
}

#[test]
fn the_tracker_killed_and_restarted_mid_transfer() {
    let dir = scratch("trackerkill");
    let data = random_file(&dir.join("src.bin"), 8 << 20);
    let (mut t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(
        &dir,
        "seed",
        &tr,
        &dir.join("src.bin"),
        &["--upload-limit", "2000000"],
    );
    let mut g = get_started(&dir, &link, "out.bin");
    t.kill();
    // The transfer goes on without the tracker.
    let journal = dir.join("out.bin.shoal-journal");
    let at_kill = records(&journal);
    until("progress without the tracker", || {
        records(&journal) >= at_kill + 4
    });
    let (_t2, _) = tracker(&dir, &tr);
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
}

#[test]
fn two_trackers_one_killed_before_the_getter_starts_the_other_during_its_download() {
    let dir = scratch("twotrackers");
    let data = random_file(&dir.join("src.bin"), 8 << 20);
    let (mut t1, tr1) = tracker(&dir, "127.0.0.1:0");
    let (mut t2, tr2) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(
        &dir,
        "seed",
        &tr1,
        &dir.join("src.bin"),
        &["--tracker", &tr2, "--upload-limit", "2000000"],
    );
    // The link names both trackers, in order.
    assert!(link.contains(&format!("tr={tr1}&tr={tr2}")), "{link}");
    t1.kill();
    let mut g = get_started(&dir, &link, "out.bin");
    t2.kill();
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
}

#[test]
fn a_getter_joins_through_one_peer_with_no_tracker() {
    let Seeded {
        dir,
        data,
        tracker: mut t,
        tr,
        seed: _s,
        link,
    } = seeded("peeronly", 4 << 20, &[]);
    // The seeder's address, as the tracker knows it; then the tracker goes.
    let seeder = first_peer(&dir, &tr);
    t.kill();
    // A bare id names no tracker: the peer given is all the getter has.
    let id = link_id(&link);
    let mut g = Proc::start(
        &dir,
        "g",
        &[
            "get",
            &id,
            "-o",
            "out.bin",
            "--no-seed",
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &seeder,
        ],
    );
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
    // A peer that answers nothing: one clear line once the wait is over.
    fails(
        &dir,
        &[
            "get",
            &id,
            "-o",
            "none.bin",
            "--peer",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ],
        "no manifest for",
    );
}

#[test]
fn a_metainfo_file_fetches_the_file_with_no_tracker_that_lists_it() {
    let Seeded {
        dir,
        data,
        tracker: mut t,
        tr,
        seed: _s,
        ..
    } = seeded("metainfo", 3 << 20, &["--save", "src.shoal"]);
    until("the metainfo file", || dir.join("src.shoal").exists());
    let seeder = first_peer(&dir, &tr);
    // The tracker goes: the manifest comes from the file, the bytes from the peer given.
    t.kill();
    let mut g = Proc::start(
        &dir,
        "g",
        &[
            "get",
            "src.shoal",
            "-o",
            "out.bin",
            "--no-seed",
            "-v",
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &seeder,
        ],
    );
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
    // It started with the manifest known: as a download resumed with nothing verified.
    assert!(
        g.stderr().contains("resuming out.bin: 0 chunks"),
        "{}",
        g.stderr()
    );
    // The file already there: checked against the metainfo at once, no tracker or peer needed.
    let have = run(&dir, &["get", "src.shoal", "-o", "out.bin", "--no-seed"]);
    assert!(
        have.status.success(),
        "{}",
        String::from_utf8_lossy(&have.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&have.stdout).trim(), "out.bin");
    // A damaged or foreign file is one clear line, and leaves nothing behind.
    let mut bytes = fs::read(dir.join("src.shoal")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(dir.join("bad.shoal"), &bytes).unwrap();
    fails(
        &dir,
        &["get", "bad.shoal", "-o", "bad.bin"],
        "is not a usable shoal metainfo file",
    );
    fails(
        &dir,
        &["get", "src.bin", "-o", "x.bin"],
        "is not a usable shoal metainfo file",
    );
    assert!(!dir.join("bad.bin.part").exists());
    fails(
        &dir,
        &[
            "share",
            "src.bin",
            "src.shoal",
            "--save",
            "two.shoal",
            "--tracker",
            &tr,
        ],
        "--save writes the metainfo of one file",
    );
}

#[test]
fn files_are_told_apart_by_id_not_by_name() {
    let dir = scratch("samename");
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    random_file(&dir.join("a/same.bin"), 100_000);
    random_file(&dir.join("b/same.bin"), 200_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s1, l1) = share(&dir, "s1", &tr, &dir.join("a/same.bin"), &[]);
    let (_s2, l2) = share(&dir, "s2", &tr, &dir.join("b/same.bin"), &[]);
    assert_ne!(l1, l2);
    let ls: serde_json::Value =
        serde_json::from_slice(&run(&dir, &["ls", "--json", "--tracker", &tr]).stdout).unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["same.bin", "same.bin"], "{ls}");
    // A name two files share is ambiguous: one line naming both ids.
    let id = link_id;
    let o = run(&dir, &["where", "same.bin", "--tracker", &tr]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("2 files are named") && err.contains(&id(&l1)) && err.contains(&id(&l2)),
        "{err}"
    );
    // By id, each is found.
    let w = run(&dir, &["where", &id(&l2), "--tracker", &tr]);
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
}

#[test]
fn outputs_folders_existing_files_and_a_second_getter() {
    // A slow seeder, so a download is surely running when a second one starts.
    let Seeded {
        dir,
        data,
        tracker: _t,
        tr,
        seed: _s,
        link,
    } = seeded("outputs", 4 << 20, &["--upload-limit", "1000000"]);
    let id = link_id(&link);
    let get = |tag: &str, what: &str, out: &str| {
        Proc::start(
            &dir,
            tag,
            &[
                "get",
                what,
                "-o",
                out,
                "--no-seed",
                "--listen",
                "127.0.0.1:0",
                "--tracker",
                &tr,
            ],
        )
    };
    // Another shoal writing the same output is refused at once, in one line.
    let mut first = get("g1", &link, "out.bin");
    until("the first download to start", || {
        dir.join("out.bin.shoal-lock").exists()
    });
    fails(
        &dir,
        &[
            "get",
            &link,
            "-o",
            "out.bin",
            "--no-seed",
            "--listen",
            "127.0.0.1:0",
        ],
        "another shoal is downloading to out.bin",
    );
    assert!(first.wait().success(), "{}", first.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
    assert!(
        !dir.join("out.bin.shoal-lock").exists(),
        "the lock goes with the download"
    );
    // The output exists with the right content: checked and seeded, not refused.
    let mut again = get("g2", &link, "out.bin");
    assert!(again.wait().success(), "{}", again.stderr());
    assert_eq!(again.stdout().trim(), "out.bin");
    // With other content: one line, and the file is left alone.
    fs::write(dir.join("other.bin"), b"not the file").unwrap();
    fails(
        &dir,
        &[
            "get",
            &link,
            "-o",
            "other.bin",
            "--no-seed",
            "--listen",
            "127.0.0.1:0",
        ],
        "other.bin already exists with other content",
    );
    assert_eq!(fs::read(dir.join("other.bin")).unwrap(), b"not the file");
    // -o DIR/ puts the download inside (the folder is made); a bare id takes the manifest's
    // name; an existing folder given without the slash works the same.
    let mut into = get("g3", &id, "inbox/");
    assert!(into.wait().success(), "{}", into.stderr());
    assert_eq!(fs::read(dir.join("inbox/src.bin")).unwrap(), data);
    fs::create_dir_all(dir.join("folder")).unwrap();
    let mut folder = get("g4", &link, "folder");
    assert!(folder.wait().success(), "{}", folder.stderr());
    assert_eq!(fs::read(dir.join("folder/src.bin")).unwrap(), data);
}

#[test]
fn version_and_help_say_shoal_and_list_only_what_applies() {
    let dir = scratch("help");
    let out = |args: &[&str]| String::from_utf8_lossy(&run(&dir, args).stdout).to_string();
    assert!(
        out(&["--version"]).starts_with("shoal "),
        "{}",
        out(&["--version"])
    );
    let top = out(&["--help"]);
    assert!(
        top.contains("Examples:") && top.contains("shoal get"),
        "{top}"
    );
    // Options show where they apply, and nowhere else.
    for cmd in ["keygen", "demo"] {
        let help = out(&[cmd, "--help"]);
        assert!(
            !help.contains("--wait <") && !help.contains("--swarm-key-file <"),
            "{help}"
        );
    }
    let get = out(&["get", "--help"]);
    for opt in [
        "--wait",
        "--swarm-key-file",
        "--peer",
        "--tracker",
        "Examples:",
    ] {
        assert!(get.contains(opt), "get --help lacks {opt}: {get}");
    }
    assert!(out(&["tracker", "--help"]).contains("--swarm-key-file"));
}

/// Runs a command that must fail: exit code 1, and exactly one error line on stderr, the
/// last, saying `says`. Before it there may be progress lines (stderr is not a terminal
/// here), never a warning or a second error.
fn fails(dir: &Path, args: &[&str], says: &str) {
    let o = run(dir, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    let errors = lines.iter().filter(|l| l.starts_with("shoal: ")).count();
    assert_eq!(errors, 1, "{args:?}: one error line expected, got {err}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("shoal: ") && last.contains(says),
        "{args:?}: {err}"
    );
    assert!(
        !err.contains("WARN") && !err.contains("ERROR"),
        "{args:?}: warnings beside the error: {err}"
    );
}

#[test]
fn user_errors_get_one_clear_line_and_exit_1() {
    let dir = scratch("errors");
    random_file(&dir.join("src.bin"), 100_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), &[]);
    fails(
        &dir,
        &["share", "missing.bin", "--tracker", &tr],
        "cannot read missing.bin",
    );
    // A bad path anywhere in the list is found before any file is hashed.
    random_file(&dir.join("other.bin"), 100_000);
    let late = run(
        &dir,
        &["share", "other.bin", "missing.bin", "--tracker", &tr],
    );
    let late_err = String::from_utf8_lossy(&late.stderr);
    assert!(
        late.status.code() == Some(1) && !late_err.contains("hashing"),
        "{late_err}"
    );
    // Limits take units (so this fails on the file, not the limit); 0 is refused as usage.
    fails(
        &dir,
        &[
            "share",
            "missing.bin",
            "--tracker",
            &tr,
            "--upload-limit",
            "10M",
            "--download-limit",
            "512K",
        ],
        "cannot read missing.bin",
    );
    let zero = run(&dir, &["get", &link, "--upload-limit", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("a limit of 0 would stop every transfer")
    );
    fails(
        &dir,
        &["get", "shoal:xyz", "-o", "x.bin"],
        "not 64 hex digits",
    );
    fails(
        &dir,
        &["get", "not a link", "-o", "x.bin"],
        "not a shoal link",
    );
    let unknown = "ab".repeat(32);
    fails(
        &dir,
        &[
            "get",
            &unknown,
            "--tracker",
            &tr,
            "-o",
            "u.bin",
            "--no-seed",
        ],
        "knows no file",
    );
    assert!(!dir.join("u.bin").exists() && !dir.join("u.bin.part").exists());
    fails(&dir, &["ls", "--tracker", "127.0.0.1:9"], "unreachable");
    // A refused connection is said at once (before the wait is over), then the error.
    let o = run(
        &dir,
        &["get", &link, "-o", "never.bin", "--tracker", "127.0.0.1:9"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        lines.first().copied(),
        Some("tracker 127.0.0.1:9 refused the connection; retrying for 3 s"),
        "{err}"
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("unreachable")),
        "{err}"
    );
    fails(
        &dir,
        &["get", &link, "-o", "/nonexistent-dir/out.bin", "--no-seed"],
        "cannot write",
    );
    fails(&dir, &["tracker", "--listen", &tr], "already in use");
    fs::write(dir.join("taken.bin"), b"mine").unwrap();
    fails(
        &dir,
        &["get", &link, "-o", "taken.bin", "--no-seed"],
        "already exists",
    );
    assert_eq!(fs::read(dir.join("taken.bin")).unwrap(), b"mine");
    // Usage errors exit 2.
    assert_eq!(run(&dir, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&dir, &["get"]).status.code(), Some(2));
}

#[test]
fn a_getter_is_served_by_another_getter() {
    let dir = scratch("relay");
    let data = random_file(&dir.join("src.bin"), 8 << 20);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (mut s, link) = share(
        &dir,
        "seed",
        &tr,
        &dir.join("src.bin"),
        &["--upload-limit", "4000000"],
    );
    // A keeps seeding after it completes; B starts while A is still fetching.
    let a = Proc::start(&dir, "a", &get_args(&link, "a.bin", &[]));
    until("A to be under way", || {
        records(&dir.join("a.bin.shoal-journal")) >= 2
    });
    let mut b = Proc::start(&dir, "b", &get_args(&link, "b.bin", &["--no-seed"]));
    until("A to complete", || a.stdout().contains("a.bin"));
    // With the seeder gone, whatever B still lacks can only come from A.
    s.kill();
    assert!(b.wait().success(), "{}", b.stderr());
    assert_eq!(fs::read(dir.join("b.bin")).unwrap(), data);
    assert_eq!(fs::read(dir.join("a.bin")).unwrap(), data);
    // A's seeding line (off a terminal, every few seconds) counts the peers it served apart
    // from those merely connected: none if it uploaded nothing, else B alone (the seeder
    // fetched nothing from it).
    let mut line = String::new();
    until("A's seeding line", || {
        line = a
            .stderr()
            .lines()
            .rfind(|l| l.starts_with("src.bin: seeding, uploaded "))
            .unwrap_or_default()
            .to_owned();
        !line.is_empty()
    });
    let served_nothing = line.contains("uploaded 0 B ");
    let want = if served_nothing {
        " to 0 peers, "
    } else {
        " to 1 peer, "
    };
    assert!(line.contains(want), "{line}");
}

#[test]
fn sigint_makes_a_peer_tell_the_tracker_it_leaves() {
    let dir = scratch("sigint");
    random_file(&dir.join("src.bin"), 100_000);
    let (t, tr) = tracker(&dir, "127.0.0.1:0");
    let (mut s, _) = share(&dir, "seed", &tr, &dir.join("src.bin"), &[]);
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    // 130, as a shell reports a command ended by Ctrl-C.
    let status = s.wait();
    assert_eq!(status.code(), Some(130), "{}", s.stderr());
    until("the tracker to log the leave", || {
        t.stderr().contains("left: it said goodbye")
    });
}

#[test]
fn progress_off_a_terminal_is_a_plain_line_every_few_seconds_and_says_stalled() {
    let Seeded {
        dir,
        tracker: _t,
        seed: mut s,
        link,
        ..
    } = seeded("progress", 8 << 20, &["--upload-limit", "1M"]);
    let mut g = Proc::start(&dir, "g", &get_args(&link, "out.bin", &["--no-seed"]));
    // A line with bytes, percentage, rate, peers and ETA while bytes flow...
    until("a progress line", || {
        g.stderr().lines().any(|l| {
            l.starts_with("src.bin: ") && l.contains("%), ") && l.contains("/s, 1 peer, ETA ")
        })
    });
    // ...and "stalled" once the only holder is gone.
    s.kill();
    until("a stalled line", || {
        g.stderr().lines().any(|l| l.contains("%), stalled"))
    });
    g.kill();
}

#[test]
fn on_a_terminal_progress_is_a_bar_with_rate_peers_and_eta_then_a_seeding_line() {
    let Seeded {
        dir,
        tracker: _t,
        seed: _s,
        link,
        ..
    } = seeded("bar", 8 << 20, &["--upload-limit", "2M"]);
    let mut cmd = shoal(&dir);
    cmd.args(get_args(&link, "out.bin", &[]));
    // The process lives in a pseudo-terminal, killed when the session drops.
    let mut p =
        rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).expect("a pty");
    p.exp_string("/s, 1 peer, ETA ")
        .expect("the bar's rate, peers and ETA");
    p.exp_string("seeding, uploaded ")
        .expect("the seeding line");
    p.send_control('c').expect("Ctrl-C");
    p.exp_eof().expect("it exits on Ctrl-C");
    assert_eq!(fs::read(dir.join("out.bin")).unwrap().len(), 8 << 20);
}

#[test]
fn an_interrupted_download_exits_130_and_says_how_to_resume() {
    let Seeded {
        dir,
        tracker: _t,
        seed: _s,
        link,
        ..
    } = seeded("sigint-get", 8 << 20, &["--upload-limit", "1000000"]);
    let mut g = get_started(&dir, &link, "out.bin");
    let pid = g.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = g.wait();
    assert_eq!(status.code(), Some(130), "{}", g.stderr());
    assert!(
        g.stderr()
            .contains("interrupted; run the same command again to resume"),
        "{}",
        g.stderr()
    );
    assert!(!dir.join("out.bin").exists());
}

#[test]
fn the_console_shares_gets_lists_and_quits() {
    use std::io::Write as _;
    let dir = scratch("console");
    let data = random_file(&dir.join("src.bin"), 3_000_000);
    let other = random_file(&dir.join("other.bin"), 2_000_000);
    random_file(&dir.join("third.bin"), 100_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    // One seeder of three files; the console fetches two at once.
    let (s, link) = share(
        &dir,
        "seed",
        &tr,
        &dir.join("src.bin"),
        &[
            dir.join("other.bin").to_str().unwrap(),
            dir.join("third.bin").to_str().unwrap(),
        ],
    );
    let (mut link2, mut link3) = (String::new(), String::new());
    until("the other links", || {
        link2 = s.stdout().lines().nth(1).unwrap_or_default().to_owned();
        link3 = s.stdout().lines().nth(2).unwrap_or_default().to_owned();
        !link3.is_empty()
    });
    let out = dir.join("console.out");
    let mut child = shoal(&dir)
        .args(["peer", "--tracker", &tr, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let said = || fs::read_to_string(&out).unwrap_or_default();
    writeln!(stdin, "ls").unwrap();
    until("the file list", || {
        said().contains("3 files") && said().contains("src.bin")
    });
    writeln!(stdin, "get {link} -o got.bin").unwrap();
    writeln!(stdin, "get '{link2}' --output got2.bin").unwrap();
    until("both downloads", || {
        said().contains("done: got.bin") && said().contains("done: got2.bin")
    });
    writeln!(stdin, "status").unwrap();
    until("the status", || said().contains("-> got.bin"));
    // Outputs already there, as `shoal get` treats them: the content asked for is shared,
    // other content is left alone with one line.
    writeln!(stdin, "get '{link3}' -o other.bin").unwrap();
    until("other content refused", || {
        said().contains("other.bin already exists with other content")
    });
    writeln!(stdin, "get '{link3}' -o third.bin").unwrap();
    until("the existing file shared", || {
        said().contains("third.bin is already here; sharing it")
    });
    writeln!(stdin, "nonsense").unwrap();
    until("an error line", || {
        said().contains("unrecognized subcommand 'nonsense'")
    });
    writeln!(stdin, "get").unwrap();
    until("get's usage", || said().contains("Usage: get <LINK|ID>"));
    writeln!(stdin, "quit").unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the console did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert_eq!(fs::read(dir.join("got.bin")).unwrap(), data);
    assert_eq!(fs::read(dir.join("got2.bin")).unwrap(), other);
    assert_eq!(fs::read(dir.join("other.bin")).unwrap(), other);
}

#[test]
fn sharing_the_same_unchanged_file_again_does_not_rehash_it() {
    let dir = scratch("cache");
    random_file(&dir.join("src.bin"), 1_000_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (mut first, link1) = share(&dir, "s1", &tr, &dir.join("src.bin"), &[]);
    assert!(first.stderr().contains("hashing"), "{}", first.stderr());
    first.kill();
    let (second, link2) = share(&dir, "s2", &tr, &dir.join("src.bin"), &[]);
    assert!(
        second.stderr().contains("manifest from cache"),
        "{}",
        second.stderr()
    );
    assert_eq!(link1, link2);
    // A changed file is hashed again.
    drop(second);
    random_file(&dir.join("src.bin"), 1_000_001);
    let (third, link3) = share(&dir, "s3", &tr, &dir.join("src.bin"), &[]);
    assert!(third.stderr().contains("hashing"), "{}", third.stderr());
    assert_ne!(link3, link1);
}

#[test]
fn a_full_disk_is_one_clear_line_and_resumable() {
    let dir = scratch("diskfull");
    let small = dir.join("small");
    fs::create_dir_all(&small).unwrap();
    // A 2 MiB filesystem of our own; needs root (CI runs as root), else the test says so.
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=2m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a small tmpfs here (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    random_file(&dir.join("src.bin"), 4 << 20);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), &[]);
    let out = small.join("out.bin");
    fails(
        &dir,
        &["get", &link, "-o", out.to_str().unwrap(), "--no-seed"],
        "disk is full",
    );
    assert!(!out.exists());
}

#[test]
fn a_private_swarm_serves_members_and_refuses_everyone_else() {
    let dir = scratch("swarmkey");
    // keygen writes 64 hex digits readable by the owner only, and never overwrites.
    assert!(run(&dir, &["keygen", "key.hex"]).status.success());
    let key = fs::read_to_string(dir.join("key.hex")).unwrap();
    assert_eq!(key.trim().len(), 64, "{key}");
    assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("key.hex"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fails(&dir, &["keygen", "key.hex"], "already exists");
    assert_eq!(fs::read_to_string(dir.join("key.hex")).unwrap(), key);
    assert!(run(&dir, &["keygen", "other.hex"]).status.success());
    fs::write(dir.join("bad.hex"), "not a key\n").unwrap();

    let k = ["--swarm-key-file", "key.hex"];
    let data = random_file(&dir.join("src.bin"), 3_000_000);
    let (_t, tr) = tracker_with(&dir, "127.0.0.1:0", &k);
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), &k);
    let mut member = Proc::start(
        &dir,
        "member",
        &get_args(&link, "m.bin", &["--no-seed", k[0], k[1]]),
    );
    assert!(member.wait().success(), "{}", member.stderr());
    assert_eq!(fs::read(dir.join("m.bin")).unwrap(), data);
    let ls = run(&dir, &["ls", "--tracker", &tr, k[0], k[1]]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("src.bin"));

    // Without the key, or with another one: one line saying what to do, nothing downloaded.
    fails(
        &dir,
        &get_args(&link, "x.bin", &["--no-seed"]),
        "private swarm: pass its key with --swarm-key-file",
    );
    fails(
        &dir,
        &get_args(
            &link,
            "y.bin",
            &["--no-seed", "--swarm-key-file", "other.hex"],
        ),
        "refused our swarm key",
    );
    fails(&dir, &["ls", "--tracker", &tr], "private swarm");
    for out in ["x.bin", "x.bin.part", "y.bin", "y.bin.part"] {
        assert!(!dir.join(out).exists(), "{out} left behind");
    }
    // A key where the tracker has none is refused too.
    let (_open, open_tr) = tracker(&dir, "127.0.0.1:0");
    fails(
        &dir,
        &["ls", "--tracker", &open_tr, k[0], k[1]],
        "refused our swarm key",
    );
    // Unusable key files.
    fails(
        &dir,
        &["ls", "--tracker", &tr, "--swarm-key-file", "bad.hex"],
        "64 hex digits",
    );
    fails(
        &dir,
        &["ls", "--tracker", &tr, "--swarm-key-file", "missing.hex"],
        "cannot read swarm key file missing.hex",
    );
}

#[test]
fn the_core_logs_through_the_commands_output() {
    let dir = scratch("corelog");
    let (t, addr) = tracker(&dir, "127.0.0.1:0");
    // A frame whose length prefix claims 4 GiB: the core cuts the connection off and says so
    // in its own words (`conn#…`), besides the command's line about the event.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut s, &[0xff; 8]).unwrap();
    until("the core's own warning", || {
        t.stderr()
            .lines()
            .any(|l| l.contains("conn#") && l.contains("misbehaved"))
    });
}

/// Idle TCP connections to `target` from 127.0.0.2 and up, `per_addr` from each of `addrs`
/// addresses, held open and reopened as soon as the other end closes one, until dropped.
/// Counts the reopenings: each one is a connection the target closed.
struct Squatters {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reopened: std::sync::Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Squatters {
    fn start(target: std::net::SocketAddr, addrs: u8, per_addr: usize) -> Squatters {
        use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let reopened = Arc::new(AtomicUsize::new(0));
        let (s, r) = (stop.clone(), reopened.clone());
        let open = move |i: usize| -> Option<TcpStream> {
            let src = Ipv4Addr::new(127, 0, 0, 2 + (i / per_addr) as u8);
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            sock.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
                .ok()?;
            sock.connect_timeout(&target.into(), Duration::from_secs(1))
                .ok()?;
            sock.set_nonblocking(true).ok()?;
            Some(sock.into())
        };
        let thread = std::thread::spawn(move || {
            let n = usize::from(addrs) * per_addr;
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) {
                for (i, c) in conns.iter_mut().enumerate() {
                    let closed = match c {
                        None => true,
                        Some(stream) => match stream.read(&mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        },
                    };
                    if closed {
                        if c.is_some() {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                        *c = open(i);
                    }
                }
                // Pace the scan; reopening is what matters, not how fast.
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Squatters {
            stop,
            reopened,
            thread: Some(thread),
        }
    }
}

impl Drop for Squatters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn idle_connections_that_reopen_at_once_lock_no_one_out_of_a_tracker_or_a_seeder() {
    let dir = scratch("squat");
    let data = random_file(&dir.join("src.bin"), 4 << 20);
    // A tracker with room for 16 connections, and a seeder (64 connection slots).
    let (_t, tr) = tracker_with(&dir, "127.0.0.1:0", &["--max-peers", "16"]);
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src.bin"), &[]);
    let holders =
        String::from_utf8_lossy(&run(&dir, &["where", &link, "--tracker", &tr]).stdout).to_string();
    let seeder: std::net::SocketAddr = holders
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no holder address in {holders}"));
    // 32 idle connections from 4 addresses against the tracker, 128 from 8 against the
    // seeder: both tables are full of connections that never say a word.
    let on_tracker = Squatters::start(tr.parse().unwrap(), 4, 8);
    let on_seeder = Squatters::start(seeder, 8, 16);
    until("the squatters to fill both tables", || {
        on_tracker.reopened.load(Ordering::Relaxed) > 0
            && on_seeder.reopened.load(Ordering::Relaxed) > 0
    });
    let ls = run(&dir, &["ls", "--tracker", &tr]);
    assert!(
        ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("src.bin"),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let mut g = Proc::start(&dir, "g", &get_args(&link, "out.bin", &["--no-seed"]));
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(fs::read(dir.join("out.bin")).unwrap(), data);
    drop((on_tracker, on_seeder));
    assert!(
        _t.stderr().contains("connection table full"),
        "the tracker made room by eviction"
    );
}

/// GETs `url` with a real HTTP client: the status code, the content type and the body.
fn http_get(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), kind, body)
}

/// The value of `metric` with `label` (name, value) if given, from a scrape.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {label:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{metric} is not a number"),
    }
}

#[test]
fn the_tracker_serves_a_status_page_json_and_prometheus_metrics_when_asked() {
    let dir = scratch("http");
    // A name a browser would take for markup if the page did not escape it.
    let name = "a <b>&amp;.bin";
    let data = random_file(&dir.join(name), 3_000_000);
    let (_t, tr) = tracker_with(&dir, "127.0.0.1:0", &["--http", "127.0.0.1:0"]);
    let err = fs::read_to_string(dir.join("tracker-127.0.0.1_0.err")).unwrap();
    let page = err
        .lines()
        .find_map(|l| l.split("status page at ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no status page line: {err}"))
        .trim_end_matches('/')
        .to_owned();
    let (_s, link) = share(&dir, "seed", &tr, &dir.join(name), &[]);
    let mut g = Proc::start(&dir, "g", &get_args(&link, "out.bin", &[]));
    until("the download", || {
        fs::read(dir.join("out.bin")).is_ok_and(|d| d == data)
    });

    // The JSON: both peers, and (within two ping rounds) what each reported it moved.
    let mut status = serde_json::Value::Null;
    until("both peers' reports", || {
        let (code, kind, body) = http_get(&format!("{page}/status.json"));
        assert_eq!((code, kind.as_str()), (200, "application/json"), "{body}");
        status = serde_json::from_str(&body).unwrap();
        let peers = status["peers"].as_array().unwrap();
        let fetched = peers.iter().any(|p| p["downloaded"] == 3_000_000);
        let served = peers
            .iter()
            .any(|p| p["uploaded"].as_u64() >= Some(3_000_000));
        peers.len() == 2 && fetched && served
    });
    assert_eq!(status["tracker"], tr.as_str());
    let files = status["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{status}");
    assert_eq!(files[0]["name"], name);
    assert_eq!(
        (files[0]["holders"].as_u64(), files[0]["complete"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(files[0]["holder_list"].as_array().unwrap().len(), 2);
    let id = link_id(&link);
    assert_eq!(files[0]["id"], id.as_str());

    // The page: the name escaped, never markup; the file's page lists its holders.
    let (code, kind, html) = http_get(&format!("{page}/"));
    assert_eq!((code, kind.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        html.contains("a &lt;b&gt;&amp;amp;.bin") && !html.contains("<b>"),
        "{html}"
    );
    assert!(
        html.contains("2 of ") && html.contains(&format!("/file/{id}")),
        "{html}"
    );
    let (code, _, file_html) = http_get(&format!("{page}/file/{id}"));
    assert_eq!(code, 200);
    assert_eq!(file_html.matches(" of 12</td>").count(), 2, "{file_html}");
    assert_eq!(http_get(&format!("{page}/file/{}", "0".repeat(64))).0, 404);
    assert_eq!(http_get(&format!("{page}/nothing")).0, 404);

    // The metrics, parsed as Prometheus parses them.
    let (code, kind, text) = http_get(&format!("{page}/metrics"));
    assert_eq!(code, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(sample(&scrape, "shoal_tracker_peers", None), 2.0, "{text}");
    assert_eq!(sample(&scrape, "shoal_tracker_files", None), 1.0);
    assert_eq!(sample(&scrape, "shoal_tracker_holdings", None), 2.0);
    assert_eq!(
        sample(&scrape, "shoal_tracker_peers_joined_total", None),
        2.0
    );
    assert_eq!(sample(&scrape, "shoal_tracker_publishes_total", None), 2.0);
    let file = Some(("name", name));
    assert_eq!(sample(&scrape, "shoal_tracker_file_holders", file), 2.0);
    assert_eq!(
        sample(&scrape, "shoal_tracker_file_complete_holders", file),
        2.0
    );

    // The getter goes: the page says so.
    g.kill();
    until("the getter to leave", || {
        let (_, _, text) = http_get(&format!("{page}/metrics"));
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        sample(&scrape, "shoal_tracker_peers", None) == 1.0
            && sample(
                &scrape,
                "shoal_tracker_peers_left_total",
                Some(("reason", "disconnected")),
            ) == 1.0
    });

    // Another tracker asking for the same page port: one clear line.
    let port = page.rsplit(':').next().unwrap();
    fails(
        &dir,
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--http",
            &format!("127.0.0.1:{port}"),
        ],
        &format!("port {port} is already in use; pick another with --http"),
    );
    // And without --http, nothing is served: the log names no page.
    let (_plain, _) = tracker(&dir, "127.0.0.1:0");
    let plain_err = fs::read_to_string(dir.join("tracker-127.0.0.1_0.err")).unwrap();
    assert!(!plain_err.contains("status page"), "{plain_err}");
}

#[test]
fn the_console_on_a_terminal_edits_quotes_keeps_history_and_asks_before_quitting() {
    let Seeded {
        dir,
        tracker: _t,
        tr,
        seed: _s,
        link,
        ..
    } = seeded("console-pty", 8 << 20, &["--upload-limit", "200K"]);
    random_file(&dir.join("my file.bin"), 100_000);
    let mut cmd = shoal(&dir);
    cmd.args(["peer", "--tracker", &tr, "--listen", "127.0.0.1:0"])
        .env("TERM", "xterm");
    let mut p =
        rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).expect("a pty");
    let mut seen = String::new();
    let mut expect = |p: &mut rexpect::session::PtySession, what: &str| {
        let before = p
            .exp_string(what)
            .unwrap_or_else(|e| panic!("waiting for {what:?}: {e}; so far: {seen}"));
        seen.push_str(&before);
        seen.push_str(what);
    };
    expect(&mut p, "type help for commands");
    expect(&mut p, "shoal> ");
    // Help is clap's, listing every command.
    p.send_line("help").unwrap();
    expect(&mut p, "unshare");
    // A command without its argument: its usage, not "unknown command".
    p.send_line("get").unwrap();
    expect(&mut p, "Usage: get <LINK|ID>");
    // A name with a space, quoted as in a shell.
    p.send_line("share 'my file.bin'").unwrap();
    expect(&mut p, "sharing my file.bin: shoal:");
    // History: the up arrow brings `files` back.
    p.send_line("files").unwrap();
    expect(&mut p, "  sharing my file.bin");
    p.send("\x1b[A").unwrap();
    p.send("\r").unwrap();
    p.flush().unwrap();
    expect(&mut p, "  sharing my file.bin");
    // Ctrl-C clears a half-typed line: what follows is a line of its own.
    p.send("ls and some junk").unwrap();
    p.flush().unwrap();
    p.send_control('c').unwrap();
    p.send_line("ls").unwrap();
    expect(&mut p, "2 files");
    // A download runs; Ctrl-C on an empty line asks first, and "n" keeps it running.
    p.send_line(&format!("get '{link}' -o out.bin")).unwrap();
    expect(&mut p, "fetching out.bin in the background");
    p.send_control('c').unwrap();
    expect(&mut p, "1 download is running; quit anyway? [y/N]");
    p.send_line("n").unwrap();
    expect(&mut p, "shoal> ");
    p.send_line("files").unwrap();
    expect(&mut p, "  out.bin: ");
    // Cancel and unshare; then nothing runs, and Ctrl-C quits at once.
    p.send_line("cancel out.bin").unwrap();
    expect(&mut p, "cancelled out.bin");
    p.send_line("unshare 'my file.bin'").unwrap();
    expect(&mut p, "stopped sharing my file.bin");
    p.send_line("files").unwrap();
    expect(&mut p, "nothing shared or fetched yet");
    p.send_control('c').unwrap();
    let rest = p.exp_eof().expect("it quits");
    seen.push_str(&rest);
    // Answers are printed above the prompt, never after it on the same line.
    assert!(!seen.contains("shoal> shoal>"), "{seen}");
    assert!(!seen.contains("shoal> 2 files"), "{seen}");
    // The unshared file and the cancelled download are gone from the tracker's holders.
    let w: serde_json::Value =
        serde_json::from_slice(&run(&dir, &["where", &link, "--json", "--tracker", &tr]).stdout)
            .unwrap();
    assert_eq!(w.as_array().unwrap().len(), 1, "only the seeder: {w}");
    assert!(dir.join("out.bin.part").exists() && !dir.join("out.bin").exists());
}

/// A tree of files under `root`: nested folders, a name with a space, an empty file, and
/// `tiny` files of a few bytes; returns every (relative path, content).
fn tree(root: &Path, tiny: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("big.bin".to_owned(), vec![7u8; 3_000_000]),
        ("docs/read me.txt".to_owned(), b"hello".to_vec()),
        ("docs/empty".to_owned(), Vec::new()),
    ];
    for i in 0..tiny {
        let content = format!("tiny file {i}\n").repeat(1 + i % 5).into_bytes();
        files.push((format!("t/{:02}/f{i:05}.txt", i % 40), content));
    }
    for (rel, content) in &files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    files
}

#[test]
fn a_folder_of_ten_thousand_small_files_is_shared_and_fetched_as_one_unit() {
    let dir = scratch("folder");
    let files = tree(&dir.join("src"), 10_000);
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(&dir, "seed", &tr, &dir.join("src"), &[]);
    assert!(link.contains("&name=src"), "{link}");
    // One id and one listing for the whole tree; its small files share chunks: a few dozen
    // chunks of 256 KiB, not ten thousand transfers.
    let ls: serde_json::Value =
        serde_json::from_slice(&run(&dir, &["ls", "--json", "--tracker", &tr]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    let size: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    assert_eq!(ls[0]["size"], size);
    assert_eq!(ls[0]["chunks"].as_u64(), Some(size.div_ceil(256 * 1024)));
    fs::create_dir_all(dir.join("into")).unwrap();
    let mut g = Proc::start(&dir, "g", &get_args(&link, "into/", &["--no-seed"]));
    assert!(g.wait().success(), "{}", g.stderr());
    assert_eq!(g.stdout().trim(), "into/src");
    for (rel, content) in &files {
        let got = fs::read(dir.join("into/src").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *content, "{rel} differs");
    }
    assert!(!dir.join("into/src.part").exists() && !dir.join("into/src.shoal-journal").exists());
    // The same command again: the folder there is checked against the manifest and seeded,
    // not refused or fetched again.
    let mut again = Proc::start(&dir, "g2", &get_args(&link, "into/", &["--no-seed", "-v"]));
    assert!(again.wait().success(), "{}", again.stderr());
    assert_eq!(again.stdout().trim(), "into/src");
    assert!(
        again
            .stderr()
            .contains("is already what was asked for; seeding it"),
        "{}",
        again.stderr()
    );
    // One byte changed in one small file: other content, said in one line, nothing touched.
    let changed = dir.join("into/src/t/07/f00007.txt");
    let mut bytes = fs::read(&changed).unwrap();
    bytes[0] ^= 1;
    fs::write(&changed, &bytes).unwrap();
    fails(
        &dir,
        &get_args(&link, "into/", &["--no-seed"]),
        "into/src already exists with other content",
    );
    assert_eq!(fs::read(&changed).unwrap(), bytes);
    assert!(!dir.join("into/src.part").exists());
}

#[test]
fn a_folder_download_killed_resumes_and_a_hostile_layout_creates_nothing() {
    let dir = scratch("folder-resume");
    let files = tree(&dir.join("src"), 50);
    let mut big = vec![0u8; 8 << 20];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut big)
        .unwrap();
    fs::write(dir.join("src/big.bin"), &big).unwrap();
    let (_t, tr) = tracker(&dir, "127.0.0.1:0");
    let (_s, link) = share(
        &dir,
        "seed",
        &tr,
        &dir.join("src"),
        &["--upload-limit", "2M"],
    );
    let mut g = Proc::start(&dir, "g1", &get_args(&link, "out", &["--no-seed"]));
    let journal = dir.join("out.shoal-journal");
    let mut start = 0;
    until("the journal", || {
        start = fs::metadata(&journal).map_or(0, |m| m.len());
        start > 0
    });
    until("four journaled chunks", || {
        fs::metadata(&journal).map_or(0, |m| m.len()) >= start + 16
    });
    g.kill();
    assert!(dir.join("out.part").is_dir() && !dir.join("out").exists());
    let mut g2 = Proc::start(&dir, "g2", &get_args(&link, "out", &["--no-seed", "-v"]));
    assert!(g2.wait().success(), "{}", g2.stderr());
    assert!(g2.stderr().contains("resuming"), "{}", g2.stderr());
    assert_eq!(fs::read(dir.join("out/big.bin")).unwrap(), big);
    for (rel, content) in files.iter().filter(|(r, _)| r != "big.bin") {
        assert_eq!(
            &fs::read(dir.join("out").join(rel)).unwrap(),
            content,
            "{rel}"
        );
    }

    // A metainfo file whose (correctly hashed) layout climbs out of the download's folder:
    // refused in one line before anything is made.
    use adapter_std::folder::{FolderFile, Layout};
    use proto_core::manifest::{Built, ManifestBuilder, ManifestHeader};
    let layout = Layout {
        files: vec![FolderFile {
            path: "../escaped".into(),
            size: 5,
        }],
    }
    .encode();
    let header = ManifestHeader::folder("evil", 5, 16 * 1024, layout.len() as u32).unwrap();
    let mut b = ManifestBuilder::new(header);
    let mut body = Vec::new();
    b.update(b"hello", |built| {
        if let Built::Chunk { hash, .. } = built {
            body.extend_from_slice(&hash.0);
        }
    })
    .unwrap();
    body.extend_from_slice(&layout);
    let (header, id) = b.finish_with_layout(&layout).unwrap();
    let m = adapter_std::store::Manifest {
        id,
        header,
        body,
        leaves: adapter_std::store::LeafSource::None,
    };
    adapter_std::metainfo::save(&dir.join("evil.shoal"), &m, &[]).unwrap();
    fails(
        &dir,
        &[
            "get",
            "evil.shoal",
            "--peer",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ],
        "'../escaped' in the folder is unsafe",
    );
    assert!(!dir.join("escaped").exists() && !dir.join("evil").exists());
}
