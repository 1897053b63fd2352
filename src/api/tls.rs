//! TLS for the agent's API (protocol spec 5.1): the auto-generated self-signed
//! certificate IPA makes at start, and server configurations from PEM text or from the
//! operator's static files. Always the ring provider, so no second crypto library is
//! linked. Serving itself (wrapping connections) is in `server.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Validity of the generated certificate (IPA's effective value).
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Largest certificate or key file read from disk.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Errors while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The curve name is unknown or not supported by the ring provider.
    #[error("TLS certificate curve {0:?} is not supported (use p256 or p384; p521 needs a crypto provider this build does not include)")]
    UnsupportedCurve(String),
    /// The minimum TLS version is not one we can serve.
    #[error("TLS minimum version {0:?} is not supported (use 1.2 or 1.3)")]
    UnsupportedVersion(String),
    /// Key or certificate generation failed.
    #[error("generating the TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("building the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// PEM text without a usable certificate or key.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input (a path or "generated certificate").
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A static certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A freshly generated self-signed certificate and the server configuration using it.
#[derive(Clone)]
pub struct GeneratedTls {
    /// The certificate in PEM, sent as `agent_verify_ca` in heartbeats.
    pub cert_pem: String,
    /// The PKCS#8 private key in PEM.
    pub key_pem: String,
    /// A server configuration accepting TLS 1.2 and 1.3.
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for GeneratedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("GeneratedTls")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl GeneratedTls {
    /// The same certificate served with minimum TLS version `min_version` (`1.2`/`1.3`),
    /// as learned from the lookup answer.
    pub fn server_config_min(&self, min_version: &str) -> Result<Arc<ServerConfig>, TlsError> {
        server_config_from_pem(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            min_version,
        )
    }
}

/// Generates IPA's auto-TLS certificate: EC key on `curve` (`p256`, `p384`),
/// `CN=<hostname>`, one critical IP SAN = `advertise_ip` and no other extension, random
/// serial, valid from now - `skew` to now + 30 days. The configuration accepts TLS 1.2
/// and 1.3; use [`GeneratedTls::server_config_min`] for 1.3 only.
///
/// The signature is ECDSA with the curve's own hash (SHA-256 / SHA-384): ring signs
/// nothing else, and the conductor checks only the chain and the IP SAN.
pub fn generate_self_signed(
    advertise_ip: IpAddr,
    hostname: &str,
    curve: &str,
    skew: Duration,
) -> Result<GeneratedTls, TlsError> {
    let algorithm = match curve.to_ascii_lowercase().as_str() {
        "p256" | "secp256r1" | "prime256v1" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "p384" | "secp384r1" => &rcgen::PKCS_ECDSA_P384_SHA384,
        _ => return Err(TlsError::UnsupportedCurve(curve.to_owned())),
    };
    let key = KeyPair::generate_for(algorithm)?;

    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hostname);
    params.distinguished_name = name;
    // rcgen marks its own SAN critical only for an empty subject; IPA's is critical next
    // to a CN, so the extension is written by hand.
    let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], ip_san_der(advertise_ip));
    san.set_criticality(true);
    params.custom_extensions = vec![san];
    let mut serial: [u8; 16] = rand::random();
    // Positive and of fixed length in DER.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - skew;
    params.not_after = now + VALIDITY;

    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    let server_config = server_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), "1.2")?;
    Ok(GeneratedTls {
        cert_pem,
        key_pem,
        server_config,
    })
}

/// A server configuration from the operator's static files (`tls_cert_file`,
/// `tls_key_file`); the certificate file may hold a chain.
pub fn static_server_config(
    cert_file: &Path,
    key_file: &Path,
    min_version: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = read_bounded(cert_file)?;
    let key = read_bounded(key_file)?;
    build(
        parse_certs(&cert, &cert_file.display().to_string())?,
        parse_key(&key, &key_file.display().to_string())?,
        min_version,
    )
}

/// A server configuration from PEM text.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    min_version: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    build(
        parse_certs(cert_pem, "certificate")?,
        parse_key(key_pem, "private key")?,
        min_version,
    )
}

