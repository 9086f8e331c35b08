//! postern-capture integration tests: the filter compiler against libpcap (tcpdump) and
//! against the kernel (a packet socket in a network namespace).

#![allow(clippy::unwrap_used, missing_docs)]

mod filter;
