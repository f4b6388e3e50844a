//! The development PKI: a CA, a server certificate for localhost, one client
//! certificate per role and a CRL, made with rcgen. `minegate certs init`
//! writes it; `minegate certs revoke` adds a certificate to the CRL. Tests
//! make their own in a temporary folder. A deployment uses a real CA instead
//! (see certs/README.md).

use std::{
    fs,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, string::Ia5String,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use crate::tls::Role;

/// File names inside a PKI folder.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CRL: &str = "crl.pem";
pub const SERVER_NAME: &str = "server";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: not a PEM certificate or CRL that can be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{0} already exists; pass --force to replace the whole PKI")]
    AlreadyExists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl IssuedCertificate {
    pub fn cert_der(&self) -> Vec<u8> {
        pem_to_der(&self.cert_pem).expect("rcgen writes valid PEM")
    }
}

/// What a leaf certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    pub common_name: String,
    /// The identity URI SAN (e.g. `urn:minegate:energy`); `None`: CN only.
    pub uri: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafOptions {
    /// A client certificate valid from an hour ago for a year.
    pub fn client(common_name: &str, uri: Option<&str>) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafOptions {
            common_name: common_name.to_owned(),
            uri: uri.map(str::to_owned),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
        }
    }

    /// The same certificate, but valid only in the past.
    pub fn expired(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::days(30);
        self.not_after = now - Duration::days(1);
        self
    }
}

/// One certificate on a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number as encoded (big-endian bytes).
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
}

/// What a CRL file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlContents {
    pub revoked: Vec<RevokedEntry>,
    /// The CRL number (0 if the CRL has none).
    pub number: u64,
}

/// A CA that can issue certificates and sign CRLs.
pub struct CertificateAuthority {
    cert_pem: String,
    key: KeyPair,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial()?);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Self::load(&cert_pem, &key.serialize_pem())
    }

    /// A CA from its certificate and private key (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("minegate gateway");
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(ia5(name)?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(825);
        self.sign(params)
    }

    /// A client certificate.
    pub fn issue_client(&self, options: &LeafOptions) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&options.common_name);
        if let Some(uri) = &options.uri {
            params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<IssuedCertificate, PkiError> {
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRL listing `revoked`, valid for a year.
    pub fn sign_crl(&self, revoked: &[RevokedEntry], crl_number: u64) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&entry.serial),
                    revocation_time: entry.revoked_at,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "minegate development PKI");
    dn
}

fn ia5(s: &str) -> Result<Ia5String, PkiError> {
    Ia5String::try_from(s).map_err(|_| PkiError::Invalid(format!("{s:?} is not ASCII")))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Invalid("no system randomness".into()))?;
    bytes[0] &= 0x7f; // keep it a positive INTEGER
    bytes[0] |= 0x01; // and keep its length (no leading zero byte)
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(parsed.contents)
}

/// What `init` wrote.
#[derive(Debug)]
pub struct DevPki {
    pub dir: PathBuf,
    /// Paths of the files written, in the order written.
    pub files: Vec<PathBuf>,
}

/// Makes a CA, a server certificate (localhost, 127.0.0.1, ::1), one client
/// certificate per role (identity `urn:minegate:ROLE` as URI SAN) and an
/// empty CRL in `dir`. Refuses to overwrite an existing CA unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<DevPki, PkiError> {
    let ca_path = dir.join(CA_CERT);
    if ca_path.exists() && !force {
        return Err(PkiError::AlreadyExists(ca_path));
    }
    // 0700: a CA bundle or CRL in a folder others may write to could be
    // replaced, and the gateway reloads them on change.
    crate::files::create_private_folder(dir).map_err(io_error(dir))?;
    let ca = CertificateAuthority::generate("minegate development CA")?;
    let mut files = Vec::new();
    write_file(&dir.join(CA_KEY), &ca.key_pem(), true, &mut files)?;
    write_file(&ca_path, ca.cert_pem(), false, &mut files)?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
    write_pair(dir, SERVER_NAME, &server, &mut files)?;
    for role in Role::ALL {
        let identity = role.dev_identity();
        let client = ca.issue_client(&LeafOptions::client(
            &format!("minegate dev {role}"),
            Some(&identity),
        ))?;
        write_pair(dir, role.as_str(), &client, &mut files)?;
    }
    write_file(&dir.join(CRL), &ca.sign_crl(&[], 1)?, false, &mut files)?;
    Ok(DevPki {
        dir: dir.to_owned(),
        files,
    })
}

/// Issues one more client certificate `NAME.pem`/`NAME.key` from the CA in `dir`.
pub fn issue(dir: &Path, name: &str, options: &LeafOptions) -> Result<Vec<PathBuf>, PkiError> {
    check_name(name)?;
    if dir.join(format!("{name}.pem")).exists() {
        return Err(PkiError::AlreadyExists(dir.join(format!("{name}.pem"))));
    }
    let ca = load_ca(dir)?;
    let client = ca.issue_client(options)?;
    let mut files = Vec::new();
    write_pair(dir, name, &client, &mut files)?;
    Ok(files)
}

