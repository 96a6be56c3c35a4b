//! The documentation cannot rot: every config diagnostic code has a page, every complete config
//! example in `README.md` and `docs/` validates, every error page's example triggers its code,
//! every source, destination and message type is in the config spec, and both files in
//! `examples/` validate.

use connect::SystemClock;
use dingbridge_engine::config::{destination_types, source_types, Code, Config, SecretResolver, MESSAGE_TYPES};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every `Code` variant. Keep in step with [`index`]: a new variant fails to compile there.
const ALL: [Code; 25] = [
    Code::UnknownKey,
    Code::UnknownDestination,
    Code::UnknownSource,
    Code::CelCompile,
    Code::Template,
    Code::UnknownEventField,
    Code::BadDuration,
    Code::DuplicateName,
    Code::MissingSecret,
    Code::TomlSyntax,
    Code::InvalidValue,
    Code::Approvals,
    Code::DecisionSource,
    Code::InsecureEndpoint,
    Code::AuditKey,
    Code::OutOfRange,
    Code::MissingKey,
    Code::KeyConflict,
    Code::EmptyValue,
    Code::UnknownChoice,
    Code::BadAddress,
    Code::BadName,
    Code::BadLocale,
    Code::BadCredential,
    Code::BadConnection,
];

/// Exhaustive on purpose (no `_` arm): adding a variant to `Code` breaks this until it is listed
/// in [`ALL`] and given an error page.
fn index(code: Code) -> usize {
    match code {
        Code::UnknownKey => 0,
        Code::UnknownDestination => 1,
        Code::UnknownSource => 2,
        Code::CelCompile => 3,
        Code::Template => 4,
        Code::UnknownEventField => 5,
        Code::BadDuration => 6,
        Code::DuplicateName => 7,
        Code::MissingSecret => 8,
        Code::TomlSyntax => 9,
        Code::InvalidValue => 10,
        Code::Approvals => 11,
        Code::DecisionSource => 12,
        Code::InsecureEndpoint => 13,
        Code::AuditKey => 14,
        Code::OutOfRange => 15,
        Code::MissingKey => 16,
        Code::KeyConflict => 17,
        Code::EmptyValue => 18,
        Code::UnknownChoice => 19,
        Code::BadAddress => 20,
        Code::BadName => 21,
        Code::BadLocale => 22,
        Code::BadCredential => 23,
        Code::BadConnection => 24,
    }
}

/// First line of a fenced TOML block that is a whole config file and must validate.
const COMPLETE_MARKER: &str = "# complete config";
/// First line of a fenced TOML block that must be refused with the named code: `# expect DB0102`.
const EXPECT_MARKER: &str = "# expect ";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `README.md` and every `*.md` under `docs/`, sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// A fenced ```toml block: its text and the 1-based line of its first content line.
struct Block {
    text: String,
    line: usize,
}

fn toml_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```toml") => current = Some(Block { text: String::new(), line: i + 2 }),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

/// An environment with no variables and no files.
struct NoSecrets;

impl SecretResolver for NoSecrets {
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} (test: no files)", path.display())))
    }
}

#[test]
fn code_list_is_complete_and_in_order() {
    for (i, code) in ALL.iter().enumerate() {
        assert_eq!(index(*code), i, "ALL[{i}] = {code:?} is out of order");
    }
    let mut strings: Vec<&str> = ALL.iter().map(|c| c.as_str()).collect();
    strings.sort_unstable();
    strings.dedup();
    assert_eq!(strings.len(), ALL.len(), "two variants share a code string");
}

/// Every code a user can meet (config `DB01xx`, delivery `DB02xx`, store `DB03xx`), and only
/// those, has its page in `docs/errors/`.
#[test]
fn every_code_has_an_error_page_and_every_page_a_code() {
    let mut codes: Vec<&str> = ALL.iter().map(|c| c.as_str()).collect();
    codes.extend(connect::DeliveryError::CODES);
    codes.extend(store::StoreError::CODES);
    codes.extend(connect::vault::VaultError::CODES);
    let mut missing = Vec::new();
    for code in &codes {
        let page = root().join("docs/errors").join(format!("{code}.md"));
        match std::fs::read_to_string(&page) {
            Ok(text) => assert!(
                text.starts_with(&format!("# {code}: ")),
                "{} must start with the heading `# {code}: …`",
                page.display()
            ),
            Err(_) => missing.push(page.display().to_string()),
        }
    }
    assert!(missing.is_empty(), "error codes without a page: {missing:?}");
    let pages = std::fs::read_dir(root().join("docs/errors")).expect("docs/errors exists");
    for page in pages {
        let name = page.expect("a readable entry").file_name().to_string_lossy().into_owned();
        let code = name.trim_end_matches(".md");
        assert!(codes.contains(&code), "docs/errors/{name} documents no code the product has");
    }
}

