//! Backup and restore. SQLite: `minegate backup` copies the database while
//! the gateway takes filings, `minegate restore` puts the copy into a fresh
//! folder, and a gateway started on it replays every receipt handed out
//! before the backup byte for byte, with its ledger intact. PostgreSQL:
//! the documented pg_dump / pg_restore procedure, run for real.

mod common;

use std::{
    path::Path,
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use chrono::Datelike;
use common::{
    child::under_umask,
    fixtures::{date, generated_bin, start_notification, upload_documents},
    *,
};
use minegate::{
    proto::v1::{
        DocumentRef, FilingReceipt, StartNotification, VerifyLedgerRequest,
        compliance_service_client::ComplianceServiceClient,
        filing_service_client::FilingServiceClient,
    },
    server,
};
use prost::Message;
use tonic::transport::Channel;

/// `minegate ARGS` on the database `database_url` with the signing key
/// `key`, from the environment alone (run in `cwd`, where no minegate.toml is).
async fn minegate(cwd: &Path, database_url: &str, key: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .current_dir(cwd)
        .args(args)
        .env_remove("MINEGATE_CONFIG")
        .env("MINEGATE_DATABASE_URL", database_url)
        .env("MINEGATE_SIGNING_KEY", key)
        .output()
        .await
        .expect("minegate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `i`-th start notification: its own BIN, key and IP pool, on time.
fn filing(i: usize, documents: &[DocumentRef]) -> StartNotification {
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(40);
    start_notification(
        &generated_bin(i as u32),
        &format!("backup-{i}"),
        date(start.year(), start.month() as i32, start.day() as i32),
        &[&format!("37.{}.{}.0/24", 1 + i / 256, i % 256)],
        documents,
    )
}

async fn submit(channel: Channel, request: StartNotification) -> FilingReceipt {
    FilingServiceClient::new(channel)
        .submit_start_notification(request)
        .await
        .unwrap()
        .into_inner()
}

/// A summary line's value: `  NAME  VALUE`.
fn summary_value<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
        .trim()
}

const BEFORE: usize = 20;

#[tokio::test]
async fn a_backup_under_load_restores_into_a_fresh_folder_and_replays_every_receipt() {
    let app = spawn_app().await;
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    let mut before = Vec::new();
    for i in 0..BEFORE {
        let receipt = submit(channel.clone(), filing(i, &documents)).await;
        before.push(receipt.encode_to_vec());
    }

    // Four clients keep filing while the backup is taken.
    let (stop, next, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(BEFORE)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, next, done) = (stop.clone(), next.clone(), done.clone());
            let (channel, documents) = (channel.clone(), documents.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    submit(channel.clone(), filing(i, &documents)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("minegate-backup.db");
    let key = app.config.signing.key.clone();
    let url = app.config.database_url.clone();
    let backed_up = minegate(
        work.path(),
        &url,
        &key,
        &["backup", "--to", copy.to_str().unwrap()],
    )
    .await;
    let during = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    let stdout = text(&backed_up.stdout);
    assert!(
        backed_up.status.success(),
        "{stdout}{}",
        text(&backed_up.stderr)
    );
    let size = std::fs::metadata(&copy).unwrap().len();
    // The owner's alone: it holds every filer's details.
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions())
            & 0o777,
        0o600
    );
    assert_eq!(
        stdout.lines().next().unwrap(),
        format!("backup written to {} ({size} bytes)", copy.display())
    );
    assert_eq!(
        stdout.lines().last().unwrap(),
        format!(
            "not in the backup: the signing key ({}) and the PKI; keep them safe apart",
            key.display()
        )
    );
    // The copy is of one moment under load: every filing before the
    // backup, none it could not have seen.
    let filings: usize = summary_value(&stdout, "filings").parse().unwrap();
    assert!(
        (BEFORE + 20..=BEFORE + during + 4).contains(&filings),
        "{filings} filings in the copy, {during} filed under load"
    );
    // One self-contained file: nothing beside it.
    let mut beside: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["minegate-backup.db"]);

    // A second backup to the same file is refused, and changes nothing.
    let again = minegate(
        work.path(),
        &url,
        &key,
        &["backup", "--to", copy.to_str().unwrap()],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stderr),
        format!(
            "error: {} exists: a backup never overwrites a file; name a new one\n",
            copy.display()
        )
    );
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);

    // Restore into a fresh folder (its data/ does not exist yet).
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("data/minegate.db");
    let restored_url = format!("sqlite://{}", target.display());
    let restored = minegate(
        fresh.path(),
        &restored_url,
        &key,
        &["restore", "--from", copy.to_str().unwrap()],
    )
    .await;
    let restored_out = text(&restored.stdout);
    assert!(
        restored.status.success(),
        "{restored_out}{}",
        text(&restored.stderr)
    );
    assert_eq!(
        restored_out.lines().next().unwrap(),
        format!("restored {} into {}", copy.display(), target.display())
    );
    // It holds exactly what the backup said it held.
    let summary = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("  "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(summary(&restored_out), summary(&stdout));
    assert_eq!(summary(&stdout).len(), 5, "{stdout}");

    // Restoring over it is refused.
    let over = minegate(
        fresh.path(),
        &restored_url,
        &key,
        &["restore", "--from", copy.to_str().unwrap()],
    )
    .await;
    assert_eq!(over.status.code(), Some(1));
    assert_eq!(
        text(&over.stderr),
        format!(
            "error: {} exists: restore writes only where there is no database; \
             stop the gateway and move the database away first\n",
            target.display()
        )
    );

    // A gateway on the restored folder, with the same key and PKI.
    let mut config = app.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = restored_url.clone();
    let gateway = server::start(&config)
        .await
        .expect("the restored gateway starts");
    let tls = minegate::client::ClientTls {
        server: format!("https://{}", gateway.local_addr()),
        ..app.client_tls("authority")
    };
    let channel = tls.connect().await.unwrap();
    // Every receipt handed out before the backup replays byte for byte.
    for (i, bytes) in before.iter().enumerate() {
        let replayed = submit(channel.clone(), filing(i, &documents)).await;
        let original = FilingReceipt::decode(bytes.as_slice()).unwrap();
        assert_eq!(replayed.filing_id, original.filing_id, "filing {i}");
        assert_eq!(
            replayed.evidence.unwrap().artifact,
            original.evidence.unwrap().artifact,
            "filing {i}: the replayed receipt differs"
        );
    }
    assert_receipts_stored(channel.clone(), before.iter().map(Vec::as_slice)).await;
    let report = ComplianceServiceClient::new(channel)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    assert_eq!(
        report.entries_checked.to_string(),
        summary_value(&stdout, "ledger entries")
    );
    assert_eq!(report.head_hash, summary_value(&stdout, "ledger head"));
    assert_eq!(
        scalar(&restored_url, "SELECT COUNT(*) FROM filings").await as usize,
        filings
    );
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_backup_whose_ledger_was_edited_is_not_restored() {
    let app = spawn_app().await;
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    submit(channel, filing(0, &documents)).await;
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy.db");
    let key = app.config.signing.key.clone();
    let backed_up = minegate(
        work.path(),
        &app.config.database_url,
        &key,
        &["backup", "--to", copy.to_str().unwrap()],
    )
    .await;
    assert!(backed_up.status.success(), "{}", text(&backed_up.stderr));
    let copy_url = format!("sqlite://{}", copy.display());
    assert_eq!(
        execute(
            &copy_url,
            "UPDATE ledger SET payload = payload || ' ' WHERE seq = 2"
        )
        .await,
        1
    );

    let target = work.path().join("restored/minegate.db");
    let restored = minegate(
        work.path(),
        &format!("sqlite://{}", target.display()),
        &key,
        &["restore", "--from", copy.to_str().unwrap()],
    )
    .await;
    assert_eq!(restored.status.code(), Some(1));
    let stderr = text(&restored.stderr);
    assert!(
        stderr.starts_with(
            "error: the backup did not verify; nothing was restored: \
             the ledger is broken at entry 2: content does not match its hash (stored "
        ),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path().join("restored"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn postgres_is_backed_up_with_pg_dump_and_a_restored_dump_serves_with_its_ledger_intact() {
    let Some(server_url) = postgres_url() else {
        return;
    };
    let (Some(pg_dump), Some(pg_restore)) = (outside_tool("pg_dump"), outside_tool("pg_restore"))
    else {
        return;
    };
    let clock = TestClock::at("2026-03-02T06:00:00Z");
    let app = spawn_on(Backend::Postgres, clock.clone()).await.unwrap();
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    let mut receipts = Vec::new();
    for i in 0..10 {
        receipts.push(
            submit(channel.clone(), filing(i, &documents))
                .await
                .encode_to_vec(),
        );
    }
    let verify = |channel: Channel| async move {
        ComplianceServiceClient::new(channel)
            .verify_ledger(VerifyLedgerRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    let original = verify(channel.clone()).await;
    assert!(original.intact);

    // `minegate backup` points PostgreSQL users at the procedure.
    let work = tempfile::tempdir().unwrap();
    let refused = minegate(
        work.path(),
        &app.config.database_url,
        &app.config.signing.key,
        &["backup", "--to", "x.db"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        text(&refused.stderr),
        "error: `minegate backup` is for the embedded SQLite database; this gateway uses \
         PostgreSQL: use pg_dump and pg_restore as docs/operations.md describes\n"
    );

    // The procedure of docs/operations.md, as written there.
    // Under umask 077, so the dump is its owner's alone, whatever the
    // umask it is run from.
    let dump = work.path().join("minegate.dump");
    let dumped = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(pg_dump)
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&app.config.database_url)
        .output()
        .unwrap();
    assert!(dumped.status.success(), "{}", text(&dumped.stderr));
    assert_eq!(mode(&dump), 0o600);
    let restored_database = fresh_postgres_database(&server_url).await;
    let new_url = restored_database.url.clone();
    let restored = std::process::Command::new(pg_restore)
        .args(["--no-owner", "--exit-on-error", "--dbname", &new_url])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", text(&restored.stderr));

    let mut config = app.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = new_url;
    let gateway = server::start_with_clock(&config, clock)
        .await
        .expect("a gateway starts on the restored database");
    let tls = minegate::client::ClientTls {
        server: format!("https://{}", gateway.local_addr()),
        ..app.client_tls("authority")
    };
    let channel = tls.connect().await.unwrap();
    assert_receipts_stored(channel.clone(), receipts.iter().map(Vec::as_slice)).await;
    let report = verify(channel.clone()).await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.entries_checked, original.entries_checked);
    assert_eq!(report.head_hash, original.head_hash);
    // It takes new filings after the restored ones.
    submit(channel.clone(), filing(10, &documents)).await;
    assert_eq!(
        verify(channel).await.entries_checked,
        original.entries_checked + 2
    );
    gateway.shutdown().await.unwrap();
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// `backup --into DIR` as an hourly timer runs it, under umask 000.
async fn backup_into(app: &TestApp, cwd: &Path, folder: &Path) -> (Output, Vec<String>) {
    let before = chrono::Utc::now();
    let output = under_umask(Some("000"))
        .current_dir(cwd)
        .args(["backup", "--into", folder.to_str().unwrap()])
        .env_remove("MINEGATE_CONFIG")
        .env("MINEGATE_DATABASE_URL", &app.config.database_url)
        .env("MINEGATE_SIGNING_KEY", &app.config.signing.key)
        .output()
        .await
        .unwrap();
    let after = chrono::Utc::now();
    // The names it may have given: one per second it ran in.
    let mut names = Vec::new();
    let mut at = before;
    while at <= after + chrono::Duration::seconds(1) {
        names.push(format!("minegate-{}.db", at.format("%Y-%m-%dT%H%M%SZ")));
        at += chrono::Duration::seconds(1);
    }
    (output, names)
}

#[tokio::test]
async fn hourly_backups_into_a_folder_get_names_of_their_moment_and_are_the_owners_alone() {
    let app = spawn_app().await;
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    submit(channel, filing(0, &documents)).await;
    let work = tempfile::tempdir().unwrap();
    // Only the last folder of the path is made: a mistyped parent makes
    // nothing.
    let folder = work.path().join("backups/minegate");
    let (output, _) = backup_into(&app, work.path(), &folder).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: creating {}: {} does not exist (only the last folder of the path is made)\n",
            folder.display(),
            work.path().join("backups").display()
        )
    );
    assert!(!work.path().join("backups").exists());
    // The folder does not exist: the command makes it, owner only.
    std::fs::create_dir(work.path().join("backups")).unwrap();
    let mut written = Vec::new();
    for _ in 0..2 {
        let (output, names) = backup_into(&app, work.path(), &folder).await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        let first = stdout.lines().next().unwrap();
        let name = names
            .iter()
            .find(|name| {
                first.starts_with(&format!("backup written to {}/{name} (", folder.display()))
            })
            .unwrap_or_else(|| panic!("{first}: not one of {names:?}"));
        written.push(name.clone());
        // The next run is a second later, as an hourly one is an hour later.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_ne!(written[0], written[1]);
    let mut listed: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, written);
    assert_eq!(mode(&folder), 0o700);
    for name in &written {
        assert_eq!(mode(&folder.join(name)), 0o600, "{name}");
    }
    // A name taken (another run in the same second, or any file) goes to
    // the next: every name this run could take is taken first.
    let taken: Vec<String> = {
        let now = chrono::Utc::now();
        (0..5)
            .map(|s| now + chrono::Duration::seconds(s))
            .map(|at| format!("minegate-{}.db", at.format("%Y-%m-%dT%H%M%SZ")))
            .collect()
    };
    for name in &taken {
        std::fs::write(folder.join(name), "taken").unwrap();
    }
    let (output, names) = backup_into(&app, work.path(), &folder).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let first = text(&output.stdout).lines().next().unwrap().to_owned();
    let second_names: Vec<String> = names.iter().map(|n| n.replace(".db", "-2.db")).collect();
    assert!(
        second_names.iter().any(|name| {
            first.starts_with(&format!("backup written to {}/{name} (", folder.display()))
        }),
        "{first}: not one of {second_names:?}"
    );
    for name in &taken {
        assert_eq!(std::fs::read_to_string(folder.join(name)).unwrap(), "taken");
    }
    // `--to` into a missing folder makes it too.
    let to = work.path().join("elsewhere/one.db");
    let output = minegate(
        work.path(),
        &app.config.database_url,
        &app.config.signing.key,
        &["backup", "--to", to.to_str().unwrap()],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        (mode(&work.path().join("elsewhere")), mode(&to)),
        (0o700, 0o600)
    );
    // A dangling link and a folder are refused before anything is copied;
    // three runs at once to one name: one writes it, the others fail; no
    // run leaves a partial copy behind.
    let odd = work.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::os::unix::fs::symlink(odd.join("nowhere.db"), odd.join("dangling.db")).unwrap();
    let run = |args: Vec<String>| {
        let (cwd, url, key) = (
            work.path().to_owned(),
            app.config.database_url.clone(),
            app.config.signing.key.clone(),
        );
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            minegate(&cwd, &url, &key, &args).await
        }
    };
    let to = |path: &Path| vec!["backup".into(), "--to".into(), path.display().to_string()];
    let dangling = run(to(&odd.join("dangling.db"))).await;
    assert_eq!(dangling.status.code(), Some(1));
    assert_eq!(
        text(&dangling.stderr),
        format!(
            "error: {} exists: a backup never overwrites a file; name a new one\n",
            odd.join("dangling.db").display()
        )
    );
    let folder_arg = format!("{}/", odd.join("sub").display());
    let slash = run(vec!["backup".into(), "--to".into(), folder_arg.clone()]).await;
    assert_eq!(slash.status.code(), Some(1));
    assert_eq!(
        text(&slash.stderr),
        format!(
            "error: {folder_arg} is a folder: --to names the file to write (--into a folder)\n"
        )
    );
    let same = odd.join("same.db");
    let (a, b, c) = tokio::join!(run(to(&same)), run(to(&same)), run(to(&same)));
    let codes: Vec<Option<i32>> = [&a, &b, &c].iter().map(|o| o.status.code()).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&odd)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["dangling.db", "same.db"]);
    // One of the two, not both, nor neither.
    let neither = minegate(
        work.path(),
        &app.config.database_url,
        &app.config.signing.key,
        &["backup"],
    )
    .await;
    assert_eq!(neither.status.code(), Some(2));
    assert!(
        text(&neither.stderr).starts_with(
            "error: the following required arguments were not provided:\n  <--to <TO>|--into <INTO>>\n"
        ),
        "{}",
        text(&neither.stderr)
    );
}

/// The energy client as a child process, with the certificates in `pki`,
/// against the gateway at `addr`.
async fn energy(pki: &Path, addr: std::net::SocketAddr, args: &[&str]) -> Output {
    as_ministry("energy", pki, addr, args).await
}

/// A client command of `role` as a child process, with that role's
/// certificate in `pki`, against the gateway at `addr`.
async fn as_ministry(role: &str, pki: &Path, addr: std::net::SocketAddr, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(args)
        .args(["--server", &format!("https://{addr}")])
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join(format!("{role}.pem")))
        .arg("--key")
        .arg(pki.join(format!("{role}.key")))
        .args(["--tls-domain", "localhost"])
        .env_remove("RUST_LOG")
        .env_remove("MINEGATE_CONFIG")
        .output()
        .await
        .unwrap()
}

