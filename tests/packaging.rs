//! The Debian package (`deploy/debian/build-deb`): built from the test's own
//! binary, installed with the machine's real `dpkg`, its unit checked by
//! `systemd-analyze`, then removed and purged. Needs root and Debian's
//! tools; without them it is skipped, except in CI (`outside_tool`).

mod common;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Command, Output},
};

use common::outside_tool;
use minegate::config::Config;

const UNIT: &str = "/lib/systemd/system/minegate.service";

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", program.display()))
}

fn ok(program: &Path, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn is_root() -> bool {
    let uid = ok(Path::new("/usr/bin/id"), &["-u"]);
    uid.trim() == "0"
}

#[test]
fn the_production_template_is_a_valid_configuration_with_no_development_pki() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/debian/minegate.toml");
    let config = Config::load(Some(&template), Vec::new()).expect("the template loads");
    assert_eq!(
        config.database_url,
        "sqlite:///var/lib/minegate/minegate.db"
    );
    assert_eq!(config.tls.dev_pki_dir, Path::new(""));
    assert_eq!(
        config.tls.ca_bundle,
        Path::new("/etc/minegate/pki/clients-ca.pem")
    );
    assert_eq!(config.tls.cert, Path::new("/etc/minegate/pki/gateway.pem"));
    assert_eq!(
        config.signing.key,
        Path::new("/var/lib/minegate/signing.key")
    );
    assert_eq!(config.listen.to_string(), "0.0.0.0:50051");
    // No development identity survives into production.
    assert!(
        config
            .roles
            .keys()
            .all(|identity| !identity.starts_with("urn:minegate:")),
        "{:?}",
        config.roles
    );
    assert_eq!(config.roles.len(), 4);
}

