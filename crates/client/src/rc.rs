//! The rc file (`~/.fwknoprc`): `[stanza]` headers and `NAME value` lines, read the way
//! fwknop 2.6.10 reads them, and rewritten by `--save-rc-stanza` the way fwknop rewrites
//! them (comments and blank lines, which fwknop drops, are kept).
//!
//! Syntax: `#` or `;` starts a comment line. A variable line is its name, optionally
//! followed by `:` (so a `KEY_BASE64: ...` line pasted from `--key-gen` works), then the
//! value, which ends at whitespace, `;` or `#`, so values cannot contain spaces (keys
//! that do are saved as base64). As in fwknop, only `[default]` and the stanza that is
//! used are checked: an unknown variable or a missing value there is an error, anything
//! in the other stanzas is ignored. A stanza that appears twice is read in file order.
//!
//! ```text
//!  text ─► parse ─► RcFile { stanzas: [Stanza { name, settings, problems }] }
//!                     └─► section("default"), section(name): merged, or the first problem
//!  text ─► asked_lines(name) ─► prompt ─► save_stanza(name, keep, entries) ─► text
//! ```

use std::fmt;
use std::path::Path;

use crate::settings::{Origin, Setting, Settings, Var};

/// One stanza as read from the file.
#[derive(Debug, Clone, Default)]
pub struct Stanza {
    /// The name between brackets.
    pub name: String,
    /// Settings, each with the line it came from.
    pub settings: Settings,
    /// What is wrong in it (unknown variables, missing values), with file:line; an
    /// error only if the stanza is used.
    pub problems: Vec<String>,
}

/// A parsed rc file.
#[derive(Debug, Clone, Default)]
pub struct RcFile {
    /// Stanzas in file order.
    pub stanzas: Vec<Stanza>,
}

/// A fatal rc-file problem, with its file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcError {
    /// Formatted `file:line: message`.
    pub message: String,
}

impl fmt::Display for RcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The value part of a `NAME value` line: up to whitespace, `;` or `#`.
fn value_of(rest: &str) -> &str {
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ';' || c == '#')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A `[name]` header, if this line is one: the text between `[` and the first `]`,
/// as fwknop takes it (leading blanks and anything after the `]` are ignored).
pub fn header(line: &str) -> Option<&str> {
    let t = line.trim_start().strip_prefix('[')?;
    t.find(']').map(|end| &t[..end])
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

/// The variable a line sets: its first word, without one trailing `:`.
fn var_name(line: &str) -> &str {
    let t = line.trim_start();
    let word = &t[..t.find(char::is_whitespace).unwrap_or(t.len())];
    word.strip_suffix(':').unwrap_or(word)
}

/// Parse rc text. Problems are recorded in their stanza and only matter if the stanza
/// is used ([`RcFile::section`]); lines outside any stanza are ignored, as in fwknop.
pub fn parse(text: &str, path: &Path) -> Result<RcFile, RcError> {
    let mut rc = RcFile::default();
    let shown = path.display();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if is_comment(line) {
            continue;
        }
        if let Some(name) = header(line) {
            rc.stanzas.push(Stanza {
                name: name.to_owned(),
                ..Stanza::default()
            });
            continue;
        }
        let Some(stanza) = rc.stanzas.last_mut() else {
            continue;
        };
        let t = line.trim_start();
        let word_end = t.find(char::is_whitespace).unwrap_or(t.len());
        let name = var_name(t);
        let Some(var) = Var::by_rc_name(name) else {
            let glued = name
                .split_once(':')
                .and_then(|(v, _)| Var::by_rc_name(v))
                .map(|v| format!(" (to set {}, put a space after the ':')", v.rc_name))
                .unwrap_or_default();
            stanza.problems.push(format!(
                "{shown}:{n}: unknown variable '{name}' in [{}]{glued}",
                stanza.name
            ));
            continue;
        };
        let value = value_of(&t[word_end..]);
        if value.is_empty() {
            stanza.problems.push(format!(
                "{shown}:{n}: {}: no value (a value ends at whitespace, ';' or '#')",
                var.rc_name
            ));
            continue;
        }
        stanza.settings.set(
            var,
            Setting {
                value: value.to_owned(),
                origin: Origin::Rc {
                    path: path.to_owned(),
                    line: n,
                    var: var.rc_name,
                },
            },
        );
    }
    Ok(rc)
}

impl RcFile {
    /// The first stanza with this name, if present.
    pub fn stanza(&self, name: &str) -> Option<&Stanza> {
        self.stanzas.iter().find(|s| s.name == name)
    }

    /// The settings of every stanza called `name`, later lines winning; `None` if there
    /// is none; the first problem in any of them as an error (the stanza is used).
    pub fn section(&self, name: &str) -> Result<Option<Settings>, RcError> {
        let mut found = None;
        for s in self.stanzas.iter().filter(|s| s.name == name) {
            if let Some(p) = s.problems.first() {
                return Err(RcError { message: p.clone() });
            }
            found
                .get_or_insert_with(Settings::default)
                .overlay(&s.settings);
        }
        Ok(found)
    }
}

