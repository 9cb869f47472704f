//! The reference runner against the project's cases and against directories it has never seen.

use std::path::PathBuf;

use moment_examples::golden::{Status, default_cases_dir, run_dir, run_file};
use serde_json::Value;

#[test]
fn every_adam_and_adamw_case_passes() {
    let (results, summary) =
        run_dir(&default_cases_dir(), &["adam".into(), "adamw".into()]).unwrap();
    assert!(summary.passed >= 5, "{summary}");
    for r in &results {
        assert_eq!(r.status, Status::Pass, "{r}");
        assert!(r.state_compared > 0, "final state must be compared: {r}");
        assert!(r.worst_ratio <= 1.0);
    }
}

#[test]
fn families_not_implemented_are_unsupported_never_pass() {
    let (results, summary) = run_dir(&default_cases_dir(), &[]).unwrap();
    assert_eq!(summary.failed, 0, "{summary}");
    for r in results {
        let implemented = r.family == "adam" || r.family == "adamw";
        assert_eq!(implemented, r.status == Status::Pass, "{r}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moment-golden-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(id: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(default_cases_dir().join(format!("{id}.json"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_perturbed_expectation_fails() {
    // Move one expected parameter at step 5 by 3× the allowed error: the runner must catch it.
    let dir = scratch("perturbed");
    let mut case = load("adamw-default");
    let tol =
        case["tolerance"]["atol"].as_f64().unwrap() + case["tolerance"]["rtol"].as_f64().unwrap();
    let v = &mut case["steps"][4]["params"][1][3];
    let x = v.as_f64().unwrap();
    *v = Value::from(x + 3.0 * tol * (1.0 + x.abs()));
    case["id"] = "perturbed".into();
    std::fs::write(dir.join("perturbed.json"), case.to_string()).unwrap();
    let r = run_file(&dir.join("perturbed.json"));
    match r.status {
        Status::Fail(why) => assert!(why.contains("step 5"), "{why}"),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

#[test]
fn a_wrong_hyper_parameter_fails() {
    // The recorded trajectory of amsgrad=true cannot be met with amsgrad=false.
    let dir = scratch("wrong-arg");
    let mut case = load("adam-l2-amsgrad");
    case["reference_args"]["amsgrad"] = Value::Bool(false);
    std::fs::write(dir.join("c.json"), case.to_string()).unwrap();
    assert!(matches!(
        run_file(&dir.join("c.json")).status,
        Status::Fail(_)
    ));
}

#[test]
fn unseen_directories_unknown_classes_and_broken_files() {
    let dir = scratch("unseen");
    // A case for an unknown class, derived from a real one.
    let mut case = load("adam-default");
    case["id"] = "mystery".into();
    case["optimizer"] = "mystery".into();
    case["reference"]["class"] = "somepkg.Mystery".into();
    std::fs::write(dir.join("mystery.json"), case.to_string()).unwrap();
    // An unknown constructor argument for a known class is an error, not silently ignored.
    let mut case = load("adam-default");
    case["id"] = "unknown-arg".into();
    case["reference_args"]["nesterov"] = Value::Bool(true);
    std::fs::write(dir.join("unknown-arg.json"), case.to_string()).unwrap();
    // Truncated JSON.
    std::fs::write(dir.join("broken.json"), "{\"format\": 1, \"id\": ").unwrap();
    // Not a case at all: ignored.
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();

    let (results, summary) = run_dir(&dir, &[]).unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        (summary.passed, summary.failed, summary.unsupported),
        (0, 2, 1),
        "{summary}"
    );
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap().status.clone();
    assert!(matches!(by_id("mystery"), Status::Unsupported(_)));
    assert!(matches!(by_id("unknown-arg"), Status::Fail(m) if m.contains("nesterov")));
    assert!(matches!(by_id("broken"), Status::Fail(_)));
}
