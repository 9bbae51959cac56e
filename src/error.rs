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

/// `message` on one line, every [`must_escape`] character written as `\u{..}`: every
/// message goes through here, so text quoted from a bundle or a caller (file names,
/// manifest strings, tract's own messages) cannot inject lines or escape sequences.
fn one_line(message: String) -> String {
    if !message.chars().any(must_escape) {
        return message;
    }
    let mut out = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        if must_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` as every message of the library quotes it: on one line, control and invisible
/// format characters written as `\u{..}`. The CLI prints paths and names through it too.
pub fn escape(text: &str) -> String {
    one_line(text.to_owned())
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
}