/// (size, root) of a checkpoint note.
fn size_and_root(note: &str) -> (String, String) {
    let lines: Vec<&str> = note.lines().collect();
    (lines[1].to_owned(), lines[2].to_owned())
}

/// `minegate ledger checkpoint`'s size and root, which its note repeats.
async fn announced(cwd: &Path, url: &str, key: &Path) -> (String, String) {
    let output = minegate(cwd, url, key, &["ledger", "checkpoint"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let said = (
        lines[0].strip_prefix("size ").unwrap().to_owned(),
        lines[1].strip_prefix("root ").unwrap().to_owned(),
    );
    assert!(lines[2].starts_with("signed "), "{stdout}");
    assert_eq!(lines[3], "", "{stdout}");
    assert_eq!(size_and_root(&lines[4..].join("\n")), said, "{stdout}");
    said
}

fn hex16(base64_root: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_root)
        .unwrap();
    minegate::domain::hex(&bytes)[..16].to_owned()
}

#[tokio::test]
async fn after_an_announced_restore_the_energy_client_refuses_until_told_to_accept_the_restored_log()
 {
    let app = spawn_app().await;
    let pki = app.pki_dir();
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    submit(channel.clone(), filing(0, &documents)).await;
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy.db");
    let (key, url) = (
        app.config.signing.key.clone(),
        app.config.database_url.clone(),
    );
    let backed_up = minegate(
        work.path(),
        &url,
        &key,
        &["backup", "--to", copy.to_str().unwrap()],
    )
    .await;
    assert!(backed_up.status.success(), "{}", text(&backed_up.stderr));
    // A filing after the backup; the ministry sees the log with it.
    submit(channel, filing(1, &documents)).await;
    let out = work.path().join("energy");
    let out_arg = out.to_str().unwrap();
    let subscribe = ["energy", "subscribe", "--once", "--out", out_arg];
    let caught_up = energy(&pki, app.addr, &subscribe).await;
    assert!(caught_up.status.success(), "{}", text(&caught_up.stderr));
    let kept_path = out.join("minegate-checkpoint.note");
    let kept = std::fs::read_to_string(&kept_path).unwrap();
    let (old_size, old_root) = size_and_root(&kept);

    // The database is lost; the operators restore the backup and announce
    // the restored log's checkpoint.
    let mut config = app.config.clone();
    app.gateway.shutdown().await.unwrap();
    let restored_url = format!(
        "sqlite://{}",
        work.path().join("restored/minegate.db").display()
    );
    let put_back = minegate(
        work.path(),
        &restored_url,
        &key,
        &["restore", "--from", copy.to_str().unwrap()],
    )
    .await;
    assert!(put_back.status.success(), "{}", text(&put_back.stderr));
    let (size, root) = announced(work.path(), &restored_url, &key).await;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = restored_url.clone();
    let gateway = server::start(&config)
        .await
        .expect("the restored gateway starts");
    let addr = gateway.local_addr();
    let authority = minegate::client::ClientTls {
        server: format!("https://{addr}"),
        ca: pki.join("ca.pem"),
        cert: pki.join("authority.pem"),
        key: pki.join("authority.key"),
        domain: Some("localhost".to_owned()),
    };
    // Another filing: the restored log goes on, other than the one the ministry saw.
    submit(authority.connect().await.unwrap(), filing(2, &documents)).await;
    let (new_size, new_root) = announced(work.path(), &restored_url, &key).await;

    // The client refuses, and says how to go on.
    let refused = energy(&pki, addr, &subscribe).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.starts_with("error: the log was rewritten: the checkpoint of "),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(
            "\nif the gateway's operators announced a restore of its database, accept the \
             restored log they announced: minegate energy accept-restored-log --out DIR \
             --size SIZE --root ROOT (docs/operations.md, \"Resuming the ministries' clients\"); \
             otherwise report both checkpoints to them\n"
        ),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&kept_path).unwrap(), kept);

    // A checkpoint the gateway's log does not continue is refused.
    let accept = |size: &str, root: &str| {
        let args = [
            "energy",
            "accept-restored-log",
            "--out",
            out_arg,
            "--size",
            size,
            "--root",
            root,
        ];
        args.map(str::to_owned)
    };
    let run = |args: [String; 8]| {
        let pki = pki.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            energy(&pki, addr, &args).await
        }
    };
    let wrong = run(accept(&size, &old_root)).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        text(&wrong.stderr),
        format!(
            "error: the gateway's log of {new_size} entries does not continue the announced \
             checkpoint of {size} entries (root {old_root}): the proof does not lead to the \
             root; nothing changed\n"
        )
    );
    assert_eq!(std::fs::read_to_string(&kept_path).unwrap(), kept);

    // The announced one is accepted, logged with both checkpoints.
    let accepted = run(accept(&size, &root)).await;
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    let kept_at = format!(
        "{}.replaced-{old_size}-{}",
        kept_path.display(),
        hex16(&old_root)
    );
    assert_eq!(
        text(&accepted.stdout),
        format!(
            "accepted the restored log: the checkpoint kept in {} of {old_size} entries (root \
             {old_root}) is replaced by the gateway's of {new_size} entries (root {new_root}); \
             the old one is kept at {kept_at}\n",
            kept_path.display()
        )
    );
    let log = text(&accepted.stderr);
    for said in [
        "WARN".to_owned(),
        "accepted the gateway's restored log in place of the checkpoint kept".to_owned(),
        format!("old_size={old_size}"),
        format!("new_size={new_size}"),
        format!("announced_size={size}"),
    ] {
        assert!(log.contains(&said), "{said} not in {log}");
    }
    assert_eq!(std::fs::read_to_string(&kept_at).unwrap(), kept);
    let now_kept = std::fs::read_to_string(&kept_path).unwrap();
    assert_eq!(size_and_root(&now_kept), (new_size, new_root));
    assert_eq!(mode(&kept_path), 0o600);

    // The client goes on: the extract the restore took back (filing 0's,
    // unacknowledged in the backup) and the new filing's.
    let resumed = energy(&pki, addr, &subscribe).await;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let printed = text(&resumed.stdout);
    assert!(
        printed.ends_with(&format!(
            "2 extracts written to {out_arg} and acknowledged\n"
        )),
        "{printed}"
    );
    // Told again, there is nothing to accept.
    let again = run(accept(&size, &root)).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout),
        format!(
            "nothing to accept: the checkpoint kept in {} is consistent with the gateway's log\n",
            kept_path.display()
        )
    );
    // A wrong announcement is refused even then (found from outside).
    let kept_now = std::fs::read_to_string(&kept_path).unwrap();
    let wrong = run(accept(&size, &old_root)).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&kept_path).unwrap(), kept_now);
    // A folder this client never kept a checkpoint in: refused, not made
    // (found from outside: it trusted the gateway's checkpoint there).
    let nowhere = kept_path.parent().unwrap().join("never-used");
    let args = [
        "energy",
        "accept-restored-log",
        "--out",
        nowhere.to_str().unwrap(),
        "--size",
        &size,
        "--root",
        &root,
    ];
    let refused = energy(&pki, addr, &args).await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        text(&refused.stderr),
        format!(
            "error: no checkpoint is kept in {}: this client has not followed the gateway's \
             log from there (check --out); nothing was changed\n",
            nowhere.join("minegate-checkpoint.note").display()
        )
    );
    assert!(!nowhere.exists());
    gateway.shutdown().await.unwrap();
}

