//! Finds the shared vendor fixtures, so a simulator can embed a vendor's own documents
//! (`include_str!(concat!(env!("DINGBRIDGE_FIXTURES_DIR"), "/…"))`) without copying them into the
//! repository: `$DINGBRIDGE_FIXTURES`, else the first `shared/fixtures` above this crate (the rule
//! of `crates/fixtures`). Which files are embedded is each simulator's business; a missing one
//! fails the build at its `include_str!`, naming the path.

use std::path::PathBuf;

const FIXTURES_ENV: &str = "DINGBRIDGE_FIXTURES";

fn fixtures_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(FIXTURES_ENV) {
        return Some(PathBuf::from(dir));
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    manifest.ancestors().map(|dir| dir.join("shared").join("fixtures")).find(|c| c.is_dir())
}

fn main() {
    println!("cargo:rerun-if-env-changed={FIXTURES_ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(dir) = fixtures_dir() else {
        panic!(
            "dingbridge-connectors embeds vendor documents from the shared fixtures, but no \
             shared/fixtures directory was found above {}; set {FIXTURES_ENV} to the fixtures directory",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
        );
    };
    // `include_str!` resolves a relative path against the source file: make it absolute.
    let dir = dir.canonicalize().unwrap_or_else(|e| {
        panic!(
            "fixtures directory {} (relative paths start at crates/connectors) cannot be read: {e}; \
             set {FIXTURES_ENV} to the fixtures directory",
            dir.display()
        )
    });
    println!("cargo:rustc-env=DINGBRIDGE_FIXTURES_DIR={}", dir.display());
}
