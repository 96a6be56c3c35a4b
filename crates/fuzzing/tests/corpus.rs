//! R20's CI tier: every file of each target's corpus (`fuzz/corpus/<target>/`, grown by the
//! long tier's fuzzing and by every crash it found) and every vendor fixture of that input's
//! kind goes through the target once. A target that panics fails this test with the file named.

use dingbridge_fuzzing::TARGETS;
use std::path::{Path, PathBuf};

/// The vendor fixtures (`../shared/fixtures`, read in place) each target starts from.
const FIXTURES: &[(&str, &[&str])] = &[
    ("dingtalk_event", &["dingtalk/events"]),
    ("stream_frame", &["dingtalk/stream"]),
    ("salesforce_outbound_message", &["salesforce/outbound"]),
    ("idoc_xml", &["sap/idoc_DELVRY07_DESADV_shipment.xml", "sap/idoc_ORDERS05_purchase_order.xml"]),
    ("strict_json", &["dynamics", "netsuite", "zoho/errors", "dingtalk/events"]),
    ("netsuite_user_event", &["netsuite/suitescript_userevent_webhook_payload.json"]),
    (
        "dataverse_webhook",
        &[
            "dynamics/webhook_remoteexecutioncontext_contact_update.json",
            "dynamics/webhook_remoteexecutioncontext_salesorder_update.json",
        ],
    ),
];

fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let Ok(dir) = std::fs::read_dir(path) else { return Vec::new() };
    let mut out: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn run(target: &str, run: dingbridge_fuzzing::Target, file: &Path) {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let outcome = std::panic::catch_unwind(|| run(&data));
    assert!(outcome.is_ok(), "fuzz target {target} panicked on {}", file.display());
}

#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_entry() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
        assert!(!files(&corpus_dir(name)).is_empty(), "fuzz/corpus/{name}/ is empty");
        assert!(fuzz.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no fuzz/fuzz_targets/{name}.rs");
    }
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut ran = 0;
    for (name, target) in TARGETS {
        for file in files(&corpus_dir(name)) {
            run(name, *target, &file);
            ran += 1;
        }
    }
    assert!(ran >= TARGETS.len(), "{ran} corpus files");
}

#[test]
fn every_vendor_fixture_passes_its_target() {
    for (name, paths) in FIXTURES {
        let (_, target) = TARGETS.iter().find(|(n, _)| n == name).expect("a known target");
        let mut ran = 0;
        for rel in *paths {
            for file in files(&fixtures::fixture_path(rel)) {
                run(name, *target, &file);
                ran += 1;
            }
        }
        assert!(ran > 0, "no fixture found for {name}");
    }
}
