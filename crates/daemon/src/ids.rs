//! The one place users and groups are looked up (through the system's name service,
//! `getpwnam_r`/`getgrnam_r` by way of `nix`), for the worker's user and for the
//! identity commands run as; and what the kernel says of a process (`/proc`).

/// A user's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Look a user up by name.
pub fn user(name: &str) -> Option<UserIds> {
    let u = nix::unistd::User::from_name(name).ok()??;
    Some(UserIds {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// Look a group up by name.
pub fn group(name: &str) -> Option<u32> {
    Some(nix::unistd::Group::from_name(name).ok()??.gid.as_raw())
}

/// `CMD_EXEC_GROUP` as fwknopd 2.6 resolves it: a group of that name, else the primary
/// group of the user of that name (`nobody` on Debian, whose group is `nogroup`).
pub fn exec_group(name: &str) -> Option<u32> {
    group(name).or_else(|| user(name).map(|u| u.gid))
}

/// The name of a uid (the number itself when it has none).
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// What the kernel says of a process: its user, its seccomp mode and `no_new_privs`
/// (from `/proc/PID/status`, not from anything the process claims).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcState {
    /// User name (or uid).
    pub user: String,
    /// Seccomp mode: 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// `no_new_privs`.
    pub no_new_privs: bool,
}

/// Read [`ProcState`] of `pid`.
pub fn process(pid: u32) -> ProcState {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let uid: Option<u32> = field("Uid:")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok());
    ProcState {
        user: uid.map_or_else(|| "?".into(), user_name),
        seccomp: field("Seccomp:").parse().unwrap_or(0),
        no_new_privs: field("NoNewPrivs:") == "1",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_found() {
        assert_eq!(super::user("root").map(|u| u.uid), Some(0));
        assert_eq!(super::group("root"), Some(0));
        assert_eq!(super::user_name(0), "root");
        assert!(super::user("no-such-user-x").is_none());
    }
}
