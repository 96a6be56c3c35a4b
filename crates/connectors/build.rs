//! Finds the shared vendor fixtures so the SAP simulator can embed SAP's real `$metadata`
//! documents (`include_str!`) without copying them into the repository: `$DINGBRIDGE_FIXTURES`,
//! else the first `shared/fixtures` above this crate (the rule of `crates/fixtures`).

use std::path::{Path, PathBuf};

const FIXTURES_ENV: &str = "DINGBRIDGE_FIXTURES";

/// The SAP documents the simulator embeds; each must exist for the build to succeed.
const SAP_METADATA: &[&str] = &[
    "API_PURCHASEORDER_PROCESS_SRV.metadata.xml",
    "API_PURCHASEREQ_PROCESS_SRV.metadata.xml",
    "API_MATERIAL_STOCK_SRV.metadata.xml",
    "API_OUTBOUND_DELIVERY_SRV.metadata.xml",
];

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
            "dingbridge-connectors embeds SAP's $metadata documents from the shared fixtures, but no \
             shared/fixtures directory was found above {}; set {FIXTURES_ENV} to the fixtures directory",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
        );
    };
    // `include_str!` resolves a relative path against the source file: make it absolute.
    let dir = dir.canonicalize().unwrap_or_else(|e| {
        panic!("fixtures directory {} (relative paths start at crates/connectors) cannot be read: {e}; set {FIXTURES_ENV} to the fixtures directory", dir.display())
    });
    let sap = dir.join("sap");
    for name in SAP_METADATA {
        let file = sap.join(name);
        assert!(
            Path::new(&file).is_file(),
            "SAP $metadata fixture {} is missing (fixtures directory {}; set {FIXTURES_ENV} to change it)",
            file.display(),
            dir.display()
        );
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rustc-env=DINGBRIDGE_SAP_FIXTURES={}", sap.display());
}