#[test]
fn the_package_installs_runs_verifies_and_removes() {
    let tools = [
        "dpkg",
        "dpkg-deb",
        "systemd-analyze",
        "strip",
        "getent",
        "stat",
    ]
    .map(outside_tool);
    let [
        Some(dpkg),
        Some(dpkg_deb),
        Some(systemd_analyze),
        Some(_),
        Some(getent),
        Some(stat),
    ] = tools
    else {
        return;
    };
    if !is_root() {
        let required = std::env::var("CI").as_deref() == Ok("true")
            || std::env::var("MINEGATE_TEST_TOOLS").as_deref() == Ok("required");
        assert!(!required, "installing the package needs root");
        eprintln!("not root: skipping the package installation");
        return;
    }
    // A run that failed half way may have left the package installed.
    let _ = run(&dpkg, &["-P", "minegate"]);
    let _cleanup = LeaveAsFound {
        dpkg: dpkg.clone(),
        had_user: run(&getent, &["passwd", "minegate"]).status.success(),
        had_data: Path::new("/var/lib/minegate").exists(),
        had_backups: Path::new("/var/backups/minegate").exists(),
    };

    // Build, from this test's binary.
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = ok(
        &root.join("deploy/debian/build-deb"),
        &[
            "--binary",
            env!("CARGO_BIN_EXE_minegate"),
            "--out",
            out.path().to_str().unwrap(),
            "--compression",
            "gzip",
        ],
    );
    let arch = ok(&dpkg, &["--print-architecture"]);
    let deb = out.path().join(format!(
        "minegate_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    assert_eq!(built.trim(), deb.to_str().unwrap());
    let deb = deb.to_str().unwrap();
    assert_eq!(
        ok(
            &dpkg_deb,
            &["--field", deb, "Package", "Version", "Depends"]
        ),
        format!(
            "Package: minegate\nVersion: {}\nDepends: adduser, libc6\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let mut files: Vec<String> = ok(&dpkg_deb, &["--contents", deb])
        .lines()
        .filter(|line| !line.starts_with('d'))
        .map(|line| line.rsplit(' ').next().unwrap().to_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "./etc/minegate/minegate.toml",
            "./lib/systemd/system/minegate.service",
            "./usr/bin/minegate",
            "./usr/share/doc/minegate/CHANGELOG.md",
            "./usr/share/doc/minegate/README.md",
            "./usr/share/doc/minegate/RELIABILITY.md",
            "./usr/share/doc/minegate/architecture.md",
            "./usr/share/doc/minegate/certs.md",
            "./usr/share/doc/minegate/compatibility.md",
            "./usr/share/doc/minegate/copyright",
            "./usr/share/doc/minegate/evidence.md",
            "./usr/share/doc/minegate/minegate.example.toml",
            "./usr/share/doc/minegate/operations.md",
            "./usr/share/doc/minegate/rules.md",
            "./usr/share/minegate/prometheus/minegate-rules.yml",
        ]
    );
    assert_eq!(
        ok(&dpkg_deb, &["--info", deb, "conffiles"]),
        "/etc/minegate/minegate.toml\n"
    );

    // Install.
    ok(&dpkg, &["-i", deb]);
    assert_eq!(
        ok(Path::new("/usr/bin/minegate"), &["--version"]),
        format!("minegate {}\n", env!("CARGO_PKG_VERSION"))
    );
    let user = ok(&getent, &["passwd", "minegate"]);
    assert!(
        user.trim_end()
            .ends_with(":minegate gateway,,,:/var/lib/minegate:/usr/sbin/nologin"),
        "{user}"
    );
    assert_eq!(
        ok(
            &stat,
            &[
                "-c",
                "%U:%G %a",
                "/var/lib/minegate",
                "/var/backups/minegate",
                "/etc/minegate",
                "/etc/minegate/pki",
                "/etc/minegate/minegate.toml"
            ]
        ),
        "minegate:minegate 750\nminegate:minegate 700\nroot:minegate 750\nroot:minegate 750\n\
         root:minegate 640\n"
    );
    // The unit is valid, and its exposure is under 2.0 on systemd's scale
    // of 0 (locked down) to 10 (as open as a unit can be).
    let verified = run(&systemd_analyze, &["verify", UNIT]);
    assert!(verified.status.success(), "{verified:?}");
    assert_eq!(String::from_utf8_lossy(&verified.stderr), "");
    let exposure = run(
        &systemd_analyze,
        &["security", "--offline=true", "--threshold=20", UNIT],
    );
    let report = String::from_utf8_lossy(&exposure.stdout);
    assert!(exposure.status.success(), "{report}");
    // Exactly today's rating: a setting dropped from the unit shows here.
    assert!(
        report.contains("Overall exposure level for minegate.service: 1.4 OK"),
        "{report}"
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for setting in [
        "User=minegate",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/minegate",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=\n",
        "LimitNOFILE=65536",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/minegate --config /etc/minegate/minegate.toml serve",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    let mode = std::fs::metadata("/usr/bin/minegate")
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);

    // Remove: the program goes, the configuration stays; purge: it goes too.
    // The data folder stays through both.
    ok(&dpkg, &["-r", "minegate"]);
    assert!(!Path::new("/usr/bin/minegate").exists());
    assert!(Path::new("/etc/minegate/minegate.toml").exists());
    ok(&dpkg, &["-P", "minegate"]);
    assert!(!Path::new("/etc/minegate").exists());
    assert!(!Path::new(UNIT).exists());
    let data = std::fs::metadata("/var/lib/minegate").unwrap();
    assert!(data.is_dir() && data.uid() != 0);
}

/// Leaves the machine as the test found it, whether the test passed or not:
/// the package purged, and the user and data folder it made removed.
struct LeaveAsFound {
    dpkg: std::path::PathBuf,
    had_user: bool,
    had_data: bool,
    had_backups: bool,
}

impl Drop for LeaveAsFound {
    fn drop(&mut self) {
        let _ = run(&self.dpkg, &["-P", "minegate"]);
        if !self.had_data {
            let _ = std::fs::remove_dir_all("/var/lib/minegate");
        }
        if !self.had_backups {
            let _ = std::fs::remove_dir_all("/var/backups/minegate");
        }
        if !self.had_user {
            let _ = run(
                Path::new("/usr/sbin/deluser"),
                &["--system", "--quiet", "minegate"],
            );
            let _ = run(
                Path::new("/usr/sbin/delgroup"),
                &["--system", "--quiet", "minegate"],
            );
        }
    }
}
