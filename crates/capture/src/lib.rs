//! postern-capture: getting SPA payloads off the wire.
//!
//! ```text
//!  AF_PACKET socket (+ kernel BPF from PCAP_FILTER) ──────┐
//!  UDP socket on the SPA port ───────────────────────────┼─► Datagram { src, dst, proto, payload }
//!  pcap file (offline) ──────────────────────────────────┘
//!  TCP server (ENABLE_TCP_SERVER): accepts and closes, so `-P tcp` handshakes complete
//! ```
//!
//! The AF_PACKET path sees packets before the firewall drops them, without a listening
//! socket and without libpcap. The frame parser is pure and total (fuzzed); the only
//! `unsafe` code of the workspace is the few syscalls in [`afpacket`] and
//! [`set_receive_buffer`], behind a safe API.
//! Nothing here decodes SPA: payloads are handed on as bytes.

#[allow(unsafe_code)]
pub mod afpacket;
pub mod filter;
pub mod frame;
pub mod pcapfile;
pub mod tcp;
pub mod udp;

pub use frame::Datagram;

/// Ask for a receive buffer of `bytes` on `fd`: `SO_RCVBUFFORCE` (past the system
/// limit; needs CAP_NET_ADMIN), else `SO_RCVBUF` (capped by `net.core.rmem_max`).
/// A larger buffer absorbs bursts and floods instead of dropping. Returns the size the
/// kernel reports afterwards.
#[allow(unsafe_code)]
pub fn set_receive_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `want` is a valid c_int for reads of `size` bytes.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                size,
            )
        };
        if rc == 0 {
            break;
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = size;
    // SAFETY: `got` is valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(got).unwrap_or(0))
}
