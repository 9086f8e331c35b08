//! Configuration: `fwknopd.conf` (server settings) and `access.conf` (stanzas), read as
//! fwknop reads them, checked completely before anything is touched.
//!
//! Every directive of fwknop 2.6 is known by name. Each is either implemented, accepted
//! with a note saying it has no effect in posternd (tuning of fwknop's polling loop,
//! settings of another firewall backend), or refused by name when it is set to
//! something posternd cannot honour. Nothing is silently ignored. Errors carry file,
//! line and directive.

pub mod access;
pub mod check;
pub mod server;

use std::fmt;
use std::path::{Path, PathBuf};

pub use access::{Net, PortRule, Stanza};
pub use server::ServerConfig;

/// A configuration error: file, line, directive and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the error is about the whole file).
    pub line: usize,
    /// The directive (empty when none applies).
    pub directive: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.directive.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.file.display(), self.message),
            (0, false) => write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.directive,
                self.message
            ),
            (l, true) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            (l, false) => write!(
                f,
                "{}:{l}: {}: {}",
                self.file.display(),
                self.directive,
                self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one reading of the configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A note about a directive that is accepted but has no effect (shown by
/// `--check-config` and logged at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where.
    pub file: PathBuf,
    /// Line.
    pub line: usize,
    /// Text.
    pub text: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.text)
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// fwknopd.conf.
    pub server: ServerConfig,
    /// access.conf stanzas, in file order.
    pub stanzas: Vec<Stanza>,
    /// Notes about directives without effect.
    pub notes: Vec<Note>,
}

/// One `NAME value` line of either file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    /// Directive name, upper case, without a trailing `:`.
    pub name: String,
    /// The value: up to the first `;`, surrounding blanks removed.
    pub value: String,
}

/// Split config text into directive lines; `#` and `;` start comment lines.
pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let (name, rest) = match t.find(char::is_whitespace) {
            Some(p) => (&t[..p], &t[p..]),
            None => (t, ""),
        };
        let value = rest.split(';').next().unwrap_or("").trim();
        out.push(Line {
            number: i + 1,
            name: name.trim_end_matches(':').to_ascii_uppercase(),
            value: value.to_owned(),
        });
    }
    out
}

/// Parse `Y`/`N` (case-insensitive; also yes/no/1/0).
pub fn yes_no(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "y" | "yes" | "1" | "true" | "on" => Ok(true),
        "n" | "no" | "0" | "false" | "off" => Ok(false),
        _ => Err(format!("expected Y or N, not '{value}'")),
    }
}

/// Parse a number in a range.
pub fn in_range(value: &str, min: u64, max: u64) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("'{value}' is not a number from {min} to {max}"))
}

/// [`yes_no`] of a line.
pub fn boolean(file: &Path, l: &Line) -> Result<bool, ConfigError> {
    yes_no(&l.value).map_err(|m| err(file, l, m))
}

/// [`in_range`] of a line.
pub fn number(file: &Path, l: &Line, min: u64, max: u64) -> Result<u64, ConfigError> {
    in_range(&l.value, min, max).map_err(|m| err(file, l, m))
}

/// The name among `names` closest to a misspelt `name`, if one is close ("did you
/// mean"): both files' unknown-directive errors use it.
pub fn nearest(name: &str, names: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    // No directive is longer: a long name is nobody's misspelling (and stays cheap).
    if name.len() > 64 {
        return None;
    }
    let (best, dist) = names
        .map(|n| (n, edit_distance(name, n)))
        .min_by_key(|(_, d)| *d)?;
    (dist <= (name.len() / 4).max(2)).then_some(best)
}

/// Levenshtein distance (for "did you mean").
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// An error at a line.
pub fn err(file: &Path, l: &Line, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: l.number,
        directive: l.name.clone(),
        message: message.into(),
    }
}

/// The largest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Read a configuration file as root would read a file that someone else may own:
/// a final symlink is followed only when root owns the link itself; the file must be
/// a regular file (never a FIFO, a device such as `/dev/zero`, or a directory); it is
/// opened without blocking and read up to [`MAX_CONFIG_FILE`]. Anything else is a
/// configuration error naming the file (a reload then keeps the old configuration).
pub fn read(file: &Path) -> Result<String, ConfigError> {
    read_bounded(file).map_err(|message| ConfigError {
        file: file.to_owned(),
        line: 0,
        directive: String::new(),
        message,
    })
}

