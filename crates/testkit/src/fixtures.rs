//! Locating and reading the shared vendor fixtures (`../shared/fixtures` next to the workspace).
//!
//! These are test helpers: a missing or unreadable fixture is a broken test setup, so they panic
//! with the path they tried rather than return errors every test would unwrap anyway.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the fixtures directory (e.g. for out-of-tree builds).
pub const FIXTURES_ENV: &str = "DINGBRIDGE_FIXTURES";

/// The fixtures directory: `$DINGBRIDGE_FIXTURES` if set, else the first `shared/fixtures` found
/// walking up from this crate's manifest directory.
///
/// # Panics
/// When neither exists.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(FIXTURES_ENV) {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "{FIXTURES_ENV}={} is not a directory", dir.display());
        return dir;
    }
    find_upwards(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|| {
        panic!(
            "no shared/fixtures directory above {}; set {FIXTURES_ENV} to the fixtures path",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

fn find_upwards(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|dir| dir.join("shared").join("fixtures")).find(|candidate| candidate.is_dir())
}

/// Absolute path of a fixture, `rel` relative to [`fixtures_dir`] (e.g. `dingtalk/README.md`).
///
/// # Panics
/// When the file does not exist.
pub fn fixture_path(rel: impl AsRef<Path>) -> PathBuf {
    let path = fixtures_dir().join(rel.as_ref());
    assert!(path.exists(), "fixture {} does not exist", path.display());
    path
}

/// A fixture's text.
///
/// # Panics
/// When it is missing or not UTF-8.
pub fn read_fixture(rel: impl AsRef<Path>) -> String {
    let path = fixture_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A fixture parsed as JSON.
///
/// # Panics
/// When it is missing or not valid JSON.
pub fn read_json(rel: impl AsRef<Path>) -> serde_json::Value {
    let rel = rel.as_ref();
    let text = read_fixture(rel);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {} is not valid JSON: {e}", rel.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_shared_fixtures_and_reads_a_readme() {
        let dir = fixtures_dir();
        assert!(dir.ends_with("shared/fixtures"), "{}", dir.display());
        assert!(!read_fixture("README.md").is_empty());
    }

    #[test]
    fn reads_a_json_fixture() {
        let v = read_json("netsuite/tba_signature_vectors.json");
        assert!(v.is_object() || v.is_array());
    }

    #[test]
    #[should_panic(expected = "does not exist")]
    fn missing_fixture_panics_with_the_path() {
        read_fixture("no/such/fixture.json");
    }

    #[test]
    fn walks_up_from_a_nested_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("shared/fixtures")).unwrap();
        let nested = tmp.path().join("main/crates/testkit");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(find_upwards(&nested), Some(tmp.path().join("shared/fixtures")));
    }
}
