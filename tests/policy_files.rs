//! Policy files end to end: the shipped policies are valid, every broken policy is rejected
//! with the located message written in its `# expect:` lines, and no input makes the parser
//! panic.

use canaryd::policy::parse_policy;
use proptest::prelude::*;
use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn shipped_policies_are_valid() {
    let files = yaml_files("policies");
    assert!(files.len() >= 4, "policies/ should hold the reference and the seed examples");
    for f in files {
        if let Err(e) = parse_policy(&f.display().to_string(), &read(&f)) {
            panic!("{} should be valid:\n{e}", f.display());
        }
    }
}

#[test]
fn broken_policies_are_rejected_with_located_messages() {
    let files = yaml_files("tests/policies/broken");
    assert!(files.len() >= 10);
    for f in files {
        let text = read(&f);
        let name = f.display().to_string();
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{name} has no # expect: line");
        let err = match parse_policy(&name, &text) {
            Ok(_) => panic!("{name} should be rejected"),
            Err(e) => e.to_string(),
        };
        for want in expected {
            assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
        }
    }
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: r}\nspec:\n  target: {virtualService: r, stable: {subset: v1}, canary: {subset: v2}}\n  steps:\n    - weight: 150\n    - weight: 0\n  analysis: {confidence: 2, interval: 1s}\n";
    let err = parse_policy("p.yaml", text).unwrap_err();
    assert!(err.0.len() >= 4, "expected 4+ problems, got:\n{err}");
}

#[test]
fn a_five_line_policy_gets_useful_defaults() {
    let text = read(Path::new("policies/bookinfo-reviews.yaml"));
    let p = parse_policy("bookinfo-reviews.yaml", &text).unwrap();
    let weights: Vec<_> = p.spec().steps.iter().filter_map(|s| s.weight).collect();
    assert_eq!(weights, [10, 30, 60]);
    assert_eq!(p.spec().analysis.confidence, 0.99);
    assert_eq!(p.namespace(), "bookinfo");
}

const VALID: &str = include_str!("../policies/reference.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_policy("fuzz.yaml", &text);
    }

    #[test]
    fn truncated_valid_policy_never_panics(cut in 0usize..VALID.len()) {
        let mut end = cut;
        while !VALID.is_char_boundary(end) { end -= 1; }
        let _ = parse_policy("cut.yaml", &VALID[..end]);
    }

    #[test]
    fn mutated_valid_policy_never_panics(pos in 0usize..VALID.len(), replacement in "[ -~\n\t:{}\\[\\]\"'#&*!|>-]{0,8}") {
        let mut start = pos;
        while !VALID.is_char_boundary(start) { start -= 1; }
        let mut end = (start + 3).min(VALID.len());
        while !VALID.is_char_boundary(end) { end += 1; }
        let text = format!("{}{}{}", &VALID[..start], replacement, &VALID[end..]);
        let _ = parse_policy("mutated.yaml", &text);
    }
}

fn validate_cli(args: &[&std::path::Path]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("validate").args(args).output().unwrap()
}

const MINIMAL: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: shop}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}\n";

#[test]
fn a_configmap_mount_is_read_once() {
    // The kubelet's layout: key → ..data/key → ..<timestamp>/key.
    let dir = tempfile::tempdir().unwrap();
    let stamped = dir.path().join("..2026_12_02_01_00_00.123456789");
    std::fs::create_dir(&stamped).unwrap();
    std::fs::write(stamped.join("reviews.yaml"), MINIMAL).unwrap();
    std::os::unix::fs::symlink("..2026_12_02_01_00_00.123456789", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/reviews.yaml", dir.path().join("reviews.yaml")).unwrap();
    let out = validate_cli(&[dir.path()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "1 policy valid", "{stderr}");
}

#[test]
fn two_definitions_of_one_policy_are_an_error_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("b.yaml"), MINIMAL.replace("subset: v2", "subset: v3")).unwrap();
    let out = validate_cli(&[dir.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("b.yaml") && stderr.contains("metadata.name"), "{stderr}");
    assert!(stderr.contains("shop/reviews is also defined in") && stderr.contains("a.yaml"), "{stderr}");
}
