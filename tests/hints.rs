//! Root device hints and install-device choice: the specs_matcher grammar (cases from
//! oslo.utils' own test table), IPA's hint parsing and normalisation, list-mode
//! matching, skip lists with md volume names, `get_os_install_device` over hand-made
//! disk lists, the udev/sysfs readers on fixture trees, and property tests.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::fixtures::block_device;
use ira::blockdev::hints::specs::{self, Operand};
use ira::blockdev::hints::{
    classify_raid_arrays, device_matches, extract_operator_and_values, find_devices_by_hints,
    match_root_device_hints, normalize_expression, py, HintDevice, HintError, HintName, HintSpec,
    MdArray, NormalizeError, PyErrorKind, RaidAction, RootDeviceHints, SkipList, SkipListError,
};
use ira::blockdev::install_device::{
    get_os_install_device, guess_root_disk, list_mode_devices, needs_md_arrays, read_md_arrays,
    root_device_hints, InstallDeviceError, InstallDeviceQuery, RaidVolume, MIN_ROOT_DISK_SIZE,
};
use ira::blockdev::AllowList;
use ira_hw::BlockDevice;
use proptest::prelude::*;
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

fn hints(v: Value) -> RootDeviceHints {
    RootDeviceHints::parse(&v)
        .unwrap()
        .expect("non-empty hints")
}

fn spec_of(v: Value, name: HintName) -> HintSpec {
    hints(v).get(name).cloned().unwrap()
}

// ---------------------------------------------------------------------------------------
// specs_matcher

#[test]
fn specs_matcher_table_from_oslo() {
    // (device value, spec, matches): oslo.utils test_specs_matcher.py cases.
    let cases: &[(&str, &str, bool)] = &[
        ("1", "1", true),
        ("01", "1", false),
        ("01", "== 1", true),
        ("", "1", false),
        ("3", "1", false),
        ("222", "2", false),
        ("4", "! 2", false),
        ("123", "= 123", true),
        ("124", "= 123", true),
        ("34", "= 234", false),
        ("34", "=", false),
        ("123", "s== 123", true),
        ("1234", "s== 123", false),
        ("1234", "s!= 123", true),
        ("123", "s!= 123", false),
        ("234", "s>= 1000", true),
        ("234", "s>= 234", true),
        ("1000", "s>= 234", false),
        ("1000", "s<= 1234", true),
        ("1234", "s<= 1234", true),
        ("1234", "s<= 1000", false),
        ("12", "s< 2", true),
        ("2", "s< 12", false),
        ("12", "s< 12", false),
        ("2", "s> 12", true),
        ("12", "s> 2", false),
        ("12", "s> 12", false),
        ("12311321", "<in> 11", true),
        ("12311321", "<in> 12311321", true),
        ("12311321", "<in> 12311321 <in>", true),
        ("12310321", "<in> 11", false),
        ("12310321", "<in> 11 <in>", false),
        ("12", "<or> 11 <or> 12", true),
        ("12", "<or> 11 <or> 12 <or>", true),
        ("12", "<or> 12", true),
        ("13", "<or> 11 <or> 12", false),
        ("13", "<or> 11 <or> 12 <or>", false),
        ("13", "<or> 11", false),
        ("2", "<= 10", true),
        ("10", "<= 10", true),
        ("3", "<= 2", false),
        ("3", ">= 1", true),
        ("3.0", ">= 3", true),
        ("3", "> 1", true),
        ("3", "> 3", false),
        ("3.0", "> 2", true),
        ("3", "< 5", true),
        ("3", "< 3", false),
        ("1.0", "< 6", true),
        ("2", ">= 3", false),
        ("3.2", "!= 3.1", true),
        ("3.2", "!= 3.2", false),
        ("3", "== 3", true),
        ("3.0", "== 3", true),
        ("3.0", "== 3.1", false),
        ("['aes', 'mmx', 'aux']", "<all-in> aes mmx", true),
        ("['aes', 'mmx', 'aux']", "<all-in> mmx", true),
        ("['aes', 'mmx', 'aux']", "<all-in>  txt", false),
        ("['aes', 'mmx', 'aux']", "<all-in> txt 3dnow", false),
        ("['aes', 'mmx', 'aux']", "<all-in> txt aes", false),
        ("['X_X']", "<all-in> _", false),
        ("['X___X']", "<all-in> ___", false),
        ("['aes', 'mmx', 'aux']", "<all-in> XaesX", false),
        ("['aes', 'mmx', 'aux']", "<all-in> e", false),
        ("23", "<range-in> [ 10 20 ]", false),
        ("23", "<range-in> [ 10 20 )", false),
        ("5", "<range-in> [ 10 20 ]", false),
        ("5", "<range-in> ( 10 20 ]", false),
        ("20.3", "<range-in> [ 10.1 20.2 ]", false),
        ("20.3", "<range-in> [ 10.1 20.2 )", false),
        ("5.0", "<range-in> [ 5.1 20.2 ]", false),
        ("5.0", "<range-in> ( 5.1 20.2 ]", false),
        ("10", "<range-in> [ 10 20 ]", true),
        ("10", "<range-in> ( 10 20 ]", false),
        ("10.1", "<range-in> [ 10.1 20 ]", true),
        ("10.1", "<range-in> ( 10.1 20 ]", false),
        ("15", "<range-in> [ 10 20 ]", true),
        ("15.5", "<range-in> [ 10 20 ]", true),
        ("20", "<range-in> [ 10 20 ]", true),
        ("20", "<range-in> [ 10 20 )", false),
        ("20.5", "<range-in> [ 10 20.5 ]", true),
        ("20.5", "<range-in> [ 10 20.5 )", false),
        ("12.5", "<range-in> [ 10.1 20.1 ]", true),
        ("10.1", "<range-in> [ 10.1 10.1 ]", true),
        // Operators glued to their value still parse; whitespace around is skipped.
        ("abc", "s==abc", true),
        ("5", "  >=   4  ", true),
    ];
    for (value, spec, want) in cases {
        assert_eq!(
            specs::matches(Operand::Str(value), spec),
            Ok(*want),
            "value {value:?} spec {spec:?}"
        );
    }
}

