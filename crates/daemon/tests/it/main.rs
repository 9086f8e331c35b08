//! posternd integration tests: real namespaces, real nftables, the real fwknop client.

#![allow(clippy::unwrap_used)]

mod backends;
mod commands;
mod config_errors;
mod cycle;
mod faults;
mod firewalld;
mod fleet;
mod hostile;
mod lab;
mod layouts;
mod nat;
mod offline;
mod privsep;
mod systemd;