/// What `revoke` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number of the certificate, hex.
    pub serial: String,
    /// The CRL's number after the change.
    pub crl_number: u64,
    /// False when the certificate was already on the CRL (nothing changed).
    pub newly_revoked: bool,
}

/// Adds `dir/NAME.pem` to `dir/crl.pem`, re-signed by the CA in `dir`.
pub fn revoke(dir: &Path, name: &str) -> Result<Revocation, PkiError> {
    check_name(name)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let cert_pem = fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
    let der = pem_to_der(&cert_pem).ok_or_else(|| PkiError::Unreadable {
        path: cert_path.clone(),
        reason: "no PEM certificate".into(),
    })?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).map_err(|e| {
        PkiError::Unreadable {
            path: cert_path.clone(),
            reason: e.to_string(),
        }
    })?;
    let serial = cert.raw_serial().to_vec();

    let crl_path = dir.join(CRL);
    let CrlContents {
        mut revoked,
        number,
    } = read_crl(&crl_path)?;
    let serial_hex = hex(&serial);
    if revoked.iter().any(|entry| entry.serial == serial) {
        return Ok(Revocation {
            serial: serial_hex,
            crl_number: number,
            newly_revoked: false,
        });
    }
    revoked.push(RevokedEntry {
        serial,
        revoked_at: OffsetDateTime::now_utc(),
    });
    let ca = load_ca(dir)?;
    let crl_pem = ca.sign_crl(&revoked, number + 1)?;
    write_file(&crl_path, &crl_pem, false, &mut Vec::new())?;
    Ok(Revocation {
        serial: serial_hex,
        crl_number: number + 1,
        newly_revoked: true,
    })
}

/// The revoked certificates and the CRL number of a PEM CRL file.
pub fn read_crl(path: &Path) -> Result<CrlContents, PkiError> {
    let pem = fs::read(path).map_err(io_error(path))?;
    let unreadable = |reason: String| PkiError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| unreadable(e.to_string()))?;
    let (_, crl) =
        x509_parser::parse_x509_crl(&parsed.contents).map_err(|e| unreadable(e.to_string()))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| RevokedEntry {
            serial: entry.raw_serial().to_vec(),
            revoked_at: entry.revocation_date.to_datetime(),
        })
        .collect();
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n.clone()).ok())
        .unwrap_or(0);
    Ok(CrlContents { revoked, number })
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority, PkiError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert = fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
    let key = fs::read_to_string(&key_path).map_err(io_error(&key_path))?;
    CertificateAuthority::load(&cert, &key)
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok && name != "ca" && name != "crl" {
        Ok(())
    } else {
        Err(PkiError::Invalid(format!(
            "certificate name {name:?}: use letters, digits, '-' and '_' (not 'ca' or 'crl')"
        )))
    }
}

fn write_pair(
    dir: &Path,
    name: &str,
    issued: &IssuedCertificate,
    files: &mut Vec<PathBuf>,
) -> Result<(), PkiError> {
    write_file(
        &dir.join(format!("{name}.key")),
        &issued.key_pem,
        true,
        files,
    )?;
    write_file(
        &dir.join(format!("{name}.pem")),
        &issued.cert_pem,
        false,
        files,
    )
}

/// Writes through a temporary file and a rename, so a reader never sees half
/// a file; private keys are readable by the owner only.
fn write_file(
    path: &Path,
    contents: &str,
    private: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    files.push(path.to_owned());
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_the_whole_layout_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let pki = init(dir.path(), false).unwrap();
        let names: Vec<String> = pki
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.key",
                "ca.pem",
                "server.key",
                "server.pem",
                "authority.key",
                "authority.pem",
                "energy.key",
                "energy.pem",
                "finance.key",
                "finance.pem",
                "operator.key",
                "operator.pem",
                "crl.pem"
            ]
        );
        let crl = read_crl(&dir.path().join(CRL)).unwrap();
        assert_eq!(
            crl,
            CrlContents {
                revoked: vec![],
                number: 1
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("energy.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = init(dir.path(), false).unwrap_err();
        assert!(matches!(err, PkiError::AlreadyExists(p) if p == dir.path().join("ca.pem")));
    }

    #[test]
    fn revoke_adds_the_serial_once_and_bumps_the_crl_number() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let pem = fs::read_to_string(dir.path().join("energy.pem")).unwrap();
        let der = pem_to_der(&pem).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        let serial = cert.raw_serial().to_vec();

        let first = revoke(dir.path(), "energy").unwrap();
        assert_eq!(
            first,
            Revocation {
                serial: hex(&serial),
                crl_number: 2,
                newly_revoked: true
            }
        );
        let again = revoke(dir.path(), "energy").unwrap();
        assert_eq!(again.crl_number, 2);
        assert!(!again.newly_revoked);
        let crl = read_crl(&dir.path().join(CRL)).unwrap();
        assert_eq!(crl.number, 2);
        assert_eq!(
            crl.revoked
                .iter()
                .map(|e| e.serial.clone())
                .collect::<Vec<_>>(),
            vec![serial]
        );
        assert!(matches!(
            revoke(dir.path(), "nobody"),
            Err(PkiError::Io { .. })
        ));
        assert!(matches!(
            revoke(dir.path(), "../x"),
            Err(PkiError::Invalid(_))
        ));
    }
}