#[test]
fn specs_matcher_errors_keep_python_classes() {
    // (value, spec, python error class)
    let cases: &[(Operand, &str, PyErrorKind)] = &[
        // float() of a non-number: ValueError.
        (Operand::Str("abc"), "> 5", PyErrorKind::Value),
        // `<range-in> [ 10 ]` is really `<` applied to `range-in>`.
        (Operand::Str("23"), "<range-in> [ 10 ]", PyErrorKind::Value),
        // Three atoms are not a range either.
        (Operand::Str("23"), "<range-in> 10 20 ]", PyErrorKind::Value),
        (
            Operand::Str("23"),
            "<range-in> { 10 20 }",
            PyErrorKind::Other,
        ),
        (
            Operand::Str("23"),
            "<range-in> ) 10 20 (",
            PyErrorKind::Other,
        ),
        (
            Operand::Str("23"),
            "<range-in> [ 20 10 ]",
            PyErrorKind::Other,
        ),
        (Operand::Str("aes"), "<all-in> aes", PyErrorKind::Value),
        (
            Operand::Str("{'aes': 1}"),
            "<all-in> aes",
            PyErrorKind::Other,
        ),
        (Operand::Str("^&*($"), "<all-in> aes", PyErrorKind::Other),
        (Operand::Str("123"), "<all-in> aes", PyErrorKind::Other),
        // Strings and floats do not order in Python 3.
        (Operand::Num(1.0), "s< 2", PyErrorKind::Other),
        (Operand::Num(1.0), "<in> 1", PyErrorKind::Other),
    ];
    for (value, spec, kind) in cases {
        let err = specs::matches(*value, spec).expect_err(spec);
        assert_eq!(err.kind, *kind, "{value:?} {spec:?}: {err}");
    }
    // Equality of a float and a string is simply false (or true for s!=).
    assert_eq!(specs::matches(Operand::Num(100.0), "s== 100"), Ok(false));
    assert_eq!(specs::matches(Operand::Num(100.0), "s!= 100"), Ok(true));
    assert_eq!(specs::matches(Operand::Num(100.0), "<or> 100"), Ok(false));
    assert_eq!(specs::matches(Operand::Num(100.0), "== 100"), Ok(true));
    assert_eq!(specs::matches(Operand::Num(99.5), "= 99"), Ok(true));
}

