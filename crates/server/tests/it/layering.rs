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