/// Protocol versions for a minimum version string. IPA accepts older names too; rustls
/// has nothing below 1.2, so those mean 1.2.
fn versions(
    min_version: &str,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TlsError> {
    static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min_version.trim() {
        "1.3" => Ok(&TLS13_ONLY),
        "1.2" | "" => Ok(&TLS12_UP),
        "1.0" | "1.1" => {
            tracing::warn!(
                min_version,
                "TLS below 1.2 is not offered; serving TLS 1.2 and 1.3"
            );
            Ok(&TLS12_UP)
        }
        other => Err(TlsError::UnsupportedVersion(other.to_owned())),
    }
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min_version)?)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_owned(),
            detail: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read = || -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_PEM_FILE)
            .read_to_end(&mut data)?;
        Ok(data)
    };
    read().map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// DER of `SubjectAltName ::= SEQUENCE { [7] iPAddress OCTET STRING }`.
fn ip_san_der(ip: IpAddr) -> Vec<u8> {
    let octets = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    // Both lengths (4 or 16, and 6 or 18 with the tag) fit the short DER length form.
    let len = u8::try_from(octets.len()).expect("an IP address has at most 16 octets");
    let mut der = vec![0x30, len + 2, 0x87, len];
    der.extend_from_slice(&octets);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn certificate_has_critical_ip_san_and_nothing_else() {
        let ip: IpAddr = "192.0.2.17".parse().unwrap();
        let tls = generate_self_signed(ip, "ramdisk-1", "p384", Duration::from_secs(3600)).unwrap();
        let der = der_of(&tls.cert_pem);
        // extnID subjectAltName, critical TRUE, OCTET STRING { SEQUENCE { [7] 192.0.2.17 } }
        let san = [
            0x06, 0x03, 0x55, 0x1d, 0x11, 0x01, 0x01, 0xff, 0x04, 0x08, 0x30, 0x06, 0x87, 0x04,
            192, 0, 2, 17,
        ];
        assert!(contains(&der, &san), "critical IP SAN missing");
        // basicConstraints, keyUsage, SKI and AKI are absent.
        for oid in [
            [0x55, 0x1d, 0x13],
            [0x55, 0x1d, 0x0f],
            [0x55, 0x1d, 0x0e],
            [0x55, 0x1d, 0x23],
        ] {
            let mut tagged = vec![0x06, 0x03];
            tagged.extend_from_slice(&oid);
            assert!(!contains(&der, &tagged), "unexpected extension {oid:02x?}");
        }
        assert!(contains(&der, b"ramdisk-1"));
        // secp384r1 OID in the public key.
        assert!(contains(&der, &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]));
        assert!(tls.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn ipv6_and_p256_work() {
        let ip: IpAddr = "2001:db8::5".parse().unwrap();
        let tls = generate_self_signed(ip, "h", "p256", Duration::ZERO).unwrap();
        let der = der_of(&tls.cert_pem);
        let mut san = vec![0x30, 18, 0x87, 16];
        san.extend_from_slice(
            &"2001:db8::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert!(contains(&der, &san));
    }

    #[test]
    fn two_certificates_differ_in_serial_and_key() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = generate_self_signed(ip, "h", "p256", Duration::ZERO).unwrap();
        let b = generate_self_signed(ip, "h", "p256", Duration::ZERO).unwrap();
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_ne!(a.key_pem, b.key_pem);
    }

    #[test]
    fn p521_and_unknown_curves_are_refused_clearly() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for curve in ["p521", "ed25519"] {
            let err = generate_self_signed(ip, "h", curve, Duration::ZERO).unwrap_err();
            assert!(matches!(err, TlsError::UnsupportedCurve(_)));
            assert!(err.to_string().contains("p384"));
        }
    }

    #[test]
    fn min_version_selects_protocols() {
        assert_eq!(versions("1.3").unwrap().len(), 1);
        assert_eq!(versions("1.2").unwrap().len(), 2);
        assert!(matches!(
            versions("2.0"),
            Err(TlsError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn static_files_are_loaded_and_checked() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let tls = generate_self_signed(ip, "h", "p256", Duration::ZERO).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("agent.crt");
        let key = dir.path().join("agent.key");
        std::fs::write(&cert, &tls.cert_pem).unwrap();
        std::fs::write(&key, &tls.key_pem).unwrap();
        assert!(static_server_config(&cert, &key, "1.3").is_ok());
        // Swapped files: no certificate in the key file.
        assert!(matches!(
            static_server_config(&key, &cert, "1.2"),
            Err(TlsError::Pem { .. })
        ));
        assert!(matches!(
            static_server_config(&dir.path().join("missing"), &key, "1.2"),
            Err(TlsError::Read { .. })
        ));
    }
}
