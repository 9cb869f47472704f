//! The port table and the lists derived from it agree with what the lookup accepts.

use burn::backend::NdArray;

use super::*;

type B = NdArray<f32>;

#[test]
fn every_supported_class_and_alias_is_found_and_ports_with_its_defaults() {
    assert!(!SUPPORTED_CLASSES.is_empty());
    for class in SUPPORTED_CLASSES {
        assert!(
            lookup(class).is_some(),
            "{class} is listed but not looked up"
        );
        assert!(family(class).is_some(), "{class} has no family");
        let ported = from_reference::<B>(class, &RefArgs::new());
        assert!(ported.is_ok(), "{class}: {:?}", ported.err());
    }
}

#[test]
fn the_supported_list_is_the_table_flattened_without_duplicates() {
    let flat: Vec<&str> = PORTS
        .iter()
        .flat_map(|p| p.classes.iter().copied())
        .collect();
    assert_eq!(SUPPORTED_CLASSES, flat.as_slice());
    for (i, c) in SUPPORTED_CLASSES.iter().enumerate() {
        assert!(
            !SUPPORTED_CLASSES[..i].contains(c),
            "{c} is in two rows of the port table"
        );
    }
    // Aliases are listed (they used to be accepted but missing from the list).
    for alias in [
        "transformers.Adafactor",
        "sophia.SophiaG",
        "pytorch_optimizer.Lion",
        "bitsandbytes.optim.PagedAdamW8bit",
    ] {
        assert!(SUPPORTED_CLASSES.contains(&alias), "{alias}");
    }
}

#[test]
fn aliases_port_exactly_as_the_class_they_alias() {
    let mut args = RefArgs::new();
    args.insert("weight_decay".into(), ArgValue::Float(0.25));
    for p in PORTS.iter().filter(|p| p.classes.len() > 1) {
        let first = from_reference::<B>(p.classes[0], &args).unwrap();
        for alias in &p.classes[1..] {
            let other = from_reference::<B>(alias, &args).unwrap();
            assert_eq!(first.lr, other.lr, "{alias}");
            assert_eq!(
                format!("{:?}", first.chain),
                format!("{:?}", other.chain),
                "{alias}"
            );
        }
    }
}

#[test]
fn an_unknown_class_is_unsupported_and_the_error_lists_every_name() {
    for class in [
        "torch.optim.SGD",
        "torch.optim.adamw",
        "",
        "torch.optim.AdamW ",
    ] {
        assert!(lookup(class).is_none());
        assert_eq!(family(class), None);
        let Err(OptimError::Port(e @ PortError::UnknownClass { .. })) =
            from_reference::<B>(class, &RefArgs::new())
        else {
            panic!("{class:?} must be unsupported");
        };
        let reason = e.to_string();
        assert!(reason.contains(&format!("`{class}`")), "{reason}");
        let (_, listed) = reason.split_once("(supported: ").unwrap();
        let listed: Vec<&str> = listed.trim_end_matches(')').split(", ").collect();
        assert_eq!(listed, SUPPORTED_CLASSES, "{reason}");
    }
}

#[test]
fn families_are_distinct_cover_every_row_and_name_the_reference_labels() {
    let fams: Vec<&str> = families().collect();
    for (i, f) in fams.iter().enumerate() {
        assert!(!fams[..i].contains(f), "{f} twice");
        assert!(
            !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{f} is not a kebab-case family label"
        );
    }
    for p in PORTS {
        assert!(fams.contains(&p.family));
    }
    for (class, f) in [
        ("torch.optim.Adam", "adam"),
        ("torch.optim.AdamW", "adamw"),
        ("transformers.optimization.Adafactor", "adafactor"),
        ("torch.optim.Adafactor", "adafactor"),
        ("bitsandbytes.optim.PagedAdam8bit", "adam8bit"),
        ("bitsandbytes.optim.AdamW8bit", "adamw8bit"),
        ("pytorch_optimizer.SophiaH", "sophia"),
        ("pytorch_optimizer.ScalableShampoo", "shampoo"),
        ("schedulefree.AdamWScheduleFree", "schedulefree-adamw"),
        ("pytorch_optimizer.AdamMini", "adam-mini"),
    ] {
        assert_eq!(family(class), Some(f), "{class}");
    }
}

#[test]
fn an_argument_without_equivalent_is_a_port_error_naming_it() {
    let cases: [(&str, &str, ArgValue); 5] = [
        ("pytorch_optimizer.Lamb", "rectify", ArgValue::Bool(true)),
        ("pytorch_optimizer.CAME", "ams_bound", ArgValue::Bool(true)),
        ("pytorch_optimizer.MARS", "maximize", ArgValue::Bool(true)),
        (
            "pytorch_optimizer.Lamb",
            "fixed_decay",
            ArgValue::Bool(true),
        ),
        (
            "pytorch_optimizer.SOAP",
            "data_format",
            ArgValue::Str("channels_last".into()),
        ),
    ];
    for (class, arg, value) in cases {
        let args = RefArgs::from([(arg.to_string(), value)]);
        let Err(e) = from_reference::<B>(class, &args) else {
            panic!("{class}({arg}) must be refused");
        };
        assert!(
            matches!(&e, OptimError::Port(PortError::UnsupportedArgument { argument, .. }) if *argument == arg),
            "{class}({arg}): {e:?}"
        );
        // The message keeps its prefix; the port error is the source.
        assert!(
            e.to_string()
                .starts_with("unsupported reference optimizer: "),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<PortError>().is_some(), "{source:?}");
    }
    // A bad value (not an unimplemented one) stays a config error.
    let args = RefArgs::from([("rectify".to_string(), ArgValue::Str("yes".into()))]);
    assert!(matches!(
        from_reference::<B>("pytorch_optimizer.Lamb", &args),
        Err(OptimError::InvalidConfig {
            field: "rectify",
            ..
        })
    ));
}
