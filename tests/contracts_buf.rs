//! The contracts checked with buf, as `.ci/run` does (`buf.yaml` has the
//! rules): lint and format clean, no breaking change against any earlier
//! release kept in `proto-releases/`, and a breaking change made on purpose
//! in a copy is caught, naming its rule.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::outside_tool;

/// The releases whose contracts are kept, oldest first.
const RELEASES: [&str; 3] = ["0.1.0", "0.2.0", "0.3.0"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `buf ARGS` in `dir`; `None` when buf is not installed (skipped).
fn buf(dir: &Path, args: &[&str]) -> Option<Output> {
    let buf = outside_tool("buf")?;
    Some(
        Command::new(buf)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("buf runs"),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command succeeded and printed nothing.
fn clean(what: &str, output: &Output) {
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{what}: {}\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn buf_lint_and_format_find_nothing() {
    let Some(lint) = buf(root(), &["lint"]) else {
        return;
    };
    clean("buf lint", &lint);
    let format = buf(root(), &["format", "--diff", "--exit-code"]).unwrap();
    clean("buf format", &format);
}

#[test]
fn no_breaking_change_against_any_earlier_release() {
    let mut kept: Vec<String> = std::fs::read_dir(root().join("proto-releases"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, RELEASES);
    for release in RELEASES {
        let against = format!("proto-releases/{release}");
        let Some(checked) = buf(root(), &["breaking", "proto", "--against", &against]) else {
            return;
        };
        clean(&format!("buf breaking against {release}"), &checked);
    }
}

/// A copy of the module (`buf.yaml` and `proto/`) in a temporary folder.
fn module_copy() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("buf.yaml"), copy.path().join("buf.yaml")).unwrap();
    copy_tree(&root().join("proto"), &copy.path().join("proto"));
    copy
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces the one occurrence of `from` in the copy's filing.proto.
fn edit_filing_proto(copy: &Path, from: &str, to: &str) {
    let path: PathBuf = copy.join("proto/kz/digitalmining/v1/filing.proto");
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(before.matches(from).count(), 1, "{from}");
    std::fs::write(&path, before.replace(from, to)).unwrap();
}

/// `buf breaking` of the copy against release 0.3.0: (rule, message) of
/// each violation. It must fail.
fn violations_against_0_3(copy: &Path) -> Option<Vec<(String, String)>> {
    let against = root().join("proto-releases/0.3.0");
    let args = [
        "breaking",
        "proto",
        "--against",
        against.to_str().unwrap(),
        "--error-format",
        "json",
    ];
    let checked = buf(copy, &args)?;
    assert_eq!(
        checked.status.code(),
        Some(100),
        "{}",
        text(&checked.stderr)
    );
    let found = text(&checked.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["path"], "proto/kz/digitalmining/v1/filing.proto");
            (
                v["type"].as_str().unwrap().to_owned(),
                v["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Some(found)
}

const KEY_LINE: &str = "  // the original receipt.\n  string idempotency_key = 10;\n";

#[test]
fn a_field_given_another_number_fails_buf_breaking() {
    let copy = module_copy();
    edit_filing_proto(
        copy.path(),
        KEY_LINE,
        "  // the original receipt.\n  string idempotency_key = 41;\n",
    );
    let Some(found) = violations_against_0_3(copy.path()) else {
        return;
    };
    assert_eq!(
        found,
        [(
            "FIELD_NO_DELETE".to_owned(),
            "Previously present field \"10\" with name \"idempotency_key\" on message \
             \"StartNotification\" was deleted."
                .to_owned()
        )]
    );
}

/// (rule, message) pairs, as [`violations_against_0_3`] gives them.
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(rule, message)| ((*rule).to_owned(), (*message).to_owned()))
        .collect()
}

#[test]
fn a_field_removed_retyped_or_renamed_fails_buf_breaking() {
    let deleted = [(
        "FIELD_NO_DELETE",
        "Previously present field \"10\" with name \"idempotency_key\" on message \
         \"StartNotification\" was deleted.",
    )];
    let retyped = [(
        "FIELD_SAME_TYPE",
        "Field \"10\" with name \"idempotency_key\" on message \"StartNotification\" \
         changed type from \"string\" to \"bytes\".",
    )];
    // Same number and type: the wire is unchanged, JSON and generated code are not.
    let renamed = [
        (
            "FIELD_SAME_JSON_NAME",
            "Field \"10\" with name \"request_key\" on message \"StartNotification\" \
             changed option \"json_name\" from \"idempotencyKey\" to \"requestKey\".",
        ),
        (
            "FIELD_SAME_NAME",
            "Field \"10\" on message \"StartNotification\" changed name from \
             \"idempotency_key\" to \"request_key\".",
        ),
    ];
    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("  // the original receipt.\n", &deleted),
        (
            "  // the original receipt.\n  bytes idempotency_key = 10;\n",
            &retyped,
        ),
        (
            "  // the original receipt.\n  string request_key = 10;\n",
            &renamed,
        ),
    ];
    for (replacement, expected) in cases {
        let copy = module_copy();
        edit_filing_proto(copy.path(), KEY_LINE, replacement);
        let Some(found) = violations_against_0_3(copy.path()) else {
            return;
        };
        assert_eq!(found, pairs(expected));
    }
}
