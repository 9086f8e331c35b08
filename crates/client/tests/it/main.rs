//! Integration tests of the `postern` binary.

#![allow(clippy::unwrap_used)]

mod cli;
mod decode;
mod fwknop_compat;
mod fwknopd_interop;
mod transport;
