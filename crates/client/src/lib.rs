//! postern's client library: fwknop-compatible flags, rc files, knock planning and
//! sending, `decode` and `keygen`. The `postern` binary is a thin wrapper around it; the
//! fuzz targets use its parsers.

#![forbid(unsafe_code)]

pub mod args;
pub mod cli;
pub mod decode;
pub mod keygen;
pub mod knock;
pub mod plan;
pub mod raw;
pub mod rc;
pub mod resolve;
pub mod save;
pub mod send;
pub mod settings;
