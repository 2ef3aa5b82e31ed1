//! The architecture, kept honest: dependencies point one way (actors → connectors → engine),
//! the engine stays pure, every source file says what it is for, and the README names every
//! error code a step can fail with.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn normal_deps(meta: &Value, package: &str) -> Vec<String> {
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    pkg["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null()) // normal dependencies, not dev or build
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dependencies_point_one_way_and_the_engine_stays_pure() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();

    let engine = normal_deps(&meta, "tollgate-engine");
    for forbidden in [
        "tokio",
        "ractor",
        "axum",
        "redis",
        "sqlx",
        "reqwest",
        "apalis",
        "apalis-core",
        "apalis-redis",
        "apalis-sqlite",
        "rquickjs",
        "tollgate-connectors",
        "tollgate",
    ] {
        assert!(!engine.iter().any(|d| d == forbidden), "tollgate-engine must not depend on {forbidden}");
    }
    let connectors = normal_deps(&meta, "tollgate-connectors");
    for forbidden in ["tollgate", "ractor", "axum", "apalis", "apalis-core", "apalis-redis", "apalis-sqlite"] {
        assert!(!connectors.iter().any(|d| d == forbidden), "tollgate-connectors must not depend on {forbidden}");
    }
    assert!(connectors.iter().any(|d| d == "tollgate-engine"));
    let actors = normal_deps(&meta, "tollgate");
    assert!(actors.iter().any(|d| d == "tollgate-engine") && actors.iter().any(|d| d == "tollgate-connectors"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_doc_comment_saying_what_it_is_for() {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["engine", "connectors", "actors", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` doc at the top: {missing:#?}");
}

#[test]
fn the_readme_lists_every_error_code_a_step_can_fail_with() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for c in tollgate_engine::step::ERROR_CODES {
        assert!(
            readme.contains(&format!("`{}`", c.code)),
            "README's error-code table lacks `{}` ({})",
            c.code,
            c.meaning
        );
    }
}