/// The finance client follows the same log: after an announced restore its
/// pull refuses with the finance command to run, `finance
/// accept-restored-log --out FILE` (the checkpoint beside the form's file)
/// takes the announced log, and the next pull goes on.
#[tokio::test]
async fn after_an_announced_restore_the_finance_client_accepts_the_restored_log_beside_its_file() {
    let app = spawn_app().await;
    let pki = app.pki_dir();
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    submit(channel.clone(), filing(0, &documents)).await;
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy.db");
    let (key, url) = (
        app.config.signing.key.clone(),
        app.config.database_url.clone(),
    );
    let args = ["backup", "--to", copy.to_str().unwrap()];
    let backed_up = minegate(work.path(), &url, &key, &args).await;
    assert!(backed_up.status.success(), "{}", text(&backed_up.stderr));
    submit(channel, filing(1, &documents)).await;
    // The quarter's form (no report in it: 0 rows) is long due.
    let form = work.path().join("finance/form402-2025-4.csv");
    let form_arg = form.to_str().unwrap().to_owned();
    let pull = [
        "finance",
        "pull",
        "--year",
        "2025",
        "--quarter",
        "4",
        "--format",
        "csv",
        "--out",
        &form_arg,
    ];
    let pulled = as_ministry("finance", &pki, app.addr, &pull).await;
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let kept_path = work.path().join("finance/minegate-checkpoint.note");
    let kept = std::fs::read_to_string(&kept_path).unwrap();
    let (old_size, _) = size_and_root(&kept);

    let mut config = app.config.clone();
    app.gateway.shutdown().await.unwrap();
    let restored_url = format!(
        "sqlite://{}",
        work.path().join("restored/minegate.db").display()
    );
    let args = ["restore", "--from", copy.to_str().unwrap()];
    let put_back = minegate(work.path(), &restored_url, &key, &args).await;
    assert!(put_back.status.success(), "{}", text(&put_back.stderr));
    let (size, root) = announced(work.path(), &restored_url, &key).await;
    assert!(size.parse::<u64>().unwrap() < old_size.parse::<u64>().unwrap());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = restored_url.clone();
    let gateway = server::start(&config)
        .await
        .expect("the restored gateway starts");
    let addr = gateway.local_addr();

    let refused = as_ministry("finance", &pki, addr, &pull).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: the log was rewritten: the checkpoint of {old_size} entries is not a prefix \
             of the checkpoint of {size} (a tree of {size} cannot extend one of {old_size})\n"
        )),
        "{stderr}"
    );
    // Then the kept checkpoint's note, then the gateway's, as the runbook shows.
    let notes = stderr.split_once('\n').unwrap().1;
    assert!(notes.starts_with(&kept), "{stderr}");
    assert!(
        notes[kept.len()..].starts_with(&format!("\nminegate\n{size}\n{root}\n")),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(
            "accept the restored log they announced: minegate finance accept-restored-log --out \
             FILE --size SIZE --root ROOT (docs/operations.md, \"Resuming the ministries' \
             clients\"); otherwise report both checkpoints to them\n"
        ),
        "{stderr}"
    );
    assert!(
        !std::fs::read_dir(work.path().join("finance"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("replaced"))
    );

    let accept = [
        "finance",
        "accept-restored-log",
        "--out",
        &form_arg,
        "--size",
        &size,
        "--root",
        &root,
    ];
    let accepted = as_ministry("finance", &pki, addr, &accept).await;
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    assert!(
        text(&accepted.stdout).starts_with(&format!(
            "accepted the restored log: the checkpoint kept in {} of {old_size} entries",
            kept_path.display()
        )),
        "{}",
        text(&accepted.stdout)
    );
    assert_eq!(
        size_and_root(&std::fs::read_to_string(&kept_path).unwrap()),
        (size.clone(), root.clone())
    );
    let resumed = as_ministry("finance", &pki, addr, &pull).await;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).starts_with("form 402 for 2025 Q4: revision 1, 0 rows"),
        "{}",
        text(&resumed.stdout)
    );
    gateway.shutdown().await.unwrap();
}

