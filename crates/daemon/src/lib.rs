//! posternd: the SPA daemon. It reads fwknop's `fwknopd.conf` and `access.conf`, sees
//! SPA packets even though the firewall drops them, and opens the requested port for the
//! requesting address only, for a limited time, in nftables sets whose elements expire
//! in the kernel.
//!
//! ```text
//!  capture ─► decode ─► replay check ─► authorize ─► apply ─► expire
//!  (main.rs)  pure       ReplayStore     pure         fw/cmd    kernel timeouts, Ledger
//! ```
//!
//! `main.rs` is the wiring (sockets, threads, signals); [`daemon::Daemon`] holds the
//! state and runs one datagram at a time through [`pipeline`].

#![forbid(unsafe_code)]

pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod firewall;
pub mod fleet;
pub mod ids;
pub mod log;
pub mod man;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod privsep;
pub mod replay;
pub mod selftest;
pub mod service;
pub mod setup;
