//! A gRPC channel to a gateway over mutual TLS, for the command-line tools
//! (and the tests): the agency's own certificate and key, and the CA that
//! issued the gateway's certificate.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TLS settings or the server's address do not make an endpoint:
    /// this side's fault, found before anything is sent.
    #[error("cannot set up a connection to {server}: {source}")]
    Setup {
        server: String,
        source: tonic::transport::Error,
    },
    /// A file read but not what it should be.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The gateway's address is not one to connect to.
    #[error("the server address {server:?}: {reason}")]
    Address { server: String, reason: String },
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
}

/// Where the gateway is and which files prove who we are.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// `https://host:port`.
    pub server: String,
    /// The CA bundle that issued the gateway's certificate.
    pub ca: PathBuf,
    /// Our client certificate (PEM).
    pub cert: PathBuf,
    /// Our private key (PEM).
    pub key: PathBuf,
    /// The name to verify the gateway's certificate against, if not the host in `server`.
    pub domain: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The bytes of `path`, which must hold at least one PEM certificate.
fn certificates(path: &Path) -> Result<Vec<u8>, ClientError> {
    let bytes = read(path)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match parsed {
        Ok(certificates) if !certificates.is_empty() => Ok(bytes),
        _ => Err(ClientError::Invalid {
            path: path.to_owned(),
            reason: "no PEM certificate in it".into(),
        }),
    }
}

/// Refuses our own certificate (the first in `pem`) once it has expired:
/// the gateway would end the handshake, saying little.
fn refuse_expired(path: &Path, pem: &[u8]) -> Result<(), ClientError> {
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem).next() else {
        return Ok(());
    };
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(&der) else {
        return Ok(());
    };
    let not_after = cert.validity().not_after;
    if not_after.timestamp() < chrono::Utc::now().timestamp() {
        return Err(ClientError::Invalid {
            path: path.to_owned(),
            reason: format!("this certificate expired on {not_after}"),
        });
    }
    Ok(())
}

/// `https://HOST[:PORT]`, the only kind of address the gateway answers.
fn check_address(server: &str) -> Result<(), ClientError> {
    let wrong = |reason: &str| ClientError::Address {
        server: server.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = server
        .parse()
        .map_err(|_| wrong("not a URL; expected https://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("https") => {}
        None => return Err(wrong("not a URL; expected https://HOST:PORT")),
        Some(_) => {
            return Err(wrong(
                "the gateway speaks only TLS; expected https://HOST:PORT",
            ));
        }
    }
    let authority = uri.authority().ok_or_else(|| wrong("no host in it"))?;
    let has_port = authority
        .as_str()
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']'));
    if has_port && matches!(authority.port_u16(), None | Some(0)) {
        return Err(wrong("the port is not a number from 1 to 65535"));
    }
    Ok(())
}

impl ClientError {
    /// Whether the fault is this side's (a file, a setting), found before
    /// the gateway was asked anything.
    pub fn is_local(&self) -> bool {
        !matches!(self, ClientError::Connect { .. })
    }
}

impl ClientTls {
    /// Opens the channel; the TLS handshake happens here.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        self.endpoint()?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                server: self.server.clone(),
                source,
            })
    }

    /// The endpoint [`ClientTls::connect`] opens, to set more on it first.
    /// Its files and the address are checked here, so that a fault of this
    /// side is told apart from the gateway's answer.
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        check_address(&self.server)?;
        let ca = certificates(&self.ca)?;
        let cert = certificates(&self.cert)?;
        refuse_expired(&self.cert, &cert)?;
        let key = read(&self.key)?;
        if PrivateKeyDer::from_pem_slice(&key).is_err() {
            return Err(ClientError::Invalid {
                path: self.key.clone(),
                reason: "no PEM private key in it".into(),
            });
        }
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        let setup_error = |source| ClientError::Setup {
            server: self.server.clone(),
            source,
        };
        Endpoint::from_shared(self.server.clone())
            .map_err(setup_error)?
            .tls_config(tls)
            .map_err(setup_error)
    }
}