/// A backup stopped by SIGTERM or SIGINT at any moment leaves nothing but,
/// if it finished first, the finished copy: no partial file, no journal
/// (found from outside: a full copy, 0644, after "removed").
#[tokio::test]
async fn a_backup_stopped_at_any_moment_leaves_no_partial_copy() {
    let app = spawn_app().await;
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "a").await;
    for i in 0..20 {
        submit(channel.clone(), filing(i, &documents)).await;
    }
    let work = tempfile::tempdir().unwrap();
    for (round, delay_ms) in [0u64, 1, 2, 3, 5, 8, 12, 20, 40].into_iter().enumerate() {
        for signal in ["TERM", "INT"] {
            let folder = work.path().join(format!("{signal}-{round}"));
            std::fs::create_dir(&folder).unwrap();
            let to = folder.join("copy.db");
            let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
                .args(["backup", "--to", to.to_str().unwrap()])
                .current_dir(work.path())
                .env_remove("MINEGATE_CONFIG")
                .env("MINEGATE_DATABASE_URL", &app.config.database_url)
                .env("MINEGATE_SIGNING_KEY", &app.config.signing.key)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            let pid = child.id().unwrap().to_string();
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status();
            let ended = child.wait_with_output().await.unwrap();
            let left: Vec<String> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            match ended.status.code() {
                Some(0) => {
                    assert_eq!(left, ["copy.db"], "{signal} after {delay_ms} ms");
                    assert_eq!(mode(&to), 0o600);
                }
                code => assert!(
                    left.is_empty(),
                    "{signal} after {delay_ms} ms: exit {code:?}, left {left:?}"
                ),
            }
        }
    }
}

