//! The app's ids on the command line and in files, read by one set of rules.
//!
//! - `--history A,B,C`: ids separated by commas, kept exactly as written (no trimming: an
//!   id may hold spaces). A backslash quotes the next character: `\,` is a comma inside an
//!   id, `\\` a backslash; a backslash before any other character, or at the end, is an
//!   error. So every legal id (1..=256 bytes of UTF-8 without control characters) can be
//!   asked for. `--history=` (nothing) is the empty history.
//! - `--history-file FILE` (`-` for stdin): one id per line, verbatim (no quoting: a line
//!   break is a control character, which no id holds); a trailing `\r` is dropped.
//! - Pairs files (`eval --pairs`, `bench --pairs`): one example per line, the history's
//!   ids then the target's, separated by tabs, verbatim (a tab is a control character).
//!
//! Every id is checked as it is read (the library's rule, `id_problem`), every line is
//! bounded in bytes before it is parsed, and every error names the file, the line and the
//! id's position, with the id quoted through the library's bounded escaping.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use promise_rt::internals::{escape, escape_long, id_problem, MAX_HISTORY, MAX_ID_BYTES};

/// The longest line of a pairs or history file: a full history and a target, every id of
/// the longest length, with its separator.
pub const MAX_LINE_BYTES: usize = (MAX_HISTORY + 1) * (MAX_ID_BYTES + 1);
/// The most examples a pairs file holds.
pub const MAX_EXAMPLES: usize = 1 << 22;

/// `--history` split by the quoting rule (module docs).
pub fn split_history(arg: &str) -> Result<Vec<String>> {
    if arg.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![String::new()];
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(q @ (',' | '\\')) => out.last_mut().expect("one id at least").push(q),
                Some(other) => bail!(
                    "--history id {}: a backslash quotes only ',' or '\\', not {}",
                    out.len() - 1,
                    escape(&format!("{other:?}"))
                ),
                None => bail!(
                    "--history id {}: ends with a lone backslash (write \\\\ for a backslash)",
                    out.len() - 1
                ),
            },
            ',' => {
                if out.len() >= MAX_HISTORY {
                    bail!("--history holds more than {MAX_HISTORY} ids, at most {MAX_HISTORY} allowed");
                }
                out.push(String::new());
            }
            c => out.last_mut().expect("one id at least").push(c),
        }
    }
    for (i, id) in out.iter().enumerate() {
        if let Some(why) = id_problem(id) {
            bail!("--history id {i} ({}) {why}", escape(id));
        }
    }
    Ok(out)
}

/// Lines of `r`, each at most [`MAX_LINE_BYTES`] (checked before it is kept), as UTF-8,
/// with `what` naming the source in errors; `f(line_number, line)` takes each one.
fn each_line(r: impl Read, what: &str, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let got = (&mut r)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {what}"))?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            bail!("{what} line {n}: longer than {MAX_LINE_BYTES} bytes (a history of at most {MAX_HISTORY} ids and a target)");
        }
        let line = std::str::from_utf8(&buf).map_err(|e| {
            anyhow::anyhow!("{what} line {n}: byte {} is not UTF-8", e.valid_up_to() + 1)
        })?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        f(n, line)?;
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let (f, _len) = promise_rt::internals::open_regular(path)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(Box::new(f))
}

/// `--history-file`: one id per line (module docs); blank lines are not ids and are an error.
pub fn read_history_file(path: &Path) -> Result<Vec<String>> {
    let what = if path.as_os_str() == "-" {
        "--history-file - (stdin)".to_owned()
    } else {
        format!("--history-file {}", crate::shown(path))
    };
    let mut ids = Vec::new();
    each_line(open(path)?, &what, |n, line| {
        if ids.len() >= MAX_HISTORY {
            bail!("{what} line {n}: more than {MAX_HISTORY} ids, at most {MAX_HISTORY} allowed");
        }
        if let Some(why) = id_problem(line) {
            bail!("{what} line {n}: the id ({}) {why}", escape(line));
        }
        ids.push(line.to_owned());
        Ok(())
    })?;
    Ok(ids)
}

/// A pairs file: examples in the app's ids (module docs), every id checked at load.
pub struct Pairs {
    /// every example's line, verbatim
    lines: Vec<String>,
}

impl Pairs {
    /// Read `path` line by line, each bounded before it is parsed, every id checked.
    pub fn load(path: &Path) -> Result<Pairs> {
        let shown = crate::shown(path);
        let what = format!("--pairs {shown}");
        let mut lines = Vec::new();
        each_line(open(path)?, &what, |n, line| {
            if lines.len() >= MAX_EXAMPLES {
                bail!("{what} line {n}: more than {MAX_EXAMPLES} examples");
            }
            let fields = line.split('\t').count();
            if fields < 2 {
                bail!("{what} line {n}: expected the history's ids then the target, tab-separated, found {fields} field");
            }
            if fields - 1 > MAX_HISTORY {
                bail!(
                    "{what} line {n}: the history holds {} ids, at most {MAX_HISTORY} allowed",
                    fields - 1
                );
            }
            for (i, id) in line.split('\t').enumerate() {
                if let Some(why) = id_problem(id) {
                    let which = if i + 1 == fields {
                        "the target".to_owned()
                    } else {
                        format!("history id {i}")
                    };
                    bail!("{what} line {n}: {which} ({}) {why}", escape(id));
                }
            }
            lines.push(line.to_owned());
            Ok(())
        })?;
        if lines.is_empty() {
            bail!("{} holds no example", escape_long(&shown));
        }
        Ok(Pairs { lines })
    }
    /// (history ids, target id) per example.
    pub fn iter(&self) -> impl Iterator<Item = (Vec<&str>, &str)> {
        self.lines.iter().map(|l| {
            let mut ids: Vec<&str> = l.split('\t').collect();
            let t = ids.pop().unwrap_or_default();
            (ids, t)
        })
    }
    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quoting_rule_reaches_every_legal_id() {
        assert_eq!(split_history("a,b").unwrap(), ["a", "b"]);
        assert_eq!(split_history("a\\,b").unwrap(), ["a,b"]);
        assert_eq!(split_history("a\\\\,b").unwrap(), ["a\\", "b"]);
        assert_eq!(split_history(" ").unwrap(), [" "]);
        assert_eq!(split_history(" x , y").unwrap(), [" x ", " y"]);
        assert!(split_history("").unwrap().is_empty());
        assert!(split_history("a,,b")
            .unwrap_err()
            .to_string()
            .contains("id 1 () is empty"));
        assert!(split_history("a\\b").is_err());
        assert!(split_history("a\\").is_err());
        let long = "x".repeat(10_000_000);
        let e = split_history(&long).unwrap_err().to_string();
        assert!(e.len() < 400, "{}", e.len());
    }
}
