//! Who is calling: the identity in the client certificate (its first URI SAN,
//! else its subject CN) and the role the configuration gives that identity.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The four kinds of caller the gateway knows (docs/architecture.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The authorized body's registry system: sends filings.
    Authority,
    /// The energy ministry: receives the §6 extracts.
    Energy,
    /// The finance ministry: pulls form 402 (§6-1).
    Finance,
    /// The gateway's own operators: compliance, ledger, health.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Authority, Role::Energy, Role::Finance, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Authority => "authority",
            Role::Energy => "energy",
            Role::Finance => "finance",
            Role::Operator => "operator",
        }
    }

    /// The identity the development PKI gives this role's client certificate.
    pub fn dev_identity(self) -> String {
        format!("urn:minegate:{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected authority, energy, finance or operator")
            })
    }
}

/// An authenticated caller whose identity the configuration maps to a role.
/// Handlers see this, never raw certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub identity: String,
    pub role: Role,
}

/// The identity of a DER certificate: its first URI SAN, else its subject CN.
/// `None` when it has neither (or does not parse).
pub fn identity_from_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let uri = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        });
        if uri.is_some() {
            return uri;
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{CertificateAuthority, LeafOptions};

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "janitor".parse::<Role>(),
            Err("unknown role \"janitor\": expected authority, energy, finance or operator".into())
        );
    }

    #[test]
    fn identity_is_the_uri_san_else_the_common_name() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let with_uri = ca
            .issue_client(&LeafOptions::client("registry", Some("urn:kz:registry")))
            .unwrap();
        assert_eq!(
            identity_from_certificate(&with_uri.cert_der()),
            Some("urn:kz:registry".to_owned())
        );
        let cn_only = ca
            .issue_client(&LeafOptions::client("kz-finance-gateway", None))
            .unwrap();
        assert_eq!(
            identity_from_certificate(&cn_only.cert_der()),
            Some("kz-finance-gateway".to_owned())
        );
        assert_eq!(identity_from_certificate(b"not a certificate"), None);
    }
}