/// An empty file is an empty SQLite database: restored, it would be a new
/// gateway's. It is refused, and nothing is made.
#[tokio::test]
async fn an_empty_file_is_no_backup() {
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let url = format!(
        "sqlite://{}",
        work.path().join("data/minegate.db").display()
    );
    let key = work.path().join("signing.key");
    let output = minegate(
        work.path(),
        &url,
        &key,
        &["restore", "--from", empty.to_str().unwrap()],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stderr);
    assert!(
        said.ends_with("holds no minegate database (no schema in it)\n"),
        "{said}"
    );
    let data: Vec<_> = std::fs::read_dir(work.path().join("data"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(data.is_empty(), "{data:?}");
}

/// `minegate backup … | true`: the copy is written and named, and the
/// command ends of SIGPIPE printing its report, as Unix tools do (found
/// from outside: it panicked, exit 101).
#[tokio::test]
async fn a_backup_whose_output_pipe_is_closed_writes_the_copy_and_ends_quietly() {
    let app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let to = work.path().join("copy.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(["backup", "--to", to.to_str().unwrap()])
        .current_dir(work.path())
        .env_remove("MINEGATE_CONFIG")
        .env("MINEGATE_DATABASE_URL", &app.config.database_url)
        .env("MINEGATE_SIGNING_KEY", &app.config.signing.key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let ended = child.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&ended.status),
        Some(13)
    );
    assert_eq!(text(&ended.stderr), "");
    assert_eq!(mode(&to), 0o600);
}
