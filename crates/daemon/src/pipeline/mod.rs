//! The daemon's pipeline, one file per stage:
//!
//! ```text
//!  capture ─► decode ─► (replay check) ─► authorize ─► apply ─► expire
//!  sockets    pure       store lookup      pure         firewall  kernel timeouts +
//!  (Source)                                             commands  bookkeeping
//! ```
//!
//! `decode` and `authorize` are pure: bytes, configuration and `now` in, a
//! [`authorize::Decision`] out. Only `apply` touches the firewall or runs commands.

pub mod apply;
pub mod authorize;
pub mod capture;
pub mod decode;
pub mod expire;
pub mod refusals;
