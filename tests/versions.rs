//! One version everywhere: Cargo's, `minegate --version`, the top release
//! of CHANGELOG.md and the Debian package's control file; and every
//! earlier release whose contracts are kept has its entry in the changelog.

mod common;

use std::{path::Path, process::Command};

use common::outside_tool;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The versions of CHANGELOG.md's release headings (`## [X.Y.Z] - DATE`),
/// newest first.
fn changelog_releases() -> Vec<String> {
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).unwrap();
    changelog
        .lines()
        .filter_map(|line| line.strip_prefix("## ["))
        .map(|rest| {
            rest.split_once(']')
                .expect("## [VERSION] - DATE")
                .0
                .to_owned()
        })
        .collect()
}

#[test]
fn cargo_the_binary_and_the_changelog_say_the_same_version() {
    assert_eq!(VERSION, "0.4.0");
    assert_eq!(changelog_releases()[0], VERSION);
    let printed = Command::new(env!("CARGO_BIN_EXE_minegate"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap(),
        format!("minegate {VERSION}\n")
    );
}

#[test]
fn the_changelog_lists_every_release_newest_first() {
    assert_eq!(changelog_releases(), ["0.4.0", "0.3.0", "0.2.0", "0.1.0"]);
    // Each earlier release's contracts are kept for buf breaking.
    let mut kept: Vec<String> = std::fs::read_dir(root().join("proto-releases"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    kept.reverse();
    assert_eq!(kept, changelog_releases()[1..].to_vec());
}

#[test]
fn the_debian_package_has_cargos_version() {
    let (Some(dpkg_deb), Some(_strip)) = (outside_tool("dpkg-deb"), outside_tool("strip")) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(root().join("deploy/debian/build-deb"))
        .args(["--binary", env!("CARGO_BIN_EXE_minegate"), "--out"])
        .arg(out.path())
        .args(["--compression", "gzip"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap();
    assert!(
        deb.trim().ends_with(".deb") && deb.contains(&format!("minegate_{VERSION}_")),
        "{deb}"
    );
    let control = Command::new(dpkg_deb)
        .args(["--field", deb.trim(), "Version"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(control.stdout).unwrap(),
        format!("{VERSION}\n")
    );
}
