use super::*;

#[test]
fn the_implemented_word_expands_to_the_port_tables_families() {
    let all: Vec<String> = moment_optim::port::families().map(String::from).collect();
    assert!(all.len() >= 17, "{all:?}");
    assert_eq!(parse_families(IMPLEMENTED), all);
    assert_eq!(parse_families(" implemented , "), all);
    let mut with = vec!["adam".to_string()];
    with.extend(all.iter().cloned());
    assert_eq!(parse_families("adam,implemented"), with);
    assert_eq!(parse_families("lion, muon"), ["lion", "muon"]);
}

/// The port table's family labels are the reference cases' own: every case of a ported
/// class is labelled with that class's family, and every implemented family has cases in
/// each directory `golden` runs by default (`--strict` requires it).
#[test]
fn port_families_match_the_reference_cases() {
    for dir in default_case_dirs() {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let case: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let family = case["optimizer"].as_str().unwrap();
            let class = case["reference"]["class"].as_str().unwrap();
            if let Some(ported) = moment_optim::port::family(class) {
                assert_eq!(ported, family, "{}: {class}", path.display());
            }
            seen.push(family.to_string());
        }
        for f in moment_optim::port::families() {
            assert!(
                seen.iter().any(|s| s == f),
                "no `{f}` case in {}",
                dir.display()
            );
        }
    }
}
