//! A gRPC channel to a gateway over mutual TLS, for the command-line tools
//! (and the tests): the agency's own certificate and key, and the CA that
//! issued the gateway's certificate.

use std::path::{Path, PathBuf};

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
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
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
