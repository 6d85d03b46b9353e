//! TLS material for both ends, on rustls with ring as the one crypto provider:
//!
//! - the supervisor's certificate chain and private key (PEM files) become a
//!   [`rustls::ServerConfig`] ([`ServerTls::from_files`]);
//! - a client's trust (the public webpki roots, plus a private CA from a `--ca-file`) becomes a
//!   [`rustls::ClientConfig`] ([`ClientTls::new`]), shared by the worker's WebSocket, its bulk
//!   transfers and the operator's HTTP client;
//! - a certificate failure deep in a connection error becomes one sentence that says what to do
//!   ([`describe_failure`]).
//!
//! Nothing here opens a socket; the accept loop is `supervisor::tls`.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, RootCertStore};

/// How long a TLS handshake may take before the supervisor drops the connection: a client that
/// opens TCP and never speaks must not hold a task forever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate or key file this process could not use; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS {what} file {} holds no {expected}", path.display())]
    Missing {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the TLS {what} file {} is not valid PEM: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the CA file {} holds a certificate that cannot be a trusted root: {source}", path.display())]
    BadRoot {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the TLS certificate {} and key {} do not make a server identity: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring this process's default rustls provider, for any TLS set up without ours (a
/// dependency's own client). Each binary calls it first; a second call changes nothing.
pub fn install_process_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A file's bytes, with the file named in the error. Certificates and keys are a few KiB; the
/// cap keeps `--tls-cert /dev/zero` from eating memory.
fn read_pem_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    const MAX_PEM_BYTES: u64 = 1 << 20;
    let read = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    crate::job::read_capped(path, MAX_PEM_BYTES)
        .map_err(read)?
        .ok_or_else(|| {
            read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {} KiB", MAX_PEM_BYTES >> 10),
            ))
        })
}

fn pem_error(what: &'static str, path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Every certificate in a PEM file, in order (a chain: the server's first).
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what,
            path: path.to_owned(),
            expected: "certificate (a PEM \"BEGIN CERTIFICATE\" block)",
        });
    }
    Ok(certs)
}

/// The files `serve --tls-cert --tls-key` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// What the supervisor serves TLS with.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// A connection whose handshake has not finished by then is dropped.
    pub handshake_timeout: Duration,
}

impl ServerTls {
    /// Reads the certificate chain and key; any file trouble is an error naming the file.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        let certs = read_certificates("certificate", &files.cert)?;
        let key_bytes = read_pem_file("key", &files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::Missing {
                what: "key",
                path: files.key.clone(),
                expected: "private key (a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
            },
            other => pem_error("key", &files.key, other),
        })?;
        let identity = |source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(identity)?;
        // The router speaks HTTP/1.1 only (the WebSocket upgrade is an HTTP/1.1 affair).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }
}

/// What a client trusts: the public webpki roots, plus the certificates of `ca_file` (a private
/// CA). Cheap to clone; one is built per client and shared by its connections.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub ca_file: Option<PathBuf>,
}

impl ClientTls {
    pub fn new(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            for cert in read_certificates("CA", path)? {
                roots.add(cert).map_err(|source| TlsError::BadRoot {
                    path: path.to_owned(),
                    source,
                })?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            ca_file: ca_file.map(Path::to_owned),
        })
    }

    /// An HTTP client trusting what this does, with `timeout` per request.
    pub fn http_client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured((*self.config).clone())
            .build()
    }
}

/// The rustls error somewhere in `err`'s chain: directly, inside an `io::Error` (which hides its
/// payload from `source()`), or inside tungstenite's TLS error.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| find_rustls_error(inner))
        {
            return Some(inner);
        }
        if let Some(tokio_tungstenite::tungstenite::Error::Tls(
            tokio_tungstenite::tungstenite::error::TlsError::Rustls(found),
        )) = e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// One sentence for a TLS failure in `err` (the connection to `host`), or `None` when `err` is
/// not about TLS. A certificate this client does not trust says to pass `--ca-file`.
pub fn describe_failure(err: &(dyn StdError + 'static), host: &str) -> Option<String> {
    let e = find_rustls_error(err)?;
    let cert = |what: &str| format!("TLS: certificate of {host} {what}");
    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                cert("is not trusted (unknown issuer); pass --ca-file with the CA that signed it")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                cert("does not name that host (connect by a name the certificate lists)")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                cert("has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                cert("is not valid yet (check this machine's clock)")
            }
            CertificateError::BadSignature => {
                cert("is not signed by the CA it names; pass --ca-file with the CA that signed it")
            }
            other => cert(&format!("is not acceptable ({other:?})")),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS: {host} does not speak TLS here (a plain ws:// or http:// server?): {e}")
        }
        other => format!("TLS: handshake with {host} failed: {other}"),
    })
}

