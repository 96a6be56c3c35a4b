//! Spanned values: every leaf a diagnostic may point at keeps its byte range in the file.

use std::ops::Range;

/// A value and where it was written (the `toml` crate's `Spanned` is this same type).
pub type S<T> = serde_spanned::Spanned<T>;

/// Where a value was written, in the `Option` form [`crate::config::ConfigError::new`] takes.
pub fn span<T>(s: &S<T>) -> Option<Range<usize>> {
    Some(s.span())
}

/// Where an optional key was written, if it was.
pub fn at<T>(value: &Option<S<T>>) -> Option<Range<usize>> {
    value.as_ref().map(|s| s.span())
}