/// The stanza names `--stanza-list` shows: file order, `[default]` left out.
pub fn stanza_names(rc: &RcFile) -> Vec<&str> {
    rc.stanzas
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| *n != "default")
        .collect()
}

/// What `--stanza-list` prints, fwknop's layout.
pub fn stanza_list(rc: &RcFile, path: &Path) -> String {
    let mut out = format!(
        "The following stanzas are configured in {} :",
        path.display()
    );
    for name in stanza_names(rc) {
        out.push_str(&format!("\n - {name}"));
    }
    out
}

/// A line of an existing stanza that `--save-rc-stanza` asks about before replacing
/// (keys and GnuPG identities; see [`Var::asked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskedLine {
    /// 0-based line index in the text.
    pub index: usize,
    /// The variable it sets.
    pub var: Var,
}

/// Whether line `i` of `lines` is inside a stanza called `name`.
fn in_stanza(lines: &[&str], name: &str) -> Vec<bool> {
    let mut inside = false;
    lines
        .iter()
        .map(|l| {
            if let Some(h) = header(l) {
                inside = h == name;
                false
            } else {
                inside
            }
        })
        .collect()
}

/// The asked-about variable lines of stanza `name`, in file order.
pub fn asked_lines(text: &str, name: &str) -> Vec<AskedLine> {
    let lines: Vec<&str> = text.lines().collect();
    let inside = in_stanza(&lines, name);
    lines
        .iter()
        .enumerate()
        .filter(|&(i, l)| inside[i] && !is_comment(l))
        .filter_map(|(index, l)| {
            Var::by_rc_name(var_name(l))
                .filter(|v| v.asked)
                .map(|var| AskedLine { index, var })
        })
        .collect()
}

/// One line of a saved stanza, fwknop's `%-24s    %s` layout.
pub fn stanza_line(var: &str, value: &str) -> String {
    format!("{var:<24}    {value}")
}

