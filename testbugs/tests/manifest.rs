//! The manifest agrees with the programs, and every program compiles.

use reprise_testbugs::{build_manifest, corpus_dir, load_manifest, BugKind, Lang};

#[test]
fn manifest_matches_programs_and_all_compile() {
    let m = load_manifest().expect("manifest parses");
    m.validate(&corpus_dir())
        .expect("manifest is consistent with the programs");
    assert!(m.bugs.len() >= 17, "only {} programs", m.bugs.len());
    assert!(m.bugs.iter().any(|b| b.lang == Lang::Cxx), "no C++ program");
    for k in BugKind::ALL {
        assert!(m.bugs.iter().any(|b| b.kind == k), "no program of kind {k}");
    }
    for b in &m.bugs {
        assert!(
            b.models.chars().any(|c| c.is_ascii_digit()),
            "{}: models names no bug number",
            b.name
        );
        assert!(
            !b.args.is_empty() && !b.frequent_args.is_empty(),
            "{}: args",
            b.name
        );
        assert_ne!(
            b.args, b.frequent_args,
            "{}: frequent_args equal args",
            b.name
        );
    }
    let out = std::env::temp_dir().join(format!("reprise-testbugs-build-{}", std::process::id()));
    let built = build_manifest(&m, &corpus_dir(), &out).expect("every program compiles");
    assert_eq!(built.len(), m.bugs.len());
    for b in &built {
        assert!(b.exe.is_file(), "{} missing", b.exe.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn validation_reports_a_bad_race_line() {
    let mut m = load_manifest().unwrap();
    m.bugs[0].race_lines[0] = format!("{}:1", m.bugs[0].source);
    let err = m.validate(&corpus_dir()).unwrap_err().to_string();
    assert!(err.contains("not a /* RACE */ line"), "{err}");
}
