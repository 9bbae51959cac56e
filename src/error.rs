//! The one public error type. Every failure the runtime can report is an [`Error`]: an
//! opaque struct over a private kind, with a stable numeric [`ErrorCode`] (the value the C
//! API returns) and a lower-case, one-sentence message that carries the offending values.

use std::fmt;

/// Stable numeric codes, shared with the C API (`PROMISE_STATUS_*`). Never renumbered;
/// new codes are only appended.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success (only used by the C API).
    Ok = 0,
    /// A file of the bundle could not be opened, read or mapped.
    Io = 1,
    /// `manifest.json` is missing, not JSON, or a field is absent or out of range.
    Manifest = 2,
    /// `catalog.bin` is truncated, misaligned or inconsistent.
    Catalog = 3,
    /// An ONNX graph is malformed or disagrees with the manifest.
    Graph = 4,
    /// A file's size or sha256 differs from the manifest.
    Checksum = 5,
    /// The search configuration is invalid (K' = 0, K+ < K', N > K+, over capacity).
    Config = 6,
    /// The history is empty.
    EmptyHistory = 7,
    /// A history entry is not an item of the catalog.
    UnknownItem = 8,
    /// An output buffer is too small.
    Capacity = 9,
    /// The requested backend is not compiled in or not available on this machine.
    BackendUnavailable = 10,
    /// The inference backend failed while running a graph.
    Backend = 11,
    /// An argument is invalid (null pointer, bad UTF-8, ...), mostly from the C API.
    InvalidArgument = 12,
    /// A Rust panic was caught at the C boundary (a bug: please report it).
    Panic = 13,
    /// The GPU device was lost or ran out of memory.
    DeviceLost = 14,
    /// The GPU adapter's limits are too small for the model or the search config (the
    /// message names the limit, what is needed and what the adapter offers).
    Limits = 15,
}

impl ErrorCode {
    /// Short stable name, as used in docs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::Io => "io",
            ErrorCode::Manifest => "manifest",
            ErrorCode::Catalog => "catalog",
            ErrorCode::Graph => "graph",
            ErrorCode::Checksum => "checksum",
            ErrorCode::Config => "config",
            ErrorCode::EmptyHistory => "empty-history",
            ErrorCode::UnknownItem => "unknown-item",
            ErrorCode::Capacity => "capacity",
            ErrorCode::BackendUnavailable => "backend-unavailable",
            ErrorCode::Backend => "backend",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::Panic => "panic",
            ErrorCode::DeviceLost => "device-lost",
            ErrorCode::Limits => "limits",
        }
    }

    /// All codes, in numeric order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Ok,
        ErrorCode::Io,
        ErrorCode::Manifest,
        ErrorCode::Catalog,
        ErrorCode::Graph,
        ErrorCode::Checksum,
        ErrorCode::Config,
        ErrorCode::EmptyHistory,
        ErrorCode::UnknownItem,
        ErrorCode::Capacity,
        ErrorCode::BackendUnavailable,
        ErrorCode::Backend,
        ErrorCode::InvalidArgument,
        ErrorCode::Panic,
        ErrorCode::DeviceLost,
        ErrorCode::Limits,
    ];
}

/// The runtime's error: a code plus a message naming the wrong value and what was expected.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

/// Characters a message never carries raw: control characters (a newline would forge a
/// second `error[...]` line, ESC starts a terminal escape sequence) and the invisible
/// format characters that reorder or hide text (bidi overrides, zero-width marks).
pub(crate) fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// The most characters of a quoted value a message carries ([`escape`]); the rest is
/// elided with its length, so a 10 MB id makes a message of a few hundred bytes.
pub const MAX_QUOTED_CHARS: usize = 96;
/// The most characters of any message (a backstop behind [`MAX_QUOTED_CHARS`]: a message
/// quotes a few values and a few numbers).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `text` on one line, every [`must_escape`] character written as `\u{..}`, cut after
/// `max` characters of output with the number of bytes elided. Never inlined: every error
/// site reaches it, and a copy per site costs the mobile library tens of KB.
#[inline(never)]
fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 2) + 16);
    for (shown, (at, c)) in text.char_indices().enumerate() {
        if shown >= max {
            out.push_str(&format!("... ({} more bytes)", text.len() - at));
            return out;
        }
        if must_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `message` on one line and at most [`MAX_MESSAGE_CHARS`] long: every message goes
/// through here, so text quoted from a bundle or a caller (file names, manifest strings,
/// tract's own messages) cannot inject lines or escape sequences, nor grow a message
/// without bound.
#[inline(never)]
fn one_line(message: String) -> String {
    if message.len() <= MAX_MESSAGE_CHARS && !message.chars().any(must_escape) {
        return message;
    }
    bounded(&message, MAX_MESSAGE_CHARS)
}

/// `text` as every message of the library quotes a value: on one line, control and
/// invisible format characters written as `\u{..}`, at most `MAX_QUOTED_CHARS` (96)
/// characters and then the number of bytes elided. The CLI prints values through it too.
pub fn escape(text: &str) -> String {
    bounded(text, MAX_QUOTED_CHARS)
}

/// [`escape`] for what is longer than an id, a path or a whole message the CLI prints:
/// bounded by `MAX_MESSAGE_CHARS` / 2 (512 characters).
pub fn escape_long(text: &str) -> String {
    bounded(text, MAX_MESSAGE_CHARS / 2)
}

impl Error {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: one_line(message.into()),
        }
    }
    /// The stable numeric code of this error.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The message alone (without the code name).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {})", self.code.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// `Result<T, promise_rt::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

macro_rules! err {
    ($code:ident, $($arg:tt)*) => {
        $crate::error::Error::new($crate::error::ErrorCode::$code, format!($($arg)*))
    };
}
pub(crate) use err;

impl From<crate::alloc::AllocError> for Error {
    fn from(e: crate::alloc::AllocError) -> Self {
        Error::new(ErrorCode::Limits, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_without_escape_sequences() {
        let e = Error::new(
            ErrorCode::Io,
            "cannot open a\nerror[manifest]: forged \u{1b}[31mred\u{202e}txt.onnx",
        );
        assert_eq!(
            e.message(),
            "cannot open a\\u{a}error[manifest]: forged \\u{1b}[31mred\\u{202e}txt.onnx"
        );
        assert!(!e.message().chars().any(must_escape));
        // a plain message is kept as it is
        assert_eq!(Error::new(ErrorCode::Io, "plain é").message(), "plain é");
    }

    #[test]
    fn quoted_values_and_messages_are_bounded() {
        let huge = "é".repeat(5_000_000); // a 10 MB id
        let q = escape(&huge);
        assert!(q.starts_with(&"é".repeat(MAX_QUOTED_CHARS)));
        assert!(q.ends_with(&format!(
            "... ({} more bytes)",
            10_000_000 - 2 * MAX_QUOTED_CHARS
        )));
        assert!(q.len() < 300, "{}", q.len());
        // a short value is quoted whole
        assert_eq!(escape("sku-1"), "sku-1");
        assert_eq!(
            escape(&"a".repeat(MAX_QUOTED_CHARS)),
            "a".repeat(MAX_QUOTED_CHARS)
        );
        // the message itself is bounded even when a caller quotes a value raw
        let e = Error::new(ErrorCode::InvalidArgument, format!("id {huge} is bad\n"));
        assert!(e.message().chars().count() < MAX_MESSAGE_CHARS + 40);
        assert!(!e.message().chars().any(must_escape));
    }
}
