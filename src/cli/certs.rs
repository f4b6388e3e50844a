//! `minegate certs`: the development PKI (see certs/README.md).

use std::path::PathBuf;

use clap::Subcommand;
use time::{Duration, OffsetDateTime};

use crate::tls::pki::{self, LeafOptions};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a CA, a server certificate (localhost, 127.0.0.1, ::1), one client
    /// certificate per role (identity urn:minegate:ROLE) and an empty CRL.
    Init {
        /// Folder to write into.
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// Replace an existing PKI in the folder (every certificate changes).
        #[arg(long)]
        force: bool,
    },
    /// Issue another client certificate NAME.pem / NAME.key from the folder's CA.
    Issue {
        /// File name (letters, digits, '-', '_').
        name: String,
        /// The identity, written as URI SAN (e.g. urn:kz:energy:backup).
        #[arg(long)]
        identity: String,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: i64,
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
    },
    /// Add NAME.pem to the folder's CRL. A running gateway reloads the CRL by
    /// itself when the file changes, and at once on SIGHUP: no restart.
    Revoke {
        /// The certificate's file name without .pem (e.g. energy).
        name: String,
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
    },
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, force } => {
            let made = pki::init(&dir, force)?;
            println!("development PKI written to {}:", made.dir.display());
            for file in made.files {
                println!("  {}", file.display());
            }
            println!(
                "client identities: urn:minegate:authority, urn:minegate:energy, urn:minegate:finance, urn:minegate:operator"
            );
        }
        CertsCommand::Issue {
            name,
            identity,
            days,
            dir,
        } => {
            if days < 1 {
                anyhow::bail!("--days must be at least 1");
            }
            let mut options = LeafOptions::client(&name, Some(&identity));
            options.not_after = OffsetDateTime::now_utc() + Duration::days(days);
            for file in pki::issue(&dir, &name, &options)? {
                println!("wrote {}", file.display());
            }
            println!("map the identity to a role in the config: [roles] \"{identity}\" = \"ROLE\"");
        }
        CertsCommand::Revoke { name, dir } => {
            let revocation = pki::revoke(&dir, &name)?;
            if revocation.newly_revoked {
                println!(
                    "revoked {name} (serial {}); {} is now CRL number {}; a running gateway reloads it by itself (at once on SIGHUP)",
                    revocation.serial,
                    dir.join(pki::CRL).display(),
                    revocation.crl_number
                );
            } else {
                println!(
                    "{name} (serial {}) was already revoked; CRL number {} unchanged",
                    revocation.serial, revocation.crl_number
                );
            }
        }
    }
    Ok(())
}
