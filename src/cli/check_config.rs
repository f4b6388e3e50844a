//! `minegate check-config`: what `serve` would find, without starting. The
//! configuration (file and environment) is loaded as `serve` loads it, the
//! files it names are opened and the TLS ones loaded, and the database is
//! read, never changed, for its schema version against this binary's.
//!
//! Exit codes: 0 = this binary can start with it (the database up to date,
//! not made yet, or to be migrated); 1 = the configuration, or a file it
//! names, is wrong; 2 = the database cannot be reached or read; 3 = the
//! database is newer than this binary, which would refuse to start on it.

use std::{path::Path, process::ExitCode};

use crate::{
    config::Config,
    files::redacted_url,
    signing::{Signer, SigningError},
    store::schema::{self, Schema},
    tls::reload::SharedServerConfig,
};

/// What was found wrong, in the order the exit code prefers.
#[derive(Debug, Default)]
struct Findings {
    configuration: usize,
    database_unreadable: bool,
    database_newer: bool,
}

impl Findings {
    fn exit_code(&self) -> u8 {
        if self.configuration > 0 {
            1
        } else if self.database_unreadable {
            2
        } else if self.database_newer {
            3
        } else {
            0
        }
    }
}

/// Checks the configuration from `path` (else ./minegate.toml if present,
/// else the defaults) and the environment; prints one line per check.
pub async fn run(path: Option<&Path>) -> ExitCode {
    let source = match super::config_file(path) {
        Some(file) => format!("{}, then the environment", file.display()),
        None => "the built-in defaults, then the environment".to_owned(),
    };
    println!("configuration: {source}");
    let config = match super::load_config(path) {
        Ok(config) => config,
        Err(error) => {
            println!("error: {}", super::causes_once(&error));
            println!("not ok: the configuration does not load (exit 1)");
            return ExitCode::from(1);
        }
    };
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    let mut findings = Findings::default();
    findings.configuration += check_files(&config);
    check_database(&config, &mut findings).await;
    let code = findings.exit_code();
    match code {
        0 => println!(
            "ok: minegate {} can start with this configuration",
            env!("CARGO_PKG_VERSION")
        ),
        _ => println!("not ok (exit {code})"),
    }
    ExitCode::from(code)
}

/// The files the configuration names: each exists and is readable, the TLS
/// ones load together as `serve` loads them, the signing key is one.
/// Returns how many are wrong.
fn check_files(config: &Config) -> usize {
    let tls = &config.tls;
    let dev_pki = !tls.dev_pki_dir.as_os_str().is_empty()
        && !tls.dev_pki_dir.join(crate::tls::pki::CA_CERT).exists();
    if dev_pki {
        println!(
            "warning: tls.dev_pki_dir: no {} in {}: the first start makes a development PKI \
             there (not for production)",
            crate::tls::pki::CA_CERT,
            tls.dev_pki_dir.display()
        );
    }
    let mut named = vec![("tls.ca_bundle", &tls.ca_bundle)];
    named.extend(tls.crls.iter().map(|crl| ("tls.crls", crl)));
    named.push(("tls.cert", &tls.cert));
    named.push(("tls.key", &tls.key));
    let mut wrong = 0;
    for (key, file) in named {
        let made = dev_pki && file.starts_with(&tls.dev_pki_dir);
        match std::fs::read(file) {
            Ok(_) => println!("{key}: {}: readable", file.display()),
            Err(_) if made => println!("{key}: {}: made with the PKI", file.display()),
            Err(error) => {
                println!("error: {key}: {}: {error}", file.display());
                wrong += 1;
            }
        }
    }
    if wrong == 0 && !dev_pki {
        match SharedServerConfig::load(tls) {
            Ok(_) => {
                println!("tls: the certificate, its key, the CA bundle and the CRLs load");
                wrong += check_expiry(config);
            }
            Err(error) => {
                println!("error: tls: {error}");
                wrong += 1;
            }
        }
    }
    wrong + check_signing(config)
}