#[test]
fn grammar_tokens_like_pyparsing() {
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("foo", Some(&["foo"])),
        ("foo bar", Some(&["foo"])),
        ("== 1", Some(&["==", "1"])),
        ("=1", Some(&["=", "1"])),
        ("s==abc", Some(&["s==", "abc"])),
        ("s<= a", Some(&["s<=", "a"])),
        ("<in> a <in> b", Some(&["<in>", "a"])),
        ("<or> a <or> b <or>", Some(&["<or>", "a", "b"])),
        ("<all-in> a b c", Some(&["<all-in>", "a", "b", "c"])),
        (
            "<range-in> ( 1 2 ]",
            Some(&["<range-in>", "(", "1", "2", "]"]),
        ),
        ("<range-in> [ 10 ]", Some(&["<", "range-in>"])),
        ("<or>", Some(&["<", "or>"])),
        ("! 2", Some(&["!"])),
        ("=", None),
        ("<in>", None),
        ("s== <x", None),
        ("", None),
    ];
    for (spec, want) in cases {
        let got = specs::parse(spec).ok();
        assert_eq!(got.as_deref(), *want, "{spec:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Normalisation and parsing (IPA's test_device_hints.py cases)

#[test]
fn normalisation_table() {
    let cases = [
        (
            "<or> foo <or> foo bar <or> bar",
            "<or> foo <or> foo%20bar <or> bar",
        ),
        (
            "<in> foo <in> foo bar <in> bar",
            "<in> foo <in> foo%20bar <in> bar",
        ),
        (
            "s== test string with space",
            "s== test%20string%20with%20space",
        ),
        ("s!= SpongeBob", "s!= spongebob"),
        ("no operators", "no%20operators"),
        ("NoSpace", "nospace"),
        ("  1:0:0:0 ", "1%3A0%3A0%3A0"),
        (
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
            "/dev/disk/by-path/pci-0000%3A00%3A17.0-ata-1",
        ),
        // The operator splits the text wherever it occurs (IPA uses re.split).
        ("s== a s== b", "s== a s== b"),
    ];
    for (input, want) in cases {
        assert_eq!(
            normalize_expression(input).as_deref(),
            Ok(want),
            "{input:?}"
        );
    }
    assert_eq!(normalize_expression(""), Err(NormalizeError::Empty));
    assert_eq!(normalize_expression("   "), Err(NormalizeError::Empty));
    assert_eq!(normalize_expression(">"), Err(NormalizeError::Syntax));

    assert_eq!(
        extract_operator_and_values(">= 123"),
        Ok((">=".to_owned(), vec!["123".to_owned()]))
    );
    assert_eq!(
        extract_operator_and_values("<or> foo <or> foo bar <or> bar"),
        Ok((
            "<or>".to_owned(),
            vec!["foo".into(), "foo bar".into(), "bar".into()]
        ))
    );
    assert_eq!(
        extract_operator_and_values("123"),
        Ok((String::new(), vec!["123".to_owned()]))
    );
}

#[test]
fn parse_without_operators() {
    let parsed = hints(json!({
        "wwn": "123456", "model": "FOO model", "size": 12345,
        "serial": "foo-serial", "vendor": "foo VENDOR with space",
        "name": "/dev/sda", "wwn_with_extension": "123456111",
        "wwn_vendor_extension": "111", "rotational": true,
        "hctl": "1:0:0:0", "by_path": "/dev/disk/by-path/1:0:0:0", "tran": "SAS"
    }));
    assert_eq!(
        parsed.to_json(),
        json!({
            "wwn": "s== 123456", "model": "s== foo%20model",
            "size": "== 12345", "serial": "s== foo-serial",
            "vendor": "s== foo%20vendor%20with%20space",
            "name": "s== /dev/sda", "wwn_with_extension": "s== 123456111",
            "wwn_vendor_extension": "s== 111", "rotational": true,
            "hctl": "s== 1%3A0%3A0%3A0",
            "by_path": "s== /dev/disk/by-path/1%3A0%3A0%3A0", "tran": "s== sas"
        })
    );
}

#[test]
fn parse_with_operators() {
    let parsed = hints(json!({
        "wwn": "s== 123456", "model": "s== foo MODEL", "size": ">= 12345",
        "serial": "s!= foo-serial", "name": "<or> /dev/sda <or> /dev/sdb",
        "hctl": "s== 1:0:0:0", "rotational": "off"
    }));
    assert_eq!(
        parsed.to_json(),
        json!({
            "wwn": "s== 123456", "model": "s== foo%20model", "size": ">= 12345",
            "serial": "s!= foo-serial", "name": "<or> /dev/sda <or> /dev/sdb",
            "hctl": "s== 1%3A0%3A0%3A0", "rotational": false
        })
    );
    // size keeps its text as written (IPA neither trims nor lower-cases it).
    assert_eq!(
        spec_of(
            json!({"size": "<or> 123 <or> 456 <or> 789"}),
            HintName::Size
        ),
        HintSpec::Expr("<or> 123 <or> 456 <or> 789".into())
    );
    for size in [json!(12345), json!("12345")] {
        assert_eq!(
            spec_of(json!({ "size": size }), HintName::Size),
            HintSpec::Expr("== 12345".into())
        );
    }
}

#[test]
fn rotational_words() {
    for (v, want) in [
        (json!(true), true),
        (json!("true"), true),
        (json!("on"), true),
        (json!("y"), true),
        (json!("YES"), true),
        (json!(" 1 "), true),
        (json!(1), true),
        (json!("t"), true),
        (json!(false), false),
        (json!("false"), false),
        (json!("off"), false),
        (json!("n"), false),
        (json!("no"), false),
        (json!(0), false),
        (json!("F"), false),
    ] {
        assert_eq!(
            spec_of(json!({ "rotational": v.clone() }), HintName::Rotational),
            HintSpec::Bool(want),
            "{v}"
        );
    }
}

#[test]
fn invalid_hints_use_ipa_messages() {
    let err = |v: Value| RootDeviceHints::parse(&v).unwrap_err().to_string();
    assert_eq!(
        err(json!({"non-existent": "foo"})),
        "The hints \"non-existent\" are invalid. Valid hints are: \"size, model, wwn, serial, \
         vendor, wwn_with_extension, wwn_vendor_extension, name, rotational, hctl, by_path, tran\""
    );
    for name in [
        "wwn",
        "wwn_with_extension",
        "wwn_vendor_extension",
        "model",
        "serial",
        "vendor",
        "name",
        "hctl",
        "by_path",
        "tran",
    ] {
        assert_eq!(
            err(json!({ name: 123 })),
            format!("Root device hint \"{name}\" is not a string value. Hint expression: 123")
        );
    }
    assert_eq!(
        err(json!({"size": "not-int"})),
        "Root device hint \"size\" is not an integer value. Current value: not-int"
    );
    assert_eq!(
        err(json!({"size": -123})),
        "Root device hint \"size\" should be a positive integer. Current value: -123"
    );
    assert_eq!(
        err(json!({"size": 0})),
        "Root device hint \"size\" should be a positive integer. Current value: 0"
    );
    assert_eq!(
        err(json!({"size": "<or> 123 <or> non-int <or> 789"})),
        "Root device hint \"size\" is not an integer value. Current value: <or> 123 <or> non-int <or> 789"
    );
    // `<range-in>` on size is rejected by IPA: its brackets are not integers.
    assert_eq!(
        err(json!({"size": "<range-in> [ 10 20 ]"})),
        "Root device hint \"size\" is not an integer value. Current value: <range-in> [ 10 20 ]"
    );
    assert_eq!(
        err(json!({"size": 10.5})),
        "Root device hint \"size\" is not an integer value. Current value: 10.5"
    );
    assert_eq!(
        err(json!({"rotational": "not-bool"})),
        "Root device hint \"rotational\" is not a Boolean value. Current value: not-bool"
    );
    assert_eq!(
        err(json!({"model": "  "})),
        "Root device hint model expression is empty"
    );
    assert_eq!(
        err(json!({"size": ""})),
        "Root device hint size expression is empty"
    );
    assert!(matches!(
        RootDeviceHints::parse(&json!({"model": "s=="})),
        Err(HintError::Syntax { name: "model", .. })
    ));
    // Every hint is validated before operators are added (IPA's two passes): the
    // vendor error wins over the size text the grammar cannot parse.
    assert_eq!(
        err(json!({"size": "\u{2003}< 10", "vendor": true})),
        "Root device hint \"vendor\" is not a string value. Hint expression: True"
    );
    assert!(matches!(
        RootDeviceHints::parse(&json!({"size": "\u{2003}< 10"})),
        Err(HintError::Syntax { name: "size", .. })
    ));
    assert!(matches!(
        RootDeviceHints::parse(&json!("sda")),
        Err(HintError::NotAnObject(_))
    ));
    // Empty and null hints are "no hints".
    assert_eq!(RootDeviceHints::parse(&json!({})), Ok(None));
    assert_eq!(RootDeviceHints::parse(&Value::Null), Ok(None));
}

// ---------------------------------------------------------------------------------------
// Matching (IPA's MatchRootDeviceTestCase devices)

fn ipa_devices() -> Vec<HintDevice> {
    let mut sda = block_device("/dev/sda", 64424509440);
    sda.model = Some("ok model".into());
    sda.serial = Some("fakeserial".into());
    sda.wwn = Some("wwn_1".into());
    sda.rotational = true;
    let mut sdb = block_device("/dev/sdb", 128849018880);
    sdb.model = Some("big model".into());
    sdb.serial = Some("veryfakeserial".into());
    sdb.wwn = Some("wwn_2".into());
    sdb.rotational = true;
    let mut sdc = block_device("/dev/sdc", 10737418240);
    sdc.model = Some("small model".into());
    sdc.serial = Some("veryveryfakeserial".into());
    sdc.wwn = Some("wwn_3".into());
    vec![
        HintDevice::scalar(sda),
        HintDevice::list_mode(
            sdb,
            Some("alsoveryfakeserial".into()),
            None,
            Some("wwn_2_ext".into()),
        ),
        HintDevice::scalar(sdc),
    ]
}

fn first(devices: &[HintDevice], v: Value) -> Option<String> {
    match_root_device_hints(devices, &hints(v))
        .unwrap()
        .map(|d| d.name().to_owned())
}

#[test]
fn match_cases_from_ipa() {
    let devs = ipa_devices();
    let cases = [
        (json!({"size": ">= 70"}), Some("/dev/sdb")),
        (json!({"rotational": false}), Some("/dev/sdc")),
        (
            json!({"size": ">=100", "rotational": true}),
            Some("/dev/sdb"),
        ),
        (
            json!({"size": ">= 50", "model": "s==big model", "serial": "s==veryfakeserial"}),
            Some("/dev/sdb"),
        ),
        (
            json!({"size": "<= 20", "model": "<or> model 5 <or> foomodel <or> small model <or>",
                   "serial": "s== veryveryfakeserial"}),
            Some("/dev/sdc"),
        ),
        (
            json!({"rotational": false, "model": "<in> small"}),
            Some("/dev/sdc"),
        ),
        (json!({"wwn": "wwn_2_ext"}), Some("/dev/sdb")),
        (
            json!({"size": "120", "model": "big model", "serial": "veryfakeserial"}),
            Some("/dev/sdb"),
        ),
        (json!({"size": ">=50", "model": "s==foo"}), None),
        (json!({"name": "s== /dev/sda"}), Some("/dev/sda")),
        (json!({"serial": "s== fakeserial"}), Some("/dev/sda")),
        (
            json!({"serial": "s== alsoveryfakeserial"}),
            Some("/dev/sdb"),
        ),
        (json!({"wwn": "s== wwn_1"}), Some("/dev/sda")),
        (json!({"wwn": "s== wwn_2"}), Some("/dev/sdb")),
        // Case-insensitive, and no /dev/ is added to a bare name.
        (json!({"model": "BIG MODEL"}), Some("/dev/sdb")),
        (json!({"name": "sda"}), None),
        (json!({"name": "/dev/sd*"}), None),
    ];
    for (h, want) in cases {
        assert_eq!(first(&devs, h.clone()).as_deref(), want, "{h}");
    }
    let ten = hints(json!({"size": ">= 10"}));
    let all: Vec<&str> = find_devices_by_hints(&devs, &ten)
        .map(|d| d.unwrap().name())
        .collect();
    assert_eq!(all, ["/dev/sda", "/dev/sdb", "/dev/sdc"]);
    let huge = hints(json!({"size": ">= 100500"}));
    assert_eq!(find_devices_by_hints(&devs, &huge).count(), 0);
}

#[test]
fn empty_and_null_device_values() {
    let mut blank = block_device("/dev/sda", 10 * GIB);
    blank.model = Some(" ".into());
    let devs = [HintDevice::scalar(blank)];
    assert_eq!(first(&devs, json!({"model": "foo"})), None);
    // A null value is Python's str(None): "none" (IPA quirk, kept).
    let devs = [HintDevice::scalar(block_device("/dev/nvme0n1", 10 * GIB))];
    assert_eq!(
        first(&devs, json!({"vendor": "None"})).as_deref(),
        Some("/dev/nvme0n1")
    );
    assert_eq!(first(&devs, json!({"vendor": "ATA"})), None);
    // In list mode null entries are dropped; all-null is a non-match.
    let devs = [HintDevice::list_mode(
        block_device("/dev/sda", 10 * GIB),
        None,
        None,
        None,
    )];
    assert_eq!(first(&devs, json!({"serial": "none"})), None);
    assert_eq!(first(&devs, json!({"wwn": "<in> n"})), None);
}

#[test]
fn match_errors_propagate_in_scalar_mode_and_skip_in_list_mode() {
    let mut d = block_device("/dev/sda", 10 * GIB);
    d.serial = Some("abc".into());
    let scalar = [HintDevice::scalar(d.clone())];
    let err = match_root_device_hints(&scalar, &hints(json!({"serial": ">= 5"}))).unwrap_err();
    assert_eq!((err.hint, err.kind), (HintName::Serial, PyErrorKind::Value));
    // List mode: the non-numeric entry is skipped, the numeric one decides.
    let list = [HintDevice::list_mode(d, Some("7".into()), None, None)];
    assert_eq!(
        first(&list, json!({"serial": ">= 5"})).as_deref(),
        Some("/dev/sda")
    );
    assert_eq!(first(&list, json!({"serial": ">= 8"})), None);
    // An earlier mismatch ends the evaluation before a later hint can raise.
    // (Hints run in the JSON map's order, which is by name here.)
    let mut other = block_device("/dev/sdb", GIB);
    other.serial = Some("xyz".into());
    other.model = Some("bar".into());
    let devs = [HintDevice::scalar(other)];
    assert_eq!(first(&devs, json!({"model": "foo", "serial": "> 1"})), None);
    assert!(
        match_root_device_hints(&devs, &hints(json!({"model": "bar", "serial": "> 1"}))).is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Install device choice

/// NVMe + SATA + USB (the USB stick reached the listing through the allow-list).
fn mixed() -> Vec<HintDevice> {
    let mut nvme = block_device("/dev/nvme0n1", 960 * GIB);
    nvme.serial = Some("S64GNE0R602354".into());
    nvme.wwn = Some("eui.3634483052602354".into());
    nvme.model = Some("SAMSUNG MZQL2960HCJR".into());
    nvme.tran = Some("nvme".into());
    nvme.by_path = Some("/dev/disk/by-path/pci-0000:5e:00.0-nvme-1".into());
    let mut sda = block_device("/dev/sda", 480 * GIB);
    sda.serial = Some("PHYS123400AB480BGN".into());
    sda.wwn = Some("0x55cd2e415123abcd".into());
    sda.wwn_with_extension = Some("0x55cd2e415123abcd0000000000000001".into());
    sda.hctl = Some("0:0:0:0".into());
    sda.vendor = Some("ATA".into());
    sda.tran = Some("sata".into());
    sda.by_path = Some("/dev/disk/by-path/pci-0000:00:17.0-ata-1".into());
    let mut sdb = block_device("/dev/sdb", 2000 * GIB);
    sdb.rotational = true;
    sdb.serial = Some("WD-WCC4N0000001".into());
    sdb.hctl = Some("1:0:0:0".into());
    sdb.tran = Some("sata".into());
    let mut sdc = block_device("/dev/sdc", 3 * GIB);
    sdc.tran = Some("usb".into());
    sdc.model = Some("Cruzer Blade".into());
    vec![
        HintDevice::list_mode(
            nvme,
            Some("S64GNE0R602354".into()),
            Some("SAMSUNG_MZQL2960HCJR_S64GNE0R602354".into()),
            Some("eui.3634483052602354".into()),
        ),
        HintDevice::list_mode(
            sda,
            Some("PHYS123400AB480BGN".into()),
            Some("INTEL_SSDSC2KB48_PHYS123400AB480BGN".into()),
            Some("0x55cd2e415123abcd".into()),
        ),
        HintDevice::list_mode(sdb, None, None, None),
        HintDevice::list_mode(sdc, None, Some("SanDisk_Cruzer_Blade_4C53".into()), None),
    ]
}

fn choose(node: Option<&Value>, devices: &[HintDevice]) -> Result<String, InstallDeviceError> {
    get_os_install_device(&InstallDeviceQuery {
        node,
        devices,
        ..Default::default()
    })
}

fn node_with(root_device: Value) -> Value {
    json!({"uuid": "n1", "instance_info": {}, "properties": {"root_device": root_device}})
}

#[test]
fn without_hints_smallest_disk_of_4_gib() {
    let devs = mixed();
    assert_eq!(choose(None, &devs).unwrap(), "/dev/sda");
    assert_eq!(
        choose(Some(&json!({"properties": {}, "instance_info": {}})), &devs).unwrap(),
        "/dev/sda"
    );
    // Exactly 4 GiB qualifies, one byte less does not; ties go to the smaller name.
    let devs = [
        HintDevice::scalar(block_device("/dev/sdb", MIN_ROOT_DISK_SIZE)),
        HintDevice::scalar(block_device("/dev/sda", MIN_ROOT_DISK_SIZE - 1)),
        HintDevice::scalar(block_device("/dev/vdb", 8 * GIB)),
        HintDevice::scalar(block_device("/dev/nvme0n1", MIN_ROOT_DISK_SIZE)),
    ];
    assert_eq!(choose(None, &devs).unwrap(), "/dev/nvme0n1");
    let tiny = [HintDevice::scalar(block_device("/dev/sda", 3 * GIB))];
    let err = choose(None, &tiny).unwrap_err();
    assert!(err.is_device_not_found());
    assert_eq!(
        err.to_string(),
        "No suitable device was found for deployment - root device hints were not provided \
         and all found block devices are smaller than 4294967296B."
    );
    assert!(matches!(
        choose(None, &[]),
        Err(InstallDeviceError::TooSmall { .. })
    ));
    let plain: Vec<BlockDevice> = mixed().into_iter().map(|d| d.device).collect();
    assert_eq!(guess_root_disk(&plain).unwrap().name, "/dev/sda");
}

#[test]
fn hints_pick_first_match_in_listing_order_without_size_minimum() {
    let devs = mixed();
    let cases = [
        (
            json!({"serial": "SAMSUNG_MZQL2960HCJR_S64GNE0R602354"}),
            "/dev/nvme0n1",
        ),
        (json!({"serial": "phys123400ab480bgn"}), "/dev/sda"),
        (
            json!({"wwn_with_extension": "0x55cd2e415123abcd0000000000000001"}),
            "/dev/sda",
        ),
        (
            json!({"by_path": "/dev/disk/by-path/pci-0000:00:17.0-ata-1"}),
            "/dev/sda",
        ),
        (json!({"rotational": true}), "/dev/sdb"),
        (json!({"rotational": "0"}), "/dev/nvme0n1"),
        (json!({"size": ">= 1000"}), "/dev/sdb"),
        (json!({"size": "<= 500"}), "/dev/sda"),
        (json!({"size": "< 4"}), "/dev/sdc"),
        (json!({"size": 480}), "/dev/sda"),
        (json!({"tran": "usb"}), "/dev/sdc"),
        (json!({"hctl": "1:0:0:0"}), "/dev/sdb"),
        (json!({"model": "<in> cruzer"}), "/dev/sdc"),
        (json!({"name": "<or> /dev/sdb <or> /dev/sda"}), "/dev/sda"),
        (json!({"tran": "sata", "rotational": true}), "/dev/sdb"),
        (json!({"vendor": "s!= ata"}), "/dev/nvme0n1"),
    ];
    for (h, want) in cases {
        assert_eq!(
            choose(Some(&node_with(h.clone())), &devs).unwrap(),
            want,
            "{h}"
        );
    }
}

#[test]
fn hint_errors_are_device_not_found_with_ipa_texts() {
    let devs = mixed();
    // `<or>` compares strings, and the size is a float: it never matches (IPA quirk).
    let err = choose(Some(&node_with(json!({"size": "<or> 3 <or> 2000"}))), &devs).unwrap_err();
    assert!(matches!(err, InstallDeviceError::NoMatch { .. }), "{err}");
    let err = choose(Some(&node_with(json!({"model": "nope"}))), &devs).unwrap_err();
    assert!(err.is_device_not_found());
    assert_eq!(
        err.to_string(),
        "No suitable device was found for deployment using these hints {'model': 'nope'}"
    );
    let err = choose(Some(&node_with(json!({"size": "big"}))), &devs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "No devices could be found using the root device hints {'size': 'big'} because they \
         failed to validate. Error: Root device hint \"size\" is not an integer value. Current \
         value: big"
    );
    // A numeric operator on a string field raises while matching.
    let err = choose(Some(&node_with(json!({"hctl": "> 1"}))), &devs).unwrap_err();
    assert!(
        matches!(err, InstallDeviceError::InvalidHints { .. }),
        "{err}"
    );
}

#[test]
fn instance_info_hints_win_entirely() {
    let devs = mixed();
    let node = json!({
        "instance_info": {"root_device": {"rotational": true}},
        "properties": {"root_device": {"name": "/dev/nvme0n1"}}
    });
    assert_eq!(root_device_hints(&node), Some(&json!({"rotational": true})));
    assert_eq!(choose(Some(&node), &devs).unwrap(), "/dev/sdb");
    let node = json!({
        "instance_info": {"root_device": {}},
        "properties": {"root_device": {"name": "/dev/nvme0n1"}}
    });
    assert_eq!(choose(Some(&node), &devs).unwrap(), "/dev/nvme0n1");
    assert_eq!(root_device_hints(&json!({"instance_info": {}})), None);
}

#[test]
fn skip_list_removes_candidates() {
    let devs = mixed();
    let node = json!({
        "instance_info": {},
        "properties": {"skip_block_devices": [{"serial": "PHYS123400AB480BGN"}, {"name": "/dev/sdb"}]}
    });
    // Without hints the next smallest disk after the skipped sda.
    assert_eq!(choose(Some(&node), &devs).unwrap(), "/dev/nvme0n1");
    let skip = SkipList::from_node(&node).unwrap().unwrap();
    assert_eq!(
        skip.skipped_disks(&devs).unwrap(),
        BTreeSet::from(["/dev/sda".to_owned(), "/dev/sdb".to_owned()])
    );
    // With hints that only a skipped disk matches: nothing is found.
    let mut node = node;
    node["properties"]["root_device"] = json!({"rotational": true});
    assert!(matches!(
        choose(Some(&node), &devs),
        Err(InstallDeviceError::NoMatch { .. })
    ));
    // Matching in list mode: the udev long serial skips the NVMe disk too.
    let node = json!({"properties": {"skip_block_devices": [{"serial": "SAMSUNG_MZQL2960HCJR_S64GNE0R602354"}]}});
    let skip = SkipList::from_node(&node).unwrap().unwrap();
    assert_eq!(
        skip.skipped_disks(&devs).unwrap(),
        BTreeSet::from(["/dev/nvme0n1".to_owned()])
    );
    // Without a node, no skip list applies.
    assert_eq!(choose(None, &devs).unwrap(), "/dev/sda");
}

#[test]
fn skip_list_errors() {
    let devs = mixed();
    let err = |list: Value| {
        let node = json!({"properties": {"skip_block_devices": list}});
        choose(Some(&node), &devs).unwrap_err()
    };
    assert!(matches!(
        err(json!({"name": "x"})),
        InstallDeviceError::SkipList(SkipListError::NotAList(_))
    ));
    assert!(matches!(
        err(json!(["x"])),
        InstallDeviceError::SkipList(SkipListError::NotAnObject { index: 0, .. })
    ));
    assert!(matches!(
        err(json!([{"name": "/dev/x"}, {}])),
        InstallDeviceError::SkipList(SkipListError::EmptyEntry { index: 1 })
    ));
    let e = err(json!([{"bogus": 1}]));
    assert!(!e.is_device_not_found());
    assert!(
        e.to_string()
            .starts_with("The hints \"bogus\" are invalid."),
        "{e}"
    );
    // Hints are only parsed when there are disks (as in IPA).
    let node = json!({"properties": {"skip_block_devices": [{"bogus": 1}]}});
    assert!(matches!(
        choose(Some(&node), &[]),
        Err(InstallDeviceError::TooSmall { .. })
    ));
    // Null and empty lists are no skip list.
    assert_eq!(SkipList::from_value(&Value::Null), Ok(None));
    assert_eq!(SkipList::from_value(&json!([])), Ok(None));
}

fn md(name: &str, volume: Option<&str>, holders: &[&str]) -> MdArray {
    MdArray {
        name: name.to_owned(),
        volume_name: volume.map(str::to_owned),
        holder_disks: holders.iter().map(|h| (*h).to_owned()).collect(),
        components: holders.iter().map(|h| format!("{h}1")).collect(),
    }
}

#[test]
fn raid_classification() {
    let arrays = [
        md("/dev/md0", Some("root"), &["/dev/sda", "/dev/sdb"]),
        md("/dev/md1", Some("data"), &["/dev/sdb", "/dev/sdc"]),
        md("/dev/md2", Some("esp"), &["/dev/sda", "/dev/sdb"]),
        md("/dev/md3", Some("scratch"), &["/dev/sdd", "/dev/sde"]),
        md("/dev/md4", None, &["/dev/sdc"]),
    ];
    let keep = BTreeSet::from(["data".to_owned()]);
    let c = classify_raid_arrays(&arrays, &keep);
    assert_eq!(c.action("/dev/md1"), Some(RaidAction::Keep));
    // md0 shares sdb with md1: wiped; md2 too but it is the ESP: kept.
    assert_eq!(c.action("/dev/md0"), Some(RaidAction::Wipe));
    assert_eq!(c.causes.get("/dev/md0").map(String::as_str), Some("data"));
    assert_eq!(c.action("/dev/md2"), Some(RaidAction::Keep));
    assert_eq!(c.action("/dev/md4"), Some(RaidAction::Wipe));
    assert_eq!(c.action("/dev/md3"), Some(RaidAction::Delete));
    assert_eq!(c.action("/dev/sda"), None);
    // A wiped array that is itself on the list ends up kept.
    let keep = BTreeSet::from(["data".to_owned(), "root".to_owned()]);
    let c = classify_raid_arrays(&arrays, &keep);
    assert_eq!(c.action("/dev/md0"), Some(RaidAction::Keep));
    assert_eq!(c.action("/dev/md1"), Some(RaidAction::Keep));
    // Nothing named: everything may be deleted.
    let c = classify_raid_arrays(&arrays, &BTreeSet::new());
    assert!(c.actions.values().all(|a| *a == RaidAction::Delete));
}

#[test]
fn volume_name_skip_keeps_arrays_out_of_candidates() {
    let mut devs = mixed();
    devs.push(HintDevice::list_mode(
        block_device("/dev/md0", 100 * GIB),
        None,
        None,
        None,
    ));
    devs.push(HintDevice::list_mode(
        block_device("/dev/md1", 50 * GIB),
        None,
        None,
        None,
    ));
    let arrays = [
        md("/dev/md0", Some("keepme"), &["/dev/sdb"]),
        md("/dev/md1", Some("other"), &["/dev/sdb"]),
    ];
    let node = json!({"properties": {"skip_block_devices": [{"volume_name": "keepme"}]}});
    assert!(needs_md_arrays(Some(&node), &[]).unwrap());
    assert!(!needs_md_arrays(Some(&json!({"properties": {}})), &[]).unwrap());
    let q = |node: &Value| {
        get_os_install_device(&InstallDeviceQuery {
            node: Some(node),
            devices: &devs,
            md_arrays: &arrays,
            raid_volumes: &[],
        })
    };
    // md1 (wipe) stays a root-disk candidate; md0 (keep) does not.
    let mut with_hints = node.clone();
    with_hints["properties"]["root_device"] = json!({"name": "<or> /dev/md0 <or> /dev/md1"});
    assert_eq!(q(&with_hints).unwrap(), "/dev/md1");
    with_hints["properties"]["root_device"] = json!({"name": "/dev/md0"});
    assert!(matches!(
        q(&with_hints),
        Err(InstallDeviceError::NoMatch { .. })
    ));
    // Erase steps with include_wipe drop md1 too.
    let skip = SkipList::from_node(&node).unwrap().unwrap();
    let left: Vec<&str> = skip
        .filter(&devs, &arrays, true)
        .unwrap()
        .iter()
        .map(|d| d.name())
        .collect();
    assert!(!left.contains(&"/dev/md0") && !left.contains(&"/dev/md1"));
    assert!(left.contains(&"/dev/sdb"));
}

#[test]
fn raid_root_volume_wins_and_non_root_volumes_are_excluded() {
    let mut devs = mixed();
    devs.push(HintDevice::list_mode(
        block_device("/dev/md0", 400 * GIB),
        None,
        None,
        None,
    ));
    let arrays = [md("/dev/md0", Some("r"), &["/dev/sda", "/dev/sdb"])];
    let node = node_with(json!({"name": "/dev/sdb"}));
    let pick = |volumes: &[RaidVolume]| {
        get_os_install_device(&InstallDeviceQuery {
            node: Some(&node),
            devices: &devs,
            md_arrays: &arrays,
            raid_volumes: volumes,
        })
    };
    let root = [RaidVolume {
        name: "/dev/md0".into(),
        is_root_volume: true,
    }];
    assert_eq!(pick(&root).unwrap(), "/dev/md0");
    // is_root_volume false: md0 and its holder disks sda, sdb leave the candidates.
    let not_root = [RaidVolume {
        name: "/dev/md0".into(),
        is_root_volume: false,
    }];
    assert!(matches!(
        pick(&not_root),
        Err(InstallDeviceError::NoMatch { .. })
    ));
    let q = InstallDeviceQuery {
        node: None,
        devices: &devs,
        md_arrays: &arrays,
        raid_volumes: &not_root,
    };
    assert_eq!(get_os_install_device(&q).unwrap(), "/dev/nvme0n1");
}

// ---------------------------------------------------------------------------------------
// Readers on fixture trees

fn fixture(case: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(case)
}

#[test]
fn list_mode_reads_udev_serials_of_the_inventory_disks() {
    let root = fixture("nvme-sata");
    let disks = ira::inventory::disks::list_disks(&root, &AllowList::default()).unwrap();
    let devs = list_mode_devices(&root, &disks);
    let nvme = devs.iter().find(|d| d.name() == "/dev/nvme0n1").unwrap();
    assert_eq!(
        nvme.serials.as_deref().unwrap(),
        [
            Some("S64GNE0R602354".to_owned()),
            Some("S64GNE0R602354".to_owned()),
            Some("SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R602354".to_owned())
        ]
    );
    // The long udev serial only matches in list mode.
    let h = hints(json!({"serial": "SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R602354"}));
    assert!(device_matches(nvme, &h).unwrap());
    assert!(!device_matches(&HintDevice::scalar(nvme.device.clone()), &h).unwrap());
    let node = json!({"properties": {"root_device": {"wwn": "0x55cd2e415123abcd"}}});
    assert_eq!(choose(Some(&node), &devs).unwrap(), "/dev/sda");
}

#[test]
fn md_arrays_from_sysfs_and_udev() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mk = |rel: &str, text: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    mk("sys/block/sda/sda1/partition", "1\n");
    mk("sys/block/sda/dev", "8:0\n");
    mk("sys/block/sdb/sdb1/partition", "1\n");
    mk("sys/block/sdc/dev", "8:32\n");
    mk("sys/block/md0/md/level", "raid1\n");
    mk("sys/block/md0/dev", "9:0\n");
    mk("sys/block/md0/slaves/sda1/x", "");
    mk("sys/block/md0/slaves/sdb1/x", "");
    mk("sys/block/md127/md/level", "raid1\n");
    mk("sys/block/md127/dev", "9:127\n");
    mk("sys/block/md127/slaves/sdc/x", "");
    mk(
        "run/udev/data/b9:0",
        "E:MD_NAME=host1:root\nE:MD_LEVEL=raid1\n",
    );
    let arrays = read_md_arrays(root, false).unwrap();
    assert_eq!(
        arrays,
        [
            MdArray {
                name: "/dev/md0".into(),
                volume_name: Some("root".into()),
                holder_disks: vec!["/dev/sda".into(), "/dev/sdb".into()],
                components: vec!["/dev/sda1".into(), "/dev/sdb1".into()],
            },
            MdArray {
                name: "/dev/md127".into(),
                volume_name: None,
                holder_disks: vec!["/dev/sdc".into()],
                components: vec!["/dev/sdc".into()],
            },
        ]
    );
    // Fail closed: md127's name is unknown, so a volume-name skip list cannot be applied.
    assert!(read_md_arrays(root, true).is_err());
}

// ---------------------------------------------------------------------------------------
// Property tests

fn op_strategy() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", "s==", "s!=", "s<", "s<=", "s>", "s>=", "<in>", "<or>",
    ])
}

