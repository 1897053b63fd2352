//! TLS settings of the agent's outgoing connections: to Ironic (spec 5.2), and to image
//! and configdrive servers.
//!
//! The rustls configuration is built here with the ring provider named explicitly, so
//! the binary never depends on a process-wide default provider. Roots come from
//! `cafile` when set, else from the system bundle. `insecure` swaps in a verifier that
//! accepts any certificate (IPA's `ipa-insecure`, for labs with self-signed APIs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where distributions keep the system CA bundle; the first that exists is used.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A TLS configuration that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file given by the operator is unreadable or has no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `tls_min_version` is neither `1.2` nor `1.3`.
    #[error("unsupported TLS minimum version {0:?} (expected 1.2 or 1.3)")]
    Version(String),
    /// rustls refused the protocol settings.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a client configuration (Ironic requests, downloads) with the system roots.
pub fn client_config(
    insecure: bool,
    cafile: Option<&Path>,
    min_version: &str,
) -> Result<ClientConfig, TlsError> {
    client_config_with(insecure, cafile, min_version, true)
}

/// As [`client_config`]; without `system_roots` (no https URL configured) the system
/// bundle is not parsed at all, which keeps a few milliseconds off every start.
pub fn client_config_with(
    insecure: bool,
    cafile: Option<&Path>,
    min_version: &str,
    system_roots: bool,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version.trim() {
        "1.2" | "" => &[&rustls::version::TLS12, &rustls::version::TLS13],
        "1.3" => &[&rustls::version::TLS13],
        other => return Err(TlsError::Version(other.to_owned())),
    };
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(load_roots(cafile, system_roots)?)
            .with_no_client_auth()
    };
    Ok(config)
}

/// Roots from `cafile`, or from the first system bundle found (empty, with a warning,
/// when there is none: plain-HTTP APIs still work).
fn load_roots(cafile: Option<&Path>, system_roots: bool) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = cafile {
        let bad = |reason: String| TlsError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no usable certificate".into()));
        }
        return Ok(roots);
    }
    if !system_roots {
        return Ok(roots);
    }
    Ok(SYSTEM_ROOTS.get_or_init(load_system_roots).clone())
}

/// The system bundle, parsed once per process (clients are rebuilt after lookup).
static SYSTEM_ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();

fn load_system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for bundle in SYSTEM_BUNDLES {
        let Ok(iter) = CertificateDer::pem_file_iter(bundle) else {
            continue;
        };
        // A bundle with one damaged entry still provides the others.
        let (added, ignored) = roots.add_parsable_certificates(iter.filter_map(Result::ok));
        tracing::debug!(bundle, added, ignored, "loaded system CA bundle");
        return roots;
    }
    tracing::warn!("no system CA bundle found; HTTPS to Ironic will fail verification");
    roots
}

/// Accepts any server certificate (`insecure`): the connection is encrypted but the
/// peer is not authenticated. Handshake signatures are still checked, so the peer must
/// at least hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked() {
        assert!(client_config(true, None, "1.3").is_ok());
        assert!(client_config(true, None, "1.2").is_ok());
        assert!(matches!(
            client_config(true, None, "1.1"),
            Err(TlsError::Version(_))
        ));
    }

    #[test]
    fn cafile_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem").unwrap();
        assert!(matches!(
            client_config(false, Some(&empty), "1.2"),
            Err(TlsError::CaFile { .. })
        ));
        let missing = dir.path().join("missing.pem");
        assert!(client_config(false, Some(&missing), "1.2").is_err());
        let good = dir.path().join("ca.pem");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert!(client_config(false, Some(&good), "1.3").is_ok());
        // The system bundle (or its absence) never fails the build.
        assert!(client_config(false, None, "1.2").is_ok());
    }
}