/// The server and CA certificates' days left: the server's expired is an
/// error (every client would refuse the handshake), a CA's a warning (an
/// old one may stay in the bundle through a move), one within
/// `tls.expiry_warning_days` a warning. How many errors.
fn check_expiry(config: &Config) -> usize {
    let days = match crate::tls::reload::certificate_days(&config.tls, chrono::Utc::now()) {
        Ok(days) => days,
        Err(error) => {
            println!("error: tls: {error}");
            return 1;
        }
    };
    let warning = i64::from(config.tls.expiry_warning_days);
    let mut expired = 0;
    for (which, left) in days {
        if left < 0 && which == "server" {
            println!("error: tls: the {which} certificate has expired: clients refuse it");
            expired += 1;
        } else if left < 0 {
            // An old CA kept in the bundle while agencies move to the new.
            println!(
                "warning: tls: the {which} certificate has expired: certificates it issued \
                 are refused"
            );
        } else if left < warning {
            println!(
                "warning: tls: the {which} certificate expires in {left} days \
                 (tls.expiry_warning_days = {warning})"
            );
        }
    }
    expired
}

/// The signing key, if it exists, is one `serve` can sign with; the origin
/// is said, since the first start fixes it.
fn check_signing(config: &Config) -> usize {
    let signing = &config.signing;
    println!(
        "signing.origin: {:?} (the ledger's name, fixed when the database is made)",
        signing.origin
    );
    let key = signing.key.display();
    if !signing.key.exists() {
        println!("signing.key: {key}: missing: the first start makes it");
        return 0;
    }
    match Signer::load(&signing.key, &signing.origin) {
        Ok(_) => {
            println!("signing.key: {key}: readable");
            0
        }
        // The reason alone: the error's own text names the path again.
        Err(SigningError::Key { reason, .. }) => {
            println!("error: signing.key: {key}: {reason}");
            1
        }
        Err(error) => {
            println!("error: signing.key: {key}: {error}");
            1
        }
    }
}

/// The database: reachable, and its schema against this binary's.
async fn check_database(config: &Config, findings: &mut Findings) {
    // A URL this binary cannot take is the configuration's fault; its
    // error names it.
    if let Err(error) = crate::store::check_url(&config.database_url) {
        println!("error: {error}");
        findings.configuration += 1;
        return;
    }
    let url = redacted_url(&config.database_url);
    match schema::inspect(&config.database_url).await {
        Ok(schema) => {
            println!("database: {url}: {schema}");
            findings.database_newer = matches!(schema, Schema::Newer { .. });
            if !findings.database_newer {
                check_key_history(config, findings).await;
            }
        }
        Err(error) => {
            println!("error: {url}: {error}");
            findings.database_unreadable = true;
        }
    }
}

/// The signing key and `signing.origin` against the database's key
/// history, as `serve` admits them: the ledger's one name, a key the
/// history knows (or `signing.add_unknown_key`), never a retired one.
async fn check_key_history(config: &Config, findings: &mut Findings) {
    let history = match schema::key_history(&config.database_url).await {
        Ok(history) => history,
        Err(error) => {
            println!("error: the database's key history: {error}");
            findings.database_unreadable = true;
            return;
        }
    };
    let signing = &config.signing;
    let current = match Signer::load(&signing.key, &signing.origin) {
        Ok(signer) => signer.record(),
        // A key the first start would make is one no history knows.
        Err(_) if !signing.key.exists() && !history.is_empty() && !signing.add_unknown_key => {
            println!(
                "error: signing.key: {}: missing, and this database already has a key history: \
                 a new key would be refused; put the gateway's key there (or see \
                 --add-signing-key)",
                signing.key.display()
            );
            findings.configuration += 1;
            return;
        }
        // Otherwise only the name can be wrong.
        Err(_) => match history.first() {
            Some(first) if first.name != signing.origin => {
                report_refusal(
                    &SigningError::OriginChanged {
                        history: first.name.clone(),
                        configured: signing.origin.clone(),
                    },
                    findings,
                );
                return;
            }
            _ => return,
        },
    };
    if let Err(refused) = crate::signing::admit(&history, &current, signing.add_unknown_key) {
        report_refusal(&refused, findings);
    }
}

fn report_refusal(refused: &SigningError, findings: &mut Findings) {
    let fix = match refused {
        SigningError::OriginChanged { history, .. } => {
            format!("; set signing.origin = {history:?}")
        }
        _ => String::new(),
    };
    println!("error: signing: {refused}: serve would refuse to start{fix}");
    findings.configuration += 1;
}
