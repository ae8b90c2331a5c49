//! Puts memory.x where the linker (cortex-m-rt's link.x) finds it, and turns the link the
//! firmware is built with (`SHOAL_LINK`) into constants.
//!
//! The link is parsed here, on the build machine, rather than at boot: a malformed link fails
//! the build with a message instead of halting a board, and the device carries no text parser
//! (about 2.5 KiB of flash: link syntax, UTF-8 checks, the address parser).
use std::net::SocketAddr;
use std::{env, fs, path::PathBuf, process};

use proto_core::link::Link;

/// What an unconfigured build fetches: nothing that exists, from the tracker at 10.0.0.1.
const DEFAULT_LINK: &str =
    "shoal:0000000000000000000000000000000000000000000000000000000000000000?tr=10.0.0.1:7070";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is in the crate root");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=SHOAL_LINK");

    let text = env::var("SHOAL_LINK").unwrap_or_else(|_| DEFAULT_LINK.to_owned());
    let link = Link::parse(&text).unwrap_or_else(|e| fail(&format!("SHOAL_LINK: {e}")));
    // The device has no resolver: each tracker must be an IPv4 address and port.
    let trackers: Vec<String> = link
        .trackers
        .iter()
        .map(|t| match t.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(a)) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                format!(
                    "core::net::SocketAddr::V4(core::net::SocketAddrV4::new(core::net::Ipv4Addr::new({a0}, {a1}, {a2}, {a3}), {}))",
                    a.port()
                )
            }
            _ => fail(&format!(
                "SHOAL_LINK: the tracker {t:?} is not an IPv4 address and port (the device cannot resolve names), e.g. tr=10.0.0.1:7070"
            )),
        })
        .collect();
    let consts = format!(
        "/// The file to fetch when the flash holds none (from `SHOAL_LINK`).\n\
         const FILE: proto_core::wire::FileId = proto_core::wire::FileId({:?});\n\
         /// The trackers to ask (from `SHOAL_LINK`).\n\
         const TRACKERS: &[core::net::SocketAddr] = &[{}];\n",
        link.file.0,
        trackers.join(", ")
    );
    fs::write(out.join("link.rs"), consts).expect("OUT_DIR is writable");
}

/// Fails the build with one line saying what to change.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    process::exit(1)
}
