//! posternd integration tests: real namespaces, real nftables, the real fwknop client.

#![allow(clippy::unwrap_used)]

mod commands;
mod config_errors;
mod cycle;
mod lab;
mod layouts;
mod offline;
