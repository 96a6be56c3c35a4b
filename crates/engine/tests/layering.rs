//! The engine's files form layers: no file imports itself back through others.

#[test]
fn no_file_of_the_engine_imports_itself_in_a_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = testkit::layering::import_cycles(&src);
    assert!(cycles.is_empty(), "files that import one another in a circle: {cycles:?}");
    let graph = testkit::layering::import_graph(&src);
    assert!(graph.values().map(|deps| deps.len()).sum::<usize>() > 10, "the check sees the imports: {graph:?}");
}
