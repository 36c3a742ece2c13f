//! `canaryd validate PATH...`: every problem in every file, then exit 0 or 1.

use super::Format;
use crate::policy::{self, Diagnostic};
use std::path::{Path, PathBuf};

/// Collects policy files: the files given, and *.yaml / *.yml below the directories given.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    collect_with_dirs(paths).map(|(files, _)| files)
}

/// Like [`collect`], and also the directories walked (a new, removed or renamed file changes
/// one of their modification times; the daemon watches them).
pub fn collect_with_dirs(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let (mut out, mut dirs) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, &mut dirs)
                .map_err(|e| format!("cannot read directory {}: {e}", p.display()))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{} does not exist", p.display()));
        }
    }
    Ok((out, dirs))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) -> std::io::Result<()> {
    dirs.push(dir.to_path_buf());
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    // The daemon walks its policy directory often: names compare as bytes (within one
    // directory the same order as whole paths), computed once per entry.
    entries.sort_by_cached_key(|e| e.file_name());
    for e in entries {
        // A ConfigMap volume holds each key three times: `key` → `..data/key` →
        // `..<timestamp>/key`. Dot-entries are the kubelet's bookkeeping (and editors' swap
        // files), never policies.
        let name = e.file_name();
        if name.as_encoded_bytes().first() == Some(&b'.') {
            continue;
        }
        let p = e.path();
        // The entry's own type needs no stat; a symlink is followed to what it points at.
        let is_dir = match e.file_type() {
            Ok(t) if !t.is_symlink() => t.is_dir(),
            _ => p.is_dir(),
        };
        if is_dir {
            walk(&p, out, dirs)?;
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    Ok(())
}

pub fn run(paths: &[PathBuf], format: Format) -> i32 {
    // One group per argument: a directory is what `canaryd run --policies` would read, so two
    // definitions of one policy inside it are an error; copies in different arguments (a repo's
    // policies/ and its examples) are not.
    let groups = match paths.iter().map(|p| collect(std::slice::from_ref(p))).collect::<Result<Vec<_>, _>>() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let files: Vec<PathBuf> = groups.iter().flatten().cloned().collect();
    let mut problems: Vec<Diagnostic> = Vec::new();
    let mut valid = vec![Vec::new(); groups.len()];
    let group_of = |file: &PathBuf| groups.iter().position(|g| g.contains(file)).unwrap_or(0);
    for file in &files {
        let name = file.display().to_string();
        match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => match policy::parse_policy(&name, &text) {
                    Ok(p) => valid[group_of(file)].push(p),
                    Err(d) => problems.extend(d.0),
                },
                Err(_) => problems.push(
                    Diagnostic::at(&name, None, "", "the file is not UTF-8 text".into())
                        .help("save the policy as UTF-8"),
                ),
            },
            Err(e) => problems.push(Diagnostic::at(&name, None, "", format!("cannot read: {e}"))),
        }
    }
    for group in &valid {
        problems.extend(policy::duplicates(group).into_iter().map(|(_, d)| d));
    }
    match format {
        Format::Json => {
            let out =
                serde_json::json!({ "files": files.len(), "valid": problems.is_empty(), "errors": problems });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => {
            for p in &problems {
                eprintln!("{p}");
            }
            if problems.is_empty() {
                println!("{} {} valid", files.len(), if files.len() == 1 { "policy" } else { "policies" });
            } else {
                eprintln!(
                    "{} {} in {} {}",
                    problems.len(),
                    if problems.len() == 1 { "error" } else { "errors" },
                    files.len(),
                    if files.len() == 1 { "file" } else { "files" }
                );
            }
        }
    }
    if files.is_empty() {
        eprintln!("error: no policy files (*.yaml, *.yml) found");
        return 2;
    }
    i32::from(!problems.is_empty())
}
