//! Integration tests of postern-proto: real fwknop vectors, negative vectors, the real
//! fwknop client at test time, and property tests.

#![allow(clippy::unwrap_used)]

mod common;
mod negative;
mod props;
mod real_fwknop;
mod vectors;