/// The host part of `url` (`wss://h:p/...` → `h`), for messages.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn error_of(files: &TlsFiles) -> String {
        ServerTls::from_files(files).unwrap_err().to_string()
    }

    #[test]
    fn a_certificate_and_key_from_pem_files_make_a_server_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", cert.as_bytes()),
            key: write(dir.path(), "key.pem", key.as_bytes()),
        };
        let tls = ServerTls::from_files(&files).unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(tls.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    }

    #[test]
    fn unusable_certificate_or_key_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let good_cert = write(dir.path(), "cert.pem", cert.as_bytes());
        let good_key = write(dir.path(), "key.pem", key.as_bytes());
        let garbage = write(
            dir.path(),
            "garbage.pem",
            b"\x00\xffnot a pem file at all\n",
        );
        let missing = dir.path().join("missing.pem");

        let e = error_of(&TlsFiles {
            cert: missing.clone(),
            key: good_key.clone(),
        });
        assert!(
            e.contains("cannot read the TLS certificate file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = error_of(&TlsFiles {
            cert: good_cert.clone(),
            key: missing,
        });
        assert!(
            e.contains("cannot read the TLS key file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = error_of(&TlsFiles {
            cert: garbage.clone(),
            key: good_key.clone(),
        });
        assert!(
            e.contains("certificate file") && e.contains("garbage.pem") && e.contains("holds no"),
            "{e}"
        );
        let e = error_of(&TlsFiles {
            cert: good_cert.clone(),
            key: garbage,
        });
        assert!(
            e.contains("key file") && e.contains("garbage.pem") && e.contains("private key"),
            "{e}"
        );
        // The key where the certificate should be, and the other way round.
        let e = error_of(&TlsFiles {
            cert: good_key.clone(),
            key: good_cert.clone(),
        });
        assert!(
            e.contains("key.pem") && e.contains("holds no certificate"),
            "{e}"
        );
        // A truncated PEM block.
        let cut = write(dir.path(), "cut.pem", &cert.as_bytes()[..cert.len() / 2]);
        let e = error_of(&TlsFiles {
            cert: cut,
            key: good_key.clone(),
        });
        assert!(e.contains("cut.pem") && e.contains("not valid PEM"), "{e}");
        // A key that is not the certificate's.
        let (_, other_key) = self_signed();
        let e = error_of(&TlsFiles {
            cert: good_cert,
            key: write(dir.path(), "other-key.pem", other_key.as_bytes()),
        });
        assert!(
            e.contains("cert.pem") && e.contains("other-key.pem") && e.contains("identity"),
            "{e}"
        );
        // A directory is not a file.
        let e = error_of(&TlsFiles {
            cert: dir.path().to_owned(),
            key: good_key,
        });
        assert!(e.contains("cannot read the TLS certificate file"), "{e}");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let ca = write(dir.path(), "ca.pem", cert.as_bytes());
        assert_eq!(
            ClientTls::new(Some(&ca)).unwrap().ca_file.as_deref(),
            Some(ca.as_path())
        );
        let not_ca = write(dir.path(), "key.pem", key.as_bytes());
        let e = ClientTls::new(Some(&not_ca)).unwrap_err().to_string();
        assert!(e.contains("CA file") && e.contains("key.pem"), "{e}");
        let e = ClientTls::new(Some(&dir.path().join("nope.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn certificate_failures_are_told_in_words_that_say_what_to_do() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let ws = tokio_tungstenite::tungstenite::Error::Io(io);
        assert_eq!(
            describe_failure(&ws, "127.0.0.1").as_deref(),
            Some(
                "TLS: certificate of 127.0.0.1 is not trusted (unknown issuer); pass --ca-file \
                 with the CA that signed it"
            )
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(describe_failure(&plain, "h"), None);
        assert_eq!(url_host("wss://127.0.0.1:7400/worker"), "127.0.0.1");
        assert_eq!(url_host("https://grid.example"), "grid.example");
        assert_eq!(url_host("wss://[::1]:7400/worker"), "::1");
    }
}
