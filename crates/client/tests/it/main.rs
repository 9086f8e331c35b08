//! Integration tests of the `postern` binary.

#![allow(clippy::unwrap_used)]

mod decode;
