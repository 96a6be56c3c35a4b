//! The engine's files form layers: no file imports itself back through others.

#[test]
fn no_file_of_the_engine_imports_itself_in_a_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = testkit::layering::import_cycles(&src);
    assert!(cycles.is_empty(), "files that import one another in a circle: {cycles:?}");
    let graph = testkit::layering::import_graph(&src);
    assert!(graph.values().map(|deps| deps.len()).sum::<usize>() > 10, "the check sees the imports: {graph:?}");
}

/// What `docs/specs/connector.md` §1.2 promises, checked: outside its own folder, a record
/// system is named only by the registry, the module list, and its table's field in the raw
/// config (serde cannot flatten a table and keep its spans). The few other places are named
/// below with why.
#[test]
fn a_record_system_is_named_only_in_its_folder_the_registry_and_the_raw_config() {
    use connectors::registry::System;
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Tests, simulators, the demo, test helpers and fuzz targets drive vendors by name on purpose.
    let not_production = |rel: &str| {
        rel.contains("/tests/")
            || rel.ends_with("tests.rs")
            || rel.contains("/sim/")
            || rel.starts_with("sim/")
            || rel.contains("/demo")
            || rel.starts_with("testkit/")
            || rel.starts_with("fixtures/")
            || rel.starts_with("fuzzing/")
    };
    let always = ["connectors/src/registry.rs", "connectors/src/lib.rs", "engine/src/config/raw.rs"];
    let mut strays = Vec::new();
    for system in System::ALL.into_iter().filter(|s| *s != System::Dingtalk) {
        let name = system.as_str();
        let own = format!("connectors/src/{name}/");
        let named = testkit::layering::files_naming(&crates, name, &|rel| rel.starts_with(&own) || not_production(rel));
        for file in named.keys() {
            let allowed = always.contains(&file.as_str())
                // Diagnostic labels that point at the other system that takes a key.
                || (file.starts_with("connectors/src/") && file.ends_with("/config.rs"))
                // SAP's date and unit formats are parsed by the canonical model, and its help
                // text uses an SAP host as the example of an on-premises system.
                || (system == System::Sap
                    && ["model/src/quantity.rs", "model/src/time.rs", "connect/src/config/endpoint.rs"]
                        .contains(&file.as_str()));
            if !allowed {
                strays.push(format!("{file} names {name}"));
            }
        }
    }
    assert!(strays.is_empty(), "a record system named outside its folder and the registry:\n{}", strays.join("\n"));
}
