//! posternd integration tests: real namespaces, real nftables, the real fwknop client.

#![allow(clippy::unwrap_used)]

mod alerts;
mod backends;
mod commands;
mod config_errors;
mod cycle;
mod faults;
mod firewalld;
mod fleet;
mod fwknopd_compat;
mod hostile;
mod iptables_plain;
mod lab;
mod layouts;
mod logs;
mod manpages;
mod metrics;
mod nat;
mod offline;
mod package;
mod privsep;
mod selftest;
mod setup;
mod systemd;
