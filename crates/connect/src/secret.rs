//! Comparing what a caller presents with a secret we hold: the one place every token, key,
//! signature and password check goes through, so none of them leaks by timing how many leading
//! bytes matched.

use subtle::ConstantTimeEq;

/// Whether `given` equals `expected`, in time that does not depend on where they differ. An
/// empty secret matches nothing: an unset secret must never open a door. The lengths may differ
/// (the answer is then `false`); a secret's length is not itself secret here, since every secret
/// of one kind has the same length.
pub fn matches(expected: &[u8], given: &[u8]) -> bool {
    !expected.is_empty() && bool::from(expected.ct_eq(given))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn equal_bytes_match_and_nothing_else_does() {
        assert!(matches(b"abc", b"abc"));
        assert!(!matches(b"abc", b"abd"));
        assert!(!matches(b"abc", b"abc\0"));
        assert!(!matches(b"abc", b"ab"));
        assert!(!matches(b"abc", b""));
        assert!(!matches(b"", b""), "an empty secret opens nothing");
        assert!(!matches(b"", b"a"));
    }
}
