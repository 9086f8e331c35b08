//! The rc file (`~/.fwknoprc`): `[stanza]` headers and `NAME value` lines, read the way
//! fwknop reads them, and updated in place by `--save-rc-stanza` without touching other
//! stanzas or comments.
//!
//! Syntax: `#` or `;` starts a comment line; a value ends at whitespace, `;`, `#` or the
//! end of the line, so values cannot contain spaces (keys that do are saved as base64).

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
}

/// A parsed rc file.
#[derive(Debug, Clone, Default)]
pub struct RcFile {
    /// Stanzas in file order.
    pub stanzas: Vec<Stanza>,
    /// Non-fatal problems (unknown variables...), already formatted with file:line.
    pub warnings: Vec<String>,
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

/// A `[name]` header, if this line is one.
fn header(line: &str) -> Option<&str> {
    let t = line.trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

/// Parse rc text. Unknown variables and lines outside a stanza are warnings (fwknop
/// ignores them too); a stanza header without a name is an error.
pub fn parse(text: &str, path: &Path) -> Result<RcFile, RcError> {
    let mut rc = RcFile::default();
    let shown = path.display();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if is_comment(line) {
            continue;
        }
        if let Some(name) = header(line) {
            if name.is_empty() {
                return Err(RcError {
                    message: format!("{shown}:{n}: empty stanza name '[]'"),
                });
            }
            rc.stanzas.push(Stanza {
                name: name.to_owned(),
                settings: Settings::default(),
            });
            continue;
        }
        let t = line.trim_start();
        let split = t.find(char::is_whitespace).unwrap_or(t.len());
        let (name, rest) = t.split_at(split);
        let Some(stanza) = rc.stanzas.last_mut() else {
            rc.warnings.push(format!(
                "{shown}:{n}: '{name}' is outside any [stanza]; ignored"
            ));
            continue;
        };
        let Some(var) = Var::by_rc_name(&name.to_ascii_uppercase()) else {
            rc.warnings
                .push(format!("{shown}:{n}: unknown variable '{name}'; ignored"));
            continue;
        };
        let value = value_of(rest);
        if value.is_empty() {
            rc.warnings.push(format!(
                "{shown}:{n}: {} has no value; ignored",
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
    /// The stanza with this name, if present.
    pub fn stanza(&self, name: &str) -> Option<&Stanza> {
        self.stanzas.iter().find(|s| s.name == name)
    }
}

/// Write `entries` into stanza `name` of the rc `text`: lines of existing variables are
/// replaced in place, new ones are added at the end of the stanza, a missing stanza is
/// appended; lines of the `remove` variables in that stanza are dropped (alternatives of
/// what is written, such as KEY_BASE64 when KEY is saved). Everything else (other
/// stanzas, comments, blank lines) is kept as it was.
pub fn save_stanza(
    text: &str,
    name: &str,
    entries: &[(&'static str, String)],
    remove: &[&str],
) -> String {
    let var_of = |l: &str| -> Option<String> {
        (!is_comment(l) && header(l).is_none()).then(|| {
            l.split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase()
        })
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(start) = lines.iter().position(|l| header(l) == Some(name)) {
        let mut i = start + 1;
        while i < lines.len() && header(&lines[i]).is_none() {
            if var_of(&lines[i]).is_some_and(|v| remove.contains(&v.as_str())) {
                lines.remove(i);
            } else {
                i += 1;
            }
        }
    }
    let fmt_line = |var: &str, value: &str| format!("{var:<24}    {value}");
    let start = lines.iter().position(|l| header(l) == Some(name));
    let Some(start) = start else {
        if lines.last().is_some_and(|l| !l.trim().is_empty()) {
            lines.push(String::new());
        }
        lines.push(format!("[{name}]"));
        lines.extend(entries.iter().map(|(v, val)| fmt_line(v, val)));
        return lines.join("\n") + "\n";
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| header(l).is_some())
        .map_or(lines.len(), |p| start + 1 + p);
    let mut insert_at = end;
    while insert_at > start + 1 && lines[insert_at - 1].trim().is_empty() {
        insert_at -= 1;
    }
    let mut added = Vec::new();
    for (var, value) in entries {
        let existing = (start + 1..end).find(|&i| {
            let l = &lines[i];
            !is_comment(l)
                && l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(var))
        });
        match existing {
            Some(i) => lines[i] = fmt_line(var, value),
            None => added.push(fmt_line(var, value)),
        }
    }
    let tail = lines.split_off(insert_at);
    lines.extend(added);
    lines.extend(tail);
    lines.join("\n") + "\n"
}

/// The stanza names, in file order.
pub fn stanza_names(rc: &RcFile) -> Vec<&str> {
    rc.stanzas.iter().map(|s| s.name.as_str()).collect()
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
KEY_BASE64          wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64     Yhu4VfZyWpcyh0nV8TJxSYPeNbbO0/AVSBhtSWu/jYMxxSpyzZn/I2B3aCyzKPlVK+WwZyH3bIxG+e5zBWy9ag==
USE_HMAC            Y
";

    #[test]
    fn parses_documented_example() {
        let rc = parse(DOC_EXAMPLE, Path::new("rc")).unwrap();
        assert_eq!(stanza_names(&rc), ["default", "myssh"]);
        let d = &rc.stanza("default").unwrap().settings;
        assert_eq!(d.value("DIGEST_TYPE"), Some("sha256"));
        let s = &rc.stanza("myssh").unwrap().settings;
        assert_eq!(s.value("ALLOW_IP"), Some("resolve"));
        assert_eq!(s.value("USE_HMAC"), Some("Y"));
        assert!(rc.warnings.is_empty(), "{:?}", rc.warnings);
    }

    #[test]
    fn warns_with_line_numbers() {
        let rc = parse("NAME x\n[a]\nBOGUS_VAR 1\nACCESS\n", Path::new("f")).unwrap();
        assert_eq!(
            rc.warnings,
            [
                "f:1: 'NAME' is outside any [stanza]; ignored",
                "f:3: unknown variable 'BOGUS_VAR'; ignored",
                "f:4: ACCESS has no value; ignored"
            ]
        );
        assert!(parse("[]\n", Path::new("f")).is_err());
    }

    #[test]
    fn save_updates_in_place_and_keeps_the_rest() {
        let out = save_stanza(
            DOC_EXAMPLE,
            "myssh",
            &[("ACCESS", "tcp/2222".into()), ("FW_TIMEOUT", "60".into())],
            &["KEY_BASE64"],
        );
        assert!(!out.contains("wzNP62oPPgEc"), "removed alternative");
        assert!(out.contains("# fwknop's documented example"));
        assert!(out.contains("DIGEST_TYPE         sha256 ; comment after a value"));
        assert!(out.contains(&format!("{:<24}    tcp/2222", "ACCESS")));
        assert!(!out.contains("ACCESS              tcp/22\n"));
        let rc = parse(&out, Path::new("rc")).unwrap();
        let s = &rc.stanza("myssh").unwrap().settings;
        assert_eq!(s.value("FW_TIMEOUT"), Some("60"));
        assert_eq!(s.value("SPA_SERVER"), Some("myserver.example.com"));
        // A new stanza is appended, the others are untouched.
        let out2 = save_stanza(&out, "web", &[("ACCESS", "tcp/443".into())], &[]);
        assert!(out2.starts_with(&out));
        let rc = parse(&out2, Path::new("rc")).unwrap();
        assert_eq!(stanza_names(&rc), ["default", "myssh", "web"]);
    }
}