fn read_bounded(file: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let link = std::fs::symlink_metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if link.file_type().is_symlink() {
        if link.uid() != 0 {
            return Err(format!(
                "a symbolic link owned by uid {} (only root's links are followed)",
                link.uid()
            ));
        }
    } else {
        flags |= libc::O_NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(file)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory is never read)".into());
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(format!("larger than {MAX_CONFIG_FILE} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// fwknopd.conf followed by the `-O` override files, as fwknopd reads them: every line
/// of the main file, then of each override file in order, the last setting of a
/// directive winning, `$VAR`s expanded over the whole (an override's `FWKNOP_RUN_DIR`
/// changes the main file's `$FWKNOP_RUN_DIR/...`). Errors and notes name the file and
/// line each directive came from.
pub fn load_server(
    file: &Path,
    overrides: &[PathBuf],
) -> Result<(ServerConfig, Vec<Note>), ConfigErrors> {
    if overrides.is_empty() {
        return server::load(file);
    }
    let mut text = read(file)?;
    // (file, lines before it in the merged text, its number of lines)
    let mut spans = vec![(file.to_path_buf(), 0usize, text.lines().count())];
    for o in overrides {
        let t = read(o)?;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let before = text.lines().count();
        spans.push((o.clone(), before, t.lines().count()));
        text.push_str(&t);
    }
    let origin = |line: usize| -> Option<(PathBuf, usize)> {
        spans
            .iter()
            .rev()
            .find(|(_, before, n)| line > *before && line <= before + n)
            .map(|(f, before, _)| (f.clone(), line - before))
    };
    match server::parse(&text, file) {
        Ok((c, mut notes)) => {
            for n in &mut notes {
                if let Some((f, l)) = origin(n.line).filter(|_| n.file == file) {
                    (n.file, n.line) = (f, l);
                }
            }
            Ok((c, notes))
        }
        Err(mut errors) => {
            for e in &mut errors.0 {
                if let Some((f, l)) = origin(e.line).filter(|_| e.file == file) {
                    (e.file, e.line) = (f, l);
                }
            }
            Err(errors)
        }
    }
}

impl Config {
    /// Load `fwknopd.conf` and the access file it names (or `access_override`).
    pub fn load(
        server_file: &Path,
        access_override: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        Config::load_with_overrides(server_file, &[], access_override)
    }

    /// [`Config::load`] with fwknopd's `-O` override files: their directives replace
    /// the main file's, a later file's those of an earlier one (see [`load_server`]).
    pub fn load_with_overrides(
        server_file: &Path,
        overrides: &[PathBuf],
        access_override: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let server = load_server(server_file, overrides);
        let access_file = match (access_override, &server) {
            (Some(a), _) => a.to_path_buf(),
            (None, Ok((s, _))) => s.access_file.clone(),
            (None, Err(_)) => server_file.with_file_name("access.conf"),
        };
        // Both files are read even when the first has errors, so that one run reports
        // every error there is.
        let stanzas = access::load_noted(&access_file);
        let (server, mut notes, mut stanzas) = match (server, stanzas) {
            (Ok((server, mut notes)), Ok((stanzas, access_notes))) => {
                notes.extend(access_notes);
                (server, notes, stanzas)
            }
            (Err(mut e), Err(a)) => {
                if access_file.exists() {
                    e.0.extend(a.0);
                }
                return Err(e);
            }
            (Err(e), Ok(_)) => return Err(e),
            (Ok(_), Err(a)) => return Err(a),
        };
        if let Some(dir) = &server.access_folder {
            stanzas.extend(access::load_folder_noted(dir, server_file, 0, &mut notes)?);
        }
        if stanzas.is_empty() {
            return Err(ConfigError {
                file: access_file,
                line: 0,
                directive: String::new(),
                message: "no access stanza (a stanza starts with SOURCE)".into(),
            }
            .into());
        }
        notes.retain(|n| !n.text.is_empty());
        Ok(Config {
            server,
            stanzas,
            notes,
        })
    }

    /// The effective settings, keys redacted (`-D/--dump-config`).
    pub fn dump(&self) -> String {
        let mut out = self.server.dump();
        for (i, s) in self.stanzas.iter().enumerate() {
            out.push_str(&format!(
                "\n[stanza {} — {}:{}]\n",
                i + 1,
                s.file.display(),
                s.line
            ));
            out.push_str(&s.dump());
        }
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}"));
        }
        out
    }
}
