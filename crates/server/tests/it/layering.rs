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
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let systems =
        connectors::registry::System::ALL.into_iter().filter(|s| *s != connectors::registry::System::Dingtalk);
    let names: Vec<&str> = systems.map(|s| s.as_str()).collect();
    assert!(names.contains(&"netsuite"), "the registry lists the record systems: {names:?}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.lines().enumerate().take_while(|(_, l)| l.trim() != "#[cfg(test)]");
        for (n, line) in code.filter(|(_, l)| !l.trim_start().starts_with("//")) {
            let lower = line.to_ascii_lowercase();
            for name in &names {
                let named = lower.match_indices(name).any(|(at, _)| {
                    let before = lower[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_ascii_alphanumeric())
                });
                if named {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "server code naming a record system:\n{}", found.join("\n"));
}