#[test]
fn every_complete_config_in_the_docs_validates() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in markdown_files() {
        for block in toml_blocks(&read(&file)) {
            if first_line(&block.text) != COMPLETE_MARKER {
                continue;
            }
            let shown = format!("{}:{}", file.display(), block.line);
            checked += 1;
            if let Err(errors) = Config::from_toml(&block.text, &shown) {
                failures.push(errors.render());
            }
        }
    }
    assert!(failures.is_empty(), "documented configs that do not validate:\n{}", failures.join("\n"));
    assert!(checked >= 1, "no `{COMPLETE_MARKER}` block found in README.md or docs/");
}

#[test]
fn every_error_page_example_is_refused_with_its_code() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in markdown_files() {
        for block in toml_blocks(&read(&file)) {
            let Some(expected) = first_line(&block.text).strip_prefix(EXPECT_MARKER) else {
                continue;
            };
            let expected = expected.trim();
            let shown = format!("{}:{}", file.display(), block.line);
            checked += 1;
            // Codes found only when `run` builds the config (missing secrets) are checked by
            // building with an empty environment.
            let result = Config::from_toml(&block.text, &shown)
                .and_then(|config| config.build_with(&NoSecrets, Arc::new(SystemClock)).map(|_| ()));
            match result {
                Ok(()) => failures.push(format!("{shown}: accepted, but should fail with {expected}")),
                Err(errors) => {
                    let codes: Vec<&str> = errors.codes().into_iter().map(Code::as_str).collect();
                    if !codes.contains(&expected) {
                        failures.push(format!("{shown}: expected {expected}, got {codes:?}\n{}", errors.render()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "error page examples:\n{}", failures.join("\n"));
    assert!(checked >= 1, "no `{EXPECT_MARKER}DB0xxx` block found in docs/");
}

#[test]
fn both_examples_validate() {
    for name in ["quickstart.toml", "hk-trading.toml"] {
        let path = root().join("examples").join(name);
        let text = read(&path);
        if let Err(errors) = Config::from_toml(&text, &format!("examples/{name}")) {
            panic!("examples/{name} does not validate:\n{}", errors.render());
        }
    }
}

#[test]
fn the_block_reader_finds_blocks_and_their_lines() {
    let md = "intro\n```toml\n# complete config\na = 1\n```\ntext\n```sh\nls\n```\n```toml\nb = 2\n```\n";
    let blocks = toml_blocks(md);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].line, 3);
    assert_eq!(first_line(&blocks[0].text), COMPLETE_MARKER);
    assert_eq!(blocks[1].text, "b = 2\n");
}

/// `"dingbridge_..."` string literals in a source file.
fn metric_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in source.match_indices("\"dingbridge_") {
        let rest = &source[i + 1..];
        let end =
            rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
        if rest[end..].starts_with('"') {
            names.push(rest[..end].to_owned());
        }
    }
    names
}

#[test]
fn every_emitted_metric_is_documented() {
    let spec = read(&root().join("docs/specs/instrumentation.md"));
    let mut names = Vec::new();
    for file in [
        "crates/engine/src/worker/mod.rs",
        "crates/server/src/metrics.rs",
        "crates/server/src/leader.rs",
        "crates/server/src/retention.rs",
    ] {
        names.extend(metric_names(&read(&root().join(file))));
    }
    assert!(names.len() >= 5, "found too few metric names: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !spec.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "metrics missing from docs/specs/instrumentation.md: {missing:?}");
}

#[test]
fn every_source_destination_and_message_type_is_in_the_config_spec() {
    let spec = read(&root().join("docs/specs/config.md"));
    let mut missing = Vec::new();
    let (sources, destinations) = (source_types(), destination_types());
    let types = [("source", &sources[..]), ("destination", &destinations[..]), ("message", &MESSAGE_TYPES[..])];
    for (what, names) in types {
        for name in names {
            // Written as `type = "name"` / `"name"` in a table row, or `name` in the message tables.
            if !spec.contains(&format!("`\"{name}\"`")) && !spec.contains(&format!("| `{name}` |")) {
                missing.push(format!("{what} type `{name}`"));
            }
        }
    }
    assert!(missing.is_empty(), "not documented in docs/specs/config.md: {missing:?}");
}
