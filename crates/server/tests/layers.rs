//! The server's modules import one way: each may use the layers below it,
//! never one beside or above it. The layers, bottom first:
//!
//! 0. `error` (every failure answered over HTTP), `metrics`, `shutdown`
//! 1. `region`: the data directory, recovery, the writer
//! 2. `security`: tokens, TLS, listeners
//! 3. `peer`: replication between regions
//! 4. `standby`: followers inside a region (over the peer protocol)
//! 5. `backup`, `maintenance`
//! 6. `api`: the client API, in front of all of the above
//! 7. `config`: the file and environment, checked into each subsystem's settings
//! 8. `serve`: a region's process, assembled
//! 9. `dev`, `ctl`: commands
//!
//! A cycle between two modules makes each harder to read and to test
//! alone; this test names the line that would start one.

use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    &["error", "metrics", "shutdown"],
    &["region"],
    &["security"],
    &["peer"],
    &["standby"],
    &["backup", "maintenance"],
    &["api"],
    &["config"],
    &["serve"],
    &["dev", "ctl"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::NAME` paths on the line's code (not its comment).
fn imports(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // `meridian_crate::` or `$crate::` are other things.
            *i == 0
                || !code.as_bytes()[i - 1].is_ascii_alphanumeric()
                    && code.as_bytes()[i - 1] != b'_'
                    && code.as_bytes()[i - 1] != b'$'
        })
        .map(|(i, m)| {
            let rest = &code[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_str()
            .expect("utf-8")
            .trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        let Some(own) = layer(module) else {
            wrong.push(format!("{}: module {module} is in no layer", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            for used in imports(line) {
                checked += 1;
                if used == module {
                    continue;
                }
                match layer(used) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!(
                        "{}:{}: {module} (layer {own}) uses crate::{used}: {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    )),
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} imports found: is the scan broken?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_sees_imports_and_skips_comments() {
    assert_eq!(imports("use crate::region::Settings;"), ["region"]);
    assert_eq!(
        imports("let x = crate::peer::a(crate::error::B); // crate::api"),
        ["peer", "error"]
    );
    assert!(imports("//! see `crate::api::gate`").is_empty());
    assert!(imports("meridian_crate::x; $crate::y").is_empty());
}
