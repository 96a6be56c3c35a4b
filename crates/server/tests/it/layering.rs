//! The server's files form layers: the shared state and the sources it holds import none of
//! the handlers, sinks and loops that use them.

#[test]
fn no_file_of_the_server_imports_itself_in_a_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = testkit::layering::import_cycles(&src);
    assert!(cycles.is_empty(), "files that import one another in a circle: {cycles:?}");
    // The check sees the imports at all: the push door uses the state and the sources.
    let graph = testkit::layering::import_graph(&src);
    assert!(graph["push"].contains("state") && graph["push"].contains("reads"), "{:?}", graph["push"]);
}

/// The server reaches record systems only through the registry and the connectors' traits:
/// no line of its code names one (DingTalk, the platform its callbacks and cards belong to, is
/// the exception).
#[test]
fn the_server_names_no_record_system() {
    use connectors::registry::System;
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for system in System::ALL.into_iter().filter(|s| *s != System::Dingtalk) {
        for (file, lines) in testkit::layering::files_naming(&src, system.as_str(), &|_| false) {
            found.push(format!("{file}: {lines} line(s) name {}", system.as_str()));
        }
    }
    assert!(found.is_empty(), "server code naming a record system:\n{}", found.join("\n"));
}