fn value_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 :/._%~#-]{0,16}[a-zA-Z0-9]"
}

proptest! {
    /// A parsed string hint decodes back to its operator and lower-cased values.
    #[test]
    fn string_hint_round_trips(op in op_strategy(), values in prop::collection::vec(value_strategy(), 1..4)) {
        let values = if op == "<or>" { values } else { values[..1].to_vec() };
        let expr = if op.is_empty() {
            values[0].clone()
        } else {
            values.iter().map(|v| format!("{op} {v}")).collect::<Vec<_>>().join(" ")
        };
        let parsed = hints(json!({"model": expr}));
        let HintSpec::Expr(spec) = parsed.get(HintName::Model).unwrap() else { panic!("not an expression") };
        let tokens = specs::parse(spec).unwrap();
        let want_op = if op.is_empty() { "s==" } else { op };
        prop_assert_eq!(tokens[0], want_op);
        let decoded: Vec<String> = tokens[1..].iter().map(|t| py::unquote(t).unwrap()).collect();
        let want: Vec<String> = if op == "<or>" || op.is_empty() {
            values.iter().map(|v| v.to_lowercase()).collect()
        } else {
            values[..1].iter().map(|v| v.to_lowercase()).collect()
        };
        prop_assert_eq!(decoded, want);
        // Parsing the normalised form as an expression again keeps the operator and values.
        let again = hints(json!({"model": spec.clone()}));
        let HintSpec::Expr(spec2) = again.get(HintName::Model).unwrap() else { panic!("not an expression") };
        prop_assert_eq!(specs::parse(spec2).unwrap()[0], want_op);
    }

    /// A device whose value equals the hint (any case) matches; `s!=` is its negation.
    #[test]
    fn equality_hints_match_their_own_value(v in value_strategy()) {
        let mut d = block_device("/dev/sda", 10 * GIB);
        d.model = Some(v.to_uppercase());
        let dev = HintDevice::scalar(d);
        let eq = hints(json!({"model": v.clone()}));
        let ne = hints(json!({"model": format!("s!= {v}")}));
        let contains = hints(json!({"model": format!("<in> {v}")}));
        prop_assert!(device_matches(&dev, &eq).unwrap());
        prop_assert!(!device_matches(&dev, &ne).unwrap());
        prop_assert!(device_matches(&dev, &contains).unwrap());
    }

    /// The chosen device satisfies the hints and is never on the skip list; no match
    /// means no unskipped device matches.
    #[test]
    fn choice_satisfies_hints_and_skip_list(
        disks in prop::collection::vec((1u64..3000, any::<bool>(), 0usize..4), 1..8),
        min_size in 1u64..3000,
        rotational in prop::option::of(any::<bool>()),
        skip_serial in 0usize..4,
        use_hints in any::<bool>(),
    ) {
        let devices: Vec<HintDevice> = disks.iter().enumerate().map(|(i, (gib, rota, serial))| {
            let mut d = block_device(&format!("/dev/sd{}", (b'a' + u8::try_from(i).unwrap()) as char), gib * GIB / 2);
            d.rotational = *rota;
            d.serial = Some(format!("SER{serial}"));
            HintDevice::list_mode(d, None, Some(format!("LONG-SER{serial}")), None)
        }).collect();
        let mut root_device = serde_json::Map::new();
        root_device.insert("size".into(), json!(format!(">= {min_size}")));
        if let Some(r) = rotational {
            root_device.insert("rotational".into(), json!(r));
        }
        let mut node = json!({"properties": {"skip_block_devices": [{"serial": format!("long-ser{skip_serial}")}]}});
        if use_hints {
            node["properties"]["root_device"] = Value::Object(root_device.clone());
        }
        let skip = SkipList::from_node(&node).unwrap().unwrap();
        let skipped = skip.skipped_disks(&devices).unwrap();
        let h = hints(Value::Object(root_device));
        match choose(Some(&node), &devices) {
            Ok(name) => {
                prop_assert!(!skipped.contains(&name));
                let dev = devices.iter().find(|d| d.name() == name).unwrap();
                if use_hints {
                    prop_assert!(device_matches(dev, &h).unwrap());
                } else {
                    prop_assert!(dev.device.size >= MIN_ROOT_DISK_SIZE);
                    for other in devices.iter().filter(|d| !skipped.contains(d.name()) && d.device.size >= MIN_ROOT_DISK_SIZE) {
                        prop_assert!((dev.device.size, dev.name()) <= (other.device.size, other.name()));
                    }
                }
            }
            Err(InstallDeviceError::NoMatch { .. }) => {
                prop_assert!(use_hints);
                for dev in devices.iter().filter(|d| !skipped.contains(d.name())) {
                    prop_assert!(!device_matches(dev, &h).unwrap());
                }
            }
            Err(InstallDeviceError::TooSmall { .. }) => {
                prop_assert!(!use_hints);
                prop_assert!(devices.iter().all(|d| skipped.contains(d.name()) || d.device.size < MIN_ROOT_DISK_SIZE));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
