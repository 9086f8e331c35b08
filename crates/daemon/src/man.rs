//! posternd's man page and shell completions, generated from the flag definitions in
//! [`crate::cli`] (`posternd --generate-man`, `posternd --generate-completions SHELL`).
//!
//! The page describes every subcommand in its own COMMANDS section (there are no
//! `posternd-status(8)` pages to point at), then adds what clap cannot know: FILES,
//! SIGNALS, EXIT STATUS, EXAMPLES and SEE ALSO. It is plain ASCII roff (anything else is
//! written as a groff `\[uXXXX]` escape), so `groff -man -ww` has nothing to warn about.
//! It does not write any file: the caller prints it.

use clap::CommandFactory as _;

use crate::cli::Cli;

/// The one-line summary of the NAME section.
const SUMMARY: &str = "Single Packet Authorization daemon, compatible with fwknopd 2.6";

/// The sections after OPTIONS and COMMANDS, written by hand. They must say what
/// `main.rs`, `cli.rs` and `selftest.rs` do.
const SECTIONS: &str = r#".SH FILES
.TP
.I /etc/postern/fwknopd.conf
Server settings (see
.BR posternd.conf (5)).
When it does not exist,
.I /etc/fwknop/fwknopd.conf
is read instead, so an fwknop installation keeps working.
.B \-c
names another file.
.TP
.I /etc/postern/access.conf
Access stanzas (see
.BR postern\-access.conf (5)):
by default the file next to fwknopd.conf
.RB ( ACCESS_FILE ,
.BR \-a ).
It holds keys, so it must be readable by its owner only (mode 0600).
.TP
.I /var/lib/postern/digest.cache
The replay store, in fwknopd's digest.cache format
.RB ( DIGEST_FILE ,
.BR \-d ).
.I digest.cache.clean
next to it marks a clean stop.
.TP
.I /run/postern/posternd.pid
The pid file
.RB ( FWKNOP_PID_FILE ,
.BR \-p ).
.TP
.I /run/postern/posternd.sock
The control socket (mode 0600) that
.BR "posternd status" ,
.BR \-S ,
.B \-R
and
.B \-K
talk to
.RB ( CONTROL_SOCKET ).
.TP
.I /run/postern/replay.untrusted
Present when the replay store could not be written; the next start does not trust it.
.TP
.I /lib/systemd/system/posternd.service
The systemd unit (Type=notify, watchdog, sandboxing).
.TP
.I /usr/lib/sysusers.d/postern.conf
Creates the
.B postern
user the unprivileged worker runs as.
.SH SIGNALS
.TP
.B SIGHUP
Re-read fwknopd.conf and access.conf (as
.BR \-R ).
A configuration with an error is refused and the running one stays; open grants are kept.
.TP
.BR SIGTERM ", " SIGINT
Stop: the worker is stopped, and with
.B FLUSH_IPT_AT_EXIT Y
(the default) the grants are removed from the firewall (as
.BR \-K ).
.TP
.B SIGKILL
Nothing is cleaned up, but nothing stays open either: every grant carries its own timeout
in the kernel and closes on time without posternd.
.SH EXIT STATUS
.TP
.B 0
Success: a clean stop, a configuration that
.B \-\-check\-config
finds usable, a request the running posternd answered, a
.B selftest
whose checks all passed.
.TP
.B 1
A configuration error (posternd does not start and leaves the firewall as it was), a
failure to start, a stop caused by a fault, a request the running posternd refused or
could not be reached for, a
.B selftest
check that failed or could not be made.
.TP
.B 2
Invalid command-line arguments.
.TP
.B 130
.B selftest
was interrupted (SIGINT, SIGTERM, SIGHUP) after cleaning up.
.SH EXAMPLES
Check the configuration, then run in the foreground:
.PP
.RS
.nf
posternd \-\-check\-config
posternd \-f
.fi
.RE
.PP
Under systemd:
.PP
.RS
.nf
systemctl enable \-\-now posternd
systemctl reload posternd      # SIGHUP
posternd status
.fi
.RE
.PP
Decide on a capture file and change nothing:
.PP
.RS
.nf
posternd \-\-pcap\-file knock.pcap \-t
.fi
.RE
.PP
Show and close what the firewall holds:
.PP
.RS
.nf
posternd \-\-fw\-list
posternd \-\-fw\-flush
.fi
.RE
.PP
After installing, check that knocking works on this system (as root; nothing outside
throw-away network namespaces is touched):
.PP
.RS
.nf
posternd selftest
.fi
.RE
.SH SEE ALSO
.BR postern (1),
.BR posternd.conf (5),
.BR postern\-access.conf (5),
.BR nft (8),
.BR systemd.service (5)
"#;

/// The man page, section 8.
pub fn page() -> Vec<u8> {
    let mut cmd = Cli::command()
        .about(SUMMARY)
        .subcommand_value_name("COMMAND");
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = String::new();
    out += &piece(|w| man.render_title(w), true, true);
    out += &piece(|w| man.render_name_section(w), false, true);
    out += &piece(|w| man.render_synopsis_section(w), false, true);
    out += &piece(|w| man.render_description_section(w), false, true);
    out += &piece(|w| man.render_options_section(w), false, true);
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        out.push_str(".SH COMMANDS\n");
    }
    for sub in subs {
        let name = format!("posternd {}", sub.get_name());
        out.push_str(&format!(".SS \"{name}\"\n"));
        let sub_man = clap_mangen::Man::new(sub.clone().bin_name(&name));
        out += &piece(|w| sub_man.render_synopsis_section(w), false, false);
        out.push_str(".PP\n");
        out += &piece(|w| sub_man.render_description_section(w), false, false);
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            out += &piece(|w| sub_man.render_options_section(w), false, false);
        }
    }
    out.push_str(SECTIONS);
    out += &piece(|w| man.render_version_section(w), false, true);
    ascii(&out).into_bytes()
}

/// A completion script for `shell` (`bash`, `zsh` or `fish`).
pub fn completions(shell: &str) -> Vec<u8> {
    let sh = match shell {
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        _ => clap_complete::Shell::Bash,
    };
    let mut out = Vec::new();
    clap_complete::generate(sh, &mut Cli::command(), "posternd", &mut out);
    out
}

/// One rendered piece: the apostrophe preamble only in the `first` piece, the `.SH`
/// heading only where the piece is a section of its own (`keep_heading`).
fn piece(
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    first: bool,
    keep_heading: bool,
) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = render(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut s = String::new();
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if (preamble && !first) || (!keep_heading && line.starts_with(".SH ")) {
            continue;
        }
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Write every non-ASCII character as a groff escape.
fn ascii(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            s.push(c);
        } else {
            s.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_points_only_at_pages_that_exist() {
        let page = String::from_utf8(page()).unwrap();
        assert!(!page.contains("posternd\\-status"), "{page}");
        assert!(!page.contains("posternd\\-help"), "{page}");
        assert!(page.contains(".SS \"posternd status\""), "{page}");
        for s in ["FILES", "SIGNALS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"] {
            assert!(page.contains(&format!(".SH {s}")), "no {s}");
        }
        assert!(page.is_ascii());
    }
}
