//! Stage 4: acting on a decision. Grants become firewall changes (all or nothing);
//! commands run as argv (split on whitespace, never through a shell), with an empty
//! environment, as CMD_EXEC_USER/CMD_EXEC_GROUP, and are killed after a timeout.

use std::net::IpAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_fw::Grant;

use super::authorize::GrantDecision;

/// The firewall grants a decision asks for.
pub fn grants(d: &GrantDecision) -> Vec<Grant> {
    d.ports
        .iter()
        .map(|p| Grant {
            source: d.allow,
            proto: p.proto,
            port: p.port,
            timeout: Duration::from_secs(d.timeout),
        })
        .collect()
}

/// Turn an IPv4-mapped IPv6 address into IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    postern_capture::udp::unmap(ip)
}

/// Look a user up in /etc/passwd: (uid, primary gid).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Look a group up in /etc/group.
pub fn group_id(name: &str) -> Option<u32> {
    let group = std::fs::read_to_string("/etc/group").ok()?;
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// Exit status.
    Exited(i32),
    /// Killed by a signal.
    Signalled,
    /// Killed after the timeout.
    TimedOut,
    /// Could not be started.
    Failed(String),
}

/// Run a command text as argv with an empty environment (PATH set to the system
/// directories), optionally as another user/group, killed after `timeout`.
pub fn run_command(
    text: &str,
    user: Option<&str>,
    group: Option<&str>,
    timeout: Duration,
) -> CommandResult {
    let argv: Vec<&str> = text.split_whitespace().collect();
    let Some((prog, args)) = argv.split_first() else {
        return CommandResult::Failed("empty command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    if let Some(u) = user {
        let Some((uid, gid)) = user_ids(u) else {
            return CommandResult::Failed(format!("no user '{u}'"));
        };
        cmd.uid(uid).gid(gid);
    }
    if let Some(g) = group {
        let Some(gid) = group_id(g) else {
            return CommandResult::Failed(format!("no group '{g}'"));
        };
        cmd.gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return CommandResult::Failed(e.to_string()),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return st
                    .code()
                    .map_or(CommandResult::Signalled, CommandResult::Exited)
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return CommandResult::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return CommandResult::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_argv_not_shell() {
        assert_eq!(
            run_command("/bin/true", None, None, Duration::from_secs(5)),
            CommandResult::Exited(0)
        );
        assert_eq!(
            run_command("/bin/false", None, None, Duration::from_secs(5)),
            CommandResult::Exited(1)
        );
        // A shell metacharacter is just an argument.
        assert_eq!(
            run_command("/bin/true ; /bin/false", None, None, Duration::from_secs(5)),
            CommandResult::Exited(0)
        );
        assert_eq!(
            run_command("sleep 5", None, None, Duration::from_millis(200)),
            CommandResult::TimedOut
        );
        assert!(matches!(
            run_command("/nonexistent", None, None, Duration::from_secs(1)),
            CommandResult::Failed(_)
        ));
        assert!(matches!(
            run_command(
                "/bin/true",
                Some("no-such-user-x"),
                None,
                Duration::from_secs(1)
            ),
            CommandResult::Failed(_)
        ));
        assert_eq!(user_ids("root"), Some((0, 0)));
    }
}
