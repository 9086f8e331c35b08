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
            nat: d.nat,
        })
        .collect()
}

/// Turn an IPv4-mapped IPv6 address into IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    postern_capture::udp::unmap(ip)
}

/// Who a command runs as, resolved once when it is decided (a pending close carries it,
/// so a reload never changes, and a lookup never defaults, the identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// uid and gid to switch to; `None` runs as posternd's own user (root), which is what
    /// a stanza without CMD_EXEC_USER asks for, as in fwknopd.
    pub ids: Option<(u32, u32)>,
    /// For the log: `root`, or the user (and group) names.
    pub name: String,
    /// ENABLE_CMD_SUDO_EXEC: the argv the command follows (`SUDO_EXE -u USER ...`).
    pub prefix: Vec<String>,
}

impl Identity {
    /// Resolve CMD_EXEC_USER / CMD_EXEC_GROUP now; an unknown name is an error.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
        let (mut ids, mut name) = (None, "root".to_owned());
        if let Some(u) = user {
            let id = crate::ids::user(u).ok_or_else(|| format!("no user '{u}'"))?;
            ids = Some((id.uid, id.gid));
            name = u.to_owned();
        }
        if let Some(g) = group {
            let gid = crate::ids::exec_group(g).ok_or_else(|| format!("no group '{g}'"))?;
            let uid = ids.map_or(0, |(u, _)| u);
            ids = Some((uid, gid));
            name = format!("{name}:{g}");
        }
        Ok(Identity {
            ids,
            name,
            prefix: Vec::new(),
        })
    }

    /// Run through sudo (`sudo_exe`, then `args`, then the command), still as this
    /// identity, as fwknopd does with ENABLE_CMD_SUDO_EXEC.
    pub fn through_sudo(mut self, sudo_exe: &std::path::Path, args: &[String]) -> Identity {
        self.prefix = std::iter::once(sudo_exe.display().to_string())
            .chain(args.iter().cloned())
            .collect();
        self.name = format!("{} through {}", self.name, self.prefix.join(" "));
        self
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// Exit status.
    Exited(i32),
    /// Killed by a signal.
    Signalled,
    /// Killed, with its whole process group, after the timeout.
    TimedOut,
    /// Could not be started.
    Failed(String),
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResult::Exited(c) => write!(f, "exited with status {c}"),
            CommandResult::Signalled => f.write_str("killed by a signal"),
            CommandResult::TimedOut => {
                f.write_str("killed at the timeout (with its process group)")
            }
            CommandResult::Failed(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// Run a command text as argv with an empty environment (PATH set to the system
/// directories), as `who`, in a process group of its own that is killed whole after
/// `timeout`.
pub fn run_command(text: &str, who: &Identity, timeout: Duration) -> CommandResult {
    let argv: Vec<&str> = who
        .prefix
        .iter()
        .map(String::as_str)
        .chain(text.split_whitespace())
        .collect();
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
        .current_dir("/")
        .process_group(0);
    if let Some((uid, gid)) = who.ids {
        cmd.uid(uid).gid(gid);
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
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
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

    /// ENABLE_CMD_SUDO_EXEC: SUDO_EXE, its arguments, then the command's words.
    #[test]
    fn through_sudo_prefixes_the_argv() {
        let dir = std::env::temp_dir().join(format!("postern-sudo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sudo = dir.join("sudo");
        let log = dir.join("argv");
        std::fs::write(
            &sudo,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&sudo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let args = crate::config::access::sudo_args(Some("nobody"), Some("daemon"), true);
        let who = Identity::resolve(None, None)
            .unwrap()
            .through_sudo(&sudo, &args);
        assert!(who.name.contains("through"), "{}", who.name);
        assert_eq!(
            run_command("/bin/echo a;  'b c'", &who, Duration::from_secs(5)),
            CommandResult::Exited(0)
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "-u\nnobody\n-g\ndaemon\n/bin/echo\na;\n'b\nc'\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // As fwknopd 2.6.10: root is never passed, and the group only with CMD_EXEC_GROUP.
        let a = crate::config::access::sudo_args;
        assert!(a(Some("root"), Some("root"), true).is_empty());
        assert_eq!(a(None, Some("daemon"), false), Vec::<String>::new());
        assert_eq!(a(None, Some("daemon"), true), ["-g", "daemon"]);
    }

    #[test]
    fn commands_are_argv_not_shell() {
        let root = Identity::resolve(None, None).unwrap();
        assert_eq!(
            run_command("/bin/true", &root, Duration::from_secs(5)),
            CommandResult::Exited(0)
        );
        assert_eq!(
            run_command("/bin/false", &root, Duration::from_secs(5)),
            CommandResult::Exited(1)
        );
        // A shell metacharacter is just an argument.
        assert_eq!(
            run_command("/bin/true ; /bin/false", &root, Duration::from_secs(5)),
            CommandResult::Exited(0)
        );
        assert_eq!(
            run_command("sleep 5", &root, Duration::from_millis(200)),
            CommandResult::TimedOut
        );
        assert!(matches!(
            run_command("/nonexistent", &root, Duration::from_secs(1)),
            CommandResult::Failed(_)
        ));
        assert!(Identity::resolve(Some("no-such-user-x"), None).is_err());
        assert!(Identity::resolve(Some("root"), Some("no-such-group-x")).is_err());
        assert_eq!(
            Identity::resolve(Some("root"), None).unwrap().ids,
            Some((0, 0))
        );
    }

    #[test]
    fn a_timed_out_command_takes_its_process_group_with_it() {
        let root = Identity::resolve(None, None).unwrap();
        let dir = std::env::temp_dir().join(format!("postern-pg-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mark = dir.join("grandchild-ran");
        // The grandchild would write the mark after 1 s: killed with the group, it never does.
        let script = dir.join("spawn.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n(sleep 1; touch {}) &\nsleep 30\n",
                mark.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let text = format!("/bin/sh {}", script.display());
        assert_eq!(
            run_command(&text, &root, Duration::from_millis(300)),
            CommandResult::TimedOut
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !mark.exists(),
            "the command's background child outlived the timeout"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
