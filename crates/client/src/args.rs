//! The last-run file (`~/.fwknop.run`): this run's arguments, so that `-l` can repeat
//! them. One line, shell-quoted where needed, mode 0600 (it can hold keys given on the
//! command line, like fwknop's).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::plan::Fail;

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./,:=+@%".contains(&b))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Split a line into words, honouring single and double quotes and backslashes.
pub fn split(line: &str) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Fail("last-run file: unterminated quote".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(c) => cur.push(c),
                        None => return Err(Fail("last-run file: unterminated quote".into())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Save `args` (without the program name).
pub fn save(path: &Path, args: &[String]) -> Result<(), Fail> {
    let line: Vec<String> = args.iter().map(|a| quote(a)).collect();
    write_private(path, &format!("{}\n", line.join(" ")), false).map_err(|e| {
        Fail(format!(
            "cannot save the arguments to '{}': {e} (use --no-save-args)",
            path.display()
        ))
    })
}

/// Write (or append) `text` to a file created readable by its owner only (0600).
pub fn write_private(path: &Path, text: &str, append: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Load the saved arguments.
pub fn load(path: &Path) -> Result<Vec<String>, Fail> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fail(format!(
            "-l/--last-cmd: cannot read '{}': {e}",
            path.display()
        ))
    })?;
    split(text.lines().next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let args: Vec<String> = [
            "-A",
            "tcp/22",
            "-C",
            "touch /tmp/x y",
            "--key-rijndael",
            "it's",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line: Vec<String> = args.iter().map(|a| quote(a)).collect();
        assert_eq!(split(&line.join(" ")).unwrap(), args);
        assert_eq!(
            split("-A tcp/22 -D \"a b\"").unwrap(),
            ["-A", "tcp/22", "-D", "a b"]
        );
        assert!(split("'open").is_err());
    }
}
