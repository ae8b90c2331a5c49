//! The one place the core logs through: `defmt` on a device, `log` on a host, nothing otherwise.
//!
//! Both features at once is a build error, so a firmware image never pays for two loggers.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("proto-core: enable at most one of the `defmt` and `log` features");

macro_rules! trace {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::trace!($($arg)*);
        #[cfg(feature = "log")]
        log::trace!($($arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        { let _ = ($($arg)*); }
    }};
}

macro_rules! debug {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::debug!($($arg)*);
        #[cfg(feature = "log")]
        log::debug!($($arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        { let _ = ($($arg)*); }
    }};
}

macro_rules! warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::warn!($($arg)*);
        #[cfg(feature = "log")]
        log::warn!($($arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        { let _ = ($($arg)*); }
    }};
}
