//! The layers import only downwards: `http` → `service` → `store` → database. Nothing under `src/service/` or
//! `src/store/` may name the HTTP layer (its module, `ApiError`, axum), and nothing under `src/store/` may name the
//! service layer. Read from the source files, so that a shortcut fails CI rather than review.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The lines of `file` that name one of `forbidden`, comments left out (`file:line: text`).
fn offending_lines(file: &Path, forbidden: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or_default();
            forbidden
                .iter()
                .any(|f| code.contains(f))
                .then(|| format!("{}:{}: {}", file.display(), i + 1, line.trim()))
        })
        .collect()
}

fn check(layer: &str, forbidden: &[&str], at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let files = sources(&dir);
    assert!(
        files.len() >= at_least,
        "expected at least {at_least} files in {}, found {files:?}",
        dir.display()
    );
    let offending: Vec<String> = files
        .iter()
        .flat_map(|f| offending_lines(f, forbidden))
        .collect();
    assert!(
        offending.is_empty(),
        "src/{layer} must not use {forbidden:?}:\n{}",
        offending.join("\n")
    );
}

/// How the HTTP layer can be named from below it.
const HTTP: [&str; 5] = ["crate::http", "super::http", "http::", "ApiError", "axum"];

#[test]
fn the_service_layer_does_not_know_http() {
    check("service", &HTTP, 8);
}

#[test]
fn the_store_knows_neither_http_nor_the_service_layer() {
    let mut forbidden = HTTP.to_vec();
    forbidden.extend(["crate::service", "service::"]);
    check("store", &forbidden, 8);
}

#[test]
fn the_check_sees_what_it_forbids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.rs");
    std::fs::write(
        &file,
        "//! Mentions crate::http in a comment only.\nuse crate::http::error::ApiError; // twice\nfn f() {}\n",
    )
    .expect("write");
    let found = offending_lines(&file, &HTTP);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":2:"), "{found:?}");
}
