//! The ground floor: fallible allocation for every buffer whose size comes from a bundle or
//! a search config. A failed allocation aborts the process (no C caller can catch that),
//! so such buffers are made here with `try_reserve_exact`, and running out of memory is a
//! value. This module imports nothing of the crate; its [`AllocError`] becomes a `limits`
//! [`crate::Error`] through `?`.

use std::fmt;

/// `n` values for `what` could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllocError {
    pub(crate) n: usize,
    pub(crate) what: &'static str,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot allocate {} values for {}: out of memory",
            self.n, self.what
        )
    }
}

/// A vector of `n` copies of `v` whose allocation failure is an error, not an abort:
/// every buffer whose size comes from a bundle is made with this.
pub(crate) fn filled<T: Clone>(n: usize, v: T, what: &'static str) -> Result<Vec<T>, AllocError> {
    let mut out = with_capacity(n, what)?;
    out.resize(n, v);
    Ok(out)
}

/// [`filled`] with zeros.
pub(crate) fn zeros<T: Clone + Default>(
    n: usize,
    what: &'static str,
) -> Result<Vec<T>, AllocError> {
    filled(n, T::default(), what)
}

/// An empty vector with room for `n`, fallibly (see [`filled`]).
pub(crate) fn with_capacity<T>(n: usize, what: &'static str) -> Result<Vec<T>, AllocError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| AllocError { n, what })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failure_is_an_error_not_an_abort() {
        let e = zeros::<f32>(usize::MAX / 2, "a test buffer").unwrap_err();
        assert!(e.to_string().contains("a test buffer"), "{e}");
        let e: crate::Error = e.into();
        assert_eq!(e.code(), crate::ErrorCode::Limits, "{e}");
        assert_eq!(zeros::<f32>(3, "x").unwrap(), vec![0.0; 3]);
        assert_eq!(filled(2, 7u8, "x").unwrap(), vec![7, 7]);
    }
}
