//! Privilege separation: the process that reads packets from the network runs as its
//! own unprivileged user, without capabilities, with `no_new_privs`, Landlock denying
//! it the filesystem and a seccomp allow-list; the privileged part trusts nothing it says.
//!
//! ```text
//!  posternd (root: firewall, replay store, commands, control socket)
//!     │  spawns ──► posternd --worker: read config, open capture sockets, read the
//!     │             replay store (a filter), drop to WORKER_USER, Landlock, seccomp
//!     │◄── ready {landlock, seccomp}
//!     │◄── candidate {hint, src, dst, received, payload}   only packets whose HMAC matched
//!     │◄── stats {examined, dropped, refused{label: n}}
//!     ▼
//!  for each candidate: decode ─► replay ─► authorize (every stanza, its own clock and
//!  configuration, HMAC again, decryption) ─► record ─► apply. Nothing else is used.
//! ```
//!
//! The worker's value is that junk, and every byte that is not authenticated, is
//! handled only there: the privileged part parses only packets that carry a valid HMAC
//! (one HMAC and one decryption per accepted packet when one stanza matches the
//! source). A compromised worker can withhold packets, or claim a source address for a
//! genuine, fresh packet (which anyone on the path can do by spoofing; that is what
//! `REQUIRE_SOURCE_ADDRESS` is for); it cannot make the privileged part open, run or
//! record anything a genuine packet would not.
//!
//! * [`protocol`]: the messages, bounded lines, closed label set.
//! * [`parent`]: the privileged side (spawn, read, restart with backoff).
//! * [`worker`]: the unprivileged side.

pub mod parent;
pub mod protocol;
pub mod worker;

use protocol::Sandbox;

/// The user the worker runs as: `configured`, else `postern` if it exists, else
/// `nobody` (with a warning: other services may run as `nobody` and could signal it).
pub fn worker_user(configured: Option<&str>) -> (String, Option<String>) {
    if let Some(u) = configured {
        return (u.to_owned(), None);
    }
    if crate::ids::user("postern").is_some() {
        ("postern".into(), None)
    } else {
        (
            "nobody".into(),
            Some(
                "no system user 'postern' (create it: useradd --system --no-create-home --shell /usr/sbin/nologin postern); the worker runs as 'nobody', whose other processes could signal it".into(),
            ),
        )
    }
}

/// Become `user` for good: supplementary groups, gid and uid changed (which drops every
/// capability), `no_new_privs` set, and a check that root cannot be regained.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let id = crate::ids::user(user).ok_or_else(|| format!("no user '{user}'"))?;
    if id.uid == 0 {
        return Err(format!("WORKER_USER '{user}' is root"));
    }
    let (u, g) = (Uid::from_raw(id.uid), Gid::from_raw(id.gid));
    setgroups(&[g]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(g, g, g).map_err(|e| format!("setresgid: {e}"))?;
    setresuid(u, u, u).map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err("root could be regained after dropping privileges".into());
    }
    Ok(())
}

/// Deny this thread (and every thread it starts) all filesystem access with Landlock,
/// where the kernel has it (why not, when it does not).
pub fn deny_filesystem() -> (Sandbox, Option<String>) {
    use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V5))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match status {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => (Sandbox::Enforced, None),
            RulesetStatus::PartiallyEnforced => (Sandbox::Partial, None),
            RulesetStatus::NotEnforced => (
                Sandbox::NotAvailable,
                Some("Landlock is not enforced by this kernel".into()),
            ),
        },
        Err(e) => (Sandbox::NotAvailable, Some(format!("Landlock: {e}"))),
    }
}

/// The system calls the worker makes once its sockets are open and its threads run:
/// receiving, accepting (and closing) the TCP server's connections, writing lines,
/// waiting, allocating, and exiting. Everything else (open, socket, connect, execve,
/// ptrace, kill, ...) kills the worker.
const WORKER_SYSCALLS: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendto,
    libc::SYS_getsockopt,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rseq,
    libc::SYS_restart_syscall,
    libc::SYS_set_robust_list,
    libc::SYS_getrandom,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_close,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// System calls that fail with `EACCES` instead of killing the worker: the C library
/// may open files on its own (glibc's malloc reads `/sys/devices/system/cpu/online`
/// when it creates an arena under contention; the worker also runs with
/// `MALLOC_ARENA_MAX=1`). Landlock would refuse them anyway; here they are refused
/// whatever the kernel has.
const WORKER_REFUSED: &[i64] = &[libc::SYS_open, libc::SYS_openat];

/// Install the worker's seccomp filters on every thread of the process (TSYNC): file
/// opens fail with `EACCES`, anything else outside [`WORKER_SYSCALLS`] kills the process.
/// Call once every thread has started. (Stacked filters: the stricter answer wins, so
/// the opens, allowed by the second filter, get the first one's `EACCES`.)
pub fn restrict_syscalls() -> Result<Sandbox, String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch: TargetArch = std::env::consts::ARCH.try_into().map_err(|_| {
        format!(
            "seccomp: unsupported architecture {}",
            std::env::consts::ARCH
        )
    })?;
    let build = |calls: &[i64], mismatch, matched| -> Result<BpfProgram, String> {
        let rules = calls.iter().map(|n| (*n, Vec::new())).collect();
        SeccompFilter::new(rules, mismatch, matched, arch)
            .map_err(|e| format!("seccomp: {e}"))?
            .try_into()
            .map_err(|e| format!("seccomp: {e}"))
    };
    let refuse = build(
        WORKER_REFUSED,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
    )?;
    let allowed: Vec<i64> = WORKER_SYSCALLS
        .iter()
        .chain(WORKER_REFUSED)
        .copied()
        .collect();
    let allow = build(&allowed, SeccompAction::KillProcess, SeccompAction::Allow)?;
    seccompiler::apply_filter_all_threads(&refuse).map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter_all_threads(&allow).map_err(|e| format!("seccomp: {e}"))?;
    Ok(Sandbox::Enforced)
}