/// The rc text after `--save-rc-stanza` wrote `entries` into stanza `name`, as fwknop
/// writes it: the stanza's variable lines are replaced by the entries, except the lines
/// at the `keep` indices (asked about and kept), which stay first; a missing stanza is
/// appended after a blank line; a stanza followed by more text ends with a blank line.
/// Unlike fwknop, comment lines are kept, and other stanzas keep their blank lines.
/// `text` is `None` when there is no rc file yet: fwknop starts one with `[default]`.
pub fn save_stanza(
    text: Option<&str>,
    name: &str,
    keep: &[usize],
    entries: &[(&'static str, String)],
) -> String {
    let text = text.unwrap_or("[default]\n");
    let lines: Vec<&str> = text.lines().collect();
    let inside = in_stanza(&lines, name);
    let new_lines: Vec<String> = entries.iter().map(|(v, val)| stanza_line(v, val)).collect();
    let mut out: Vec<String> = Vec::new();
    let mut written = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if header(line) != Some(name) {
            out.push(line.to_owned());
            i += 1;
            continue;
        }
        out.push(line.to_owned());
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && inside[end] {
            end += 1;
        }
        // Comments and blank lines after the last variable line belong to what follows.
        let mut body_end = end;
        while body_end > start && is_comment(lines[body_end - 1]) {
            body_end -= 1;
        }
        let body = start..body_end;
        out.extend(
            body.clone()
                .filter(|&j| is_comment(lines[j]) && !lines[j].trim().is_empty())
                .map(|j| lines[j].to_owned()),
        );
        out.extend(
            body.filter(|j| keep.contains(j))
                .map(|j| lines[j].to_owned()),
        );
        if !written {
            out.extend(new_lines.iter().cloned());
            written = true;
        }
        let tail: Vec<&str> = lines[body_end..end].to_vec();
        let has_comment = tail.iter().any(|l| !l.trim().is_empty());
        if end < lines.len() || has_comment {
            out.push(String::new());
        }
        if has_comment {
            let first = tail.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
            out.extend(tail[first..].iter().map(|l| (*l).to_owned()));
        }
        i = end;
    }
    if !written {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        out.push(format!("[{name}]"));
        out.extend(new_lines);
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_EXAMPLE: &str = "\
# fwknop's documented example
[default]
DIGEST_TYPE         sha256 ; comment after a value
SPA_SERVER_PROTO    udp
SPA_SERVER_PORT     62201

[myssh]
SPA_SERVER          myserver.example.com
ACCESS              tcp/22
ALLOW_IP            resolve
KEY_BASE64:         wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64:    Yhu4VfZyWpcyh0nV8TJxSYPeNbbO0/AVSBhtSWu/jYMxxSpyzZn/I2B3aCyzKPlVK+WwZyH3bIxG+e5zBWy9ag==
USE_HMAC            Y
";

    fn section(rc: &RcFile, name: &str) -> Settings {
        rc.section(name).unwrap().unwrap()
    }

    #[test]
    fn parses_documented_example_with_pasted_keygen_lines() {
        let rc = parse(DOC_EXAMPLE, Path::new("rc")).unwrap();
        assert_eq!(stanza_names(&rc), ["myssh"]);
        let d = section(&rc, "default");
        assert_eq!(d.value("DIGEST_TYPE"), Some("sha256"));
        let s = section(&rc, "myssh");
        assert_eq!(s.value("ALLOW_IP"), Some("resolve"));
        assert_eq!(s.value("USE_HMAC"), Some("Y"));
        assert_eq!(
            s.value("KEY_BASE64"),
            Some("wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=")
        );
    }

    #[test]
    fn problems_matter_only_in_stanzas_that_are_used() {
        let text = "NAME x\n[a]\nBOGUS_VAR 1\n[b]\nACCESS\n[c]\nDIGEST_TYPE #\n[d]\nspa_server x\n[e]\nKEY_BASE64:QQ\n[ok]\nACCESS tcp/1\n";
        let rc = parse(text, Path::new("f")).unwrap();
        let err = |n: &str| rc.section(n).unwrap_err().message;
        assert_eq!(err("a"), "f:3: unknown variable 'BOGUS_VAR' in [a]");
        assert_eq!(
            err("b"),
            "f:5: ACCESS: no value (a value ends at whitespace, ';' or '#')"
        );
        assert_eq!(
            err("c"),
            "f:7: DIGEST_TYPE: no value (a value ends at whitespace, ';' or '#')"
        );
        assert_eq!(err("d"), "f:9: unknown variable 'spa_server' in [d]");
        assert_eq!(
            err("e"),
            "f:11: unknown variable 'KEY_BASE64:QQ' in [e] (to set KEY_BASE64, put a space after the ':')"
        );
        assert_eq!(section(&rc, "ok").value("ACCESS"), Some("tcp/1"));
        assert!(rc.section("missing").unwrap().is_none());
    }

    #[test]
    fn headers_and_repeated_stanzas() {
        let rc = parse(
            "[default]\nSPOOF_USER one\n [b c]\n[g]x\n[default]\nSPOOF_USER two\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(stanza_names(&rc), ["b c", "g"]);
        assert_eq!(section(&rc, "default").value("SPOOF_USER"), Some("two"));
        assert_eq!(
            stanza_list(&rc, Path::new("/h/.fwknoprc")),
            "The following stanzas are configured in /h/.fwknoprc :\n - b c\n - g"
        );
    }

    fn entries(v: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        v.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn save_replaces_the_stanza_and_keeps_the_rest() {
        let out = save_stanza(
            Some(DOC_EXAMPLE),
            "myssh",
            &[],
            &entries(&[("ACCESS", "tcp/2222"), ("FW_TIMEOUT", "60")]),
        );
        assert!(!out.contains("wzNP62oPPgEc"), "keys not kept: {out}");
        assert!(!out.contains("myserver.example.com"), "stanza replaced");
        assert!(out.starts_with("# fwknop's documented example\n[default]\n"));
        assert!(out.contains("DIGEST_TYPE         sha256 ; comment after a value\n"));
        assert!(out.ends_with(
            "[myssh]\nACCESS                      tcp/2222\nFW_TIMEOUT                  60\n"
        ));
        // Kept lines stay, first.
        let keep: Vec<usize> = asked_lines(DOC_EXAMPLE, "myssh")
            .iter()
            .map(|a| a.index)
            .collect();
        assert_eq!(keep.len(), 2);
        let out = save_stanza(
            Some(DOC_EXAMPLE),
            "myssh",
            &keep,
            &entries(&[("ACCESS", "tcp/1")]),
        );
        assert!(out.contains("[myssh]\nKEY_BASE64:         wzNP"), "{out}");
        // A new stanza is appended after a blank line, the others are untouched.
        let out2 = save_stanza(Some(&out), "web", &[], &entries(&[("ACCESS", "tcp/443")]));
        assert_eq!(
            out2,
            format!("{out}\n[web]\nACCESS                      tcp/443\n")
        );
        // No file yet: fwknop's starting point.
        assert_eq!(
            save_stanza(None, "s1", &[], &entries(&[("KEY", "k")])),
            "[default]\n\n[s1]\nKEY                         k\n"
        );
    }

    #[test]
    fn save_in_the_middle_ends_with_a_blank_line() {
        let text = "[a]\nACCESS tcp/1\n# about a\nKEY x\n\n# about b\n[b]\nACCESS tcp/2\n";
        let out = save_stanza(Some(text), "a", &[], &entries(&[("ACCESS", "tcp/9")]));
        assert_eq!(
            out,
            "[a]\n# about a\nACCESS                      tcp/9\n\n# about b\n[b]\nACCESS tcp/2\n"
        );
    }
}
