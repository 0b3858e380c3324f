//! TLS on the peer and client ports (rustls, through `tokio-rustls`), and
//! the certificates it needs (`raftkv certs`, through `rcgen`).
//!
//! **Who is who.** One certificate authority per cluster signs one
//! certificate per node. A node's certificate names the node by the DNS
//! name [`node_name`] (`node-<id>.raftkv`), whatever its addresses, so a
//! node may move between machines without new certificates. On the peer
//! port both ends authenticate (mutual TLS):
//!
//! - the dialling node checks that the certificate it is shown chains to
//!   the cluster's authority and names the peer it meant to reach;
//! - the accepting node requires a client certificate chaining to the
//!   same authority, and takes the node id it names as the connection's
//!   identity ([`identify`]): the peer transport then refuses any frame
//!   whose `from` differs (`super::peer::Refused::NotCertified`).
//!
//! A plain-text connection, a certificate from another authority and a
//! certificate for another node are refused at the handshake, with a log
//! line that says which. On the client port TLS is server-only, like
//! Redis's: clients check the node's certificate (which also names
//! `localhost` and the addresses given to `raftkv certs`) and authenticate
//! with a password, if any.
//!
//! The files, in one directory (`[tls] dir` in `cluster.toml`): `ca.pem`
//! (the authority's certificate, which every node and client needs),
//! `ca.key` (its key, needed only to issue more certificates), and
//! `node-<id>.pem` / `node-<id>.key` for each node.

use crate::raft::NodeId;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The authority's certificate, in the certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// The authority's private key: only `raftkv certs` reads it.
pub const CA_KEY: &str = "ca.key";
/// Certificate files larger than this are refused before they are parsed
/// (a certificate is about 1 KiB; a chain of a few is well below).
pub const FILE_BYTES_MAX: u64 = 1 << 20;

/// The DNS name a node's certificate carries, and which its peers expect.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.raftkv")
}

/// Node `id`'s certificate file in the certificate directory.
pub fn node_cert_file(id: NodeId) -> String {
    format!("node-{id}.pem")
}

/// Node `id`'s private key file in the certificate directory.
pub fn node_key_file(id: NodeId) -> String {
    format!("node-{id}.key")
}

/// A connection on either port, with or without TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Writes what the stream takes *now*, without waiting: the count written,
/// or `WouldBlock`. What a TLS stream accepted but could not yet send stays
/// in its buffer and goes out with the next write. (`TcpStream::try_write`
/// for any stream.)
pub fn try_write(stream: &mut BoxStream, bytes: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let written = match Pin::new(&mut **stream).poll_write(&mut cx, bytes) {
        Poll::Ready(result) => result?,
        Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
    };
    match Pin::new(&mut **stream).poll_flush(&mut cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(written),
    }
}

/// Why the TLS files cannot be used. Every message names the file.
#[derive(Debug)]
pub enum TlsError {
    Read {
        path: PathBuf,
        source: io::Error,
    },
    /// The file holds no certificate, or no key, or one that does not parse.
    Parse {
        path: PathBuf,
        why: String,
    },
    /// rustls refused the combination (for instance, a key that does not
    /// match the certificate).
    Config {
        dir: PathBuf,
        source: rustls::Error,
    },
    /// Issuing certificates failed.
    Issue(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            TlsError::Parse { path, why } => write!(f, "{}: {why}", path.display()),
            TlsError::Config { dir, source } => write!(f, "the TLS files in {} do not fit: {source}", dir.display()),
            TlsError::Issue(why) => write!(f, "cannot issue certificates: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > FILE_BYTES_MAX {
        return Err(TlsError::Parse { path: path.to_owned(), why: format!("{len} bytes, above {FILE_BYTES_MAX}") });
    }
    std::fs::read(path).map_err(read)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bounded(path)?;
    let parse = |why: String| TlsError::Parse { path: path.to_owned(), why };
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| parse(e.to_string()))?;
    if certs.is_empty() {
        return Err(parse("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Parse { path: path.to_owned(), why: e.to_string() })
}

/// The one crypto provider every config here is built with: *ring*, chosen
/// at build time rather than whatever a dependency installs process-wide.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn config_error(dir: &Path) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |source| TlsError::Config { dir: dir.to_owned(), source }
}

/// The authority's certificates in `ca_file` as trust roots.
fn roots(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots.add(cert).map_err(|e| TlsError::Parse { path: ca_file.to_owned(), why: e.to_string() })?;
    }
    Ok(roots)
}

/// One node's TLS: how it accepts and dials peers, and how it accepts
/// clients.
pub struct NodeTls {
    pub id: NodeId,
    /// Peer port, inbound: requires a client certificate from the authority.
    peer_acceptor: TlsAcceptor,
    /// Peer port, outbound: presents this node's certificate.
    peer_connector: TlsConnector,
    /// Client port: this node's certificate, no client certificate asked.
    client_acceptor: TlsAcceptor,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").field("id", &self.id).finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads node `id`'s certificate and key and the authority's
    /// certificate from `dir`.
    pub fn load(dir: &Path, id: NodeId) -> Result<NodeTls, TlsError> {
        let chain = read_certs(&dir.join(node_cert_file(id)))?;
        let key = read_key(&dir.join(node_key_file(id)))?;
        let roots = Arc::new(roots(&dir.join(CA_CERT))?);
        let error = config_error(dir);

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config { dir: dir.to_owned(), source: rustls::Error::General(e.to_string()) })?;
        let peer_server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(&error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(&error)?;
        let peer_client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(&error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(&error)?;
        let client_server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(&error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(&error)?;
        Ok(NodeTls {
            id,
            peer_acceptor: TlsAcceptor::from(Arc::new(peer_server)),
            peer_connector: TlsConnector::from(Arc::new(peer_client)),
            client_acceptor: TlsAcceptor::from(Arc::new(client_server)),
        })
    }

    /// Dials side of a peer connection: the handshake, checking that the
    /// other end holds node `peer`'s certificate.
    pub async fn connect_peer(&self, peer: NodeId, tcp: TcpStream) -> io::Result<BoxStream> {
        let name = ServerName::try_from(node_name(peer)).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(self.peer_connector.connect(name, tcp).await?))
    }

    /// Accepting side of a peer connection: the handshake, then the node
    /// id its certificate names among `members`.
    pub async fn accept_peer(
        &self,
        tcp: TcpStream,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<(NodeId, BoxStream), String> {
        let stream = self.peer_acceptor.accept(tcp).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
        let certs = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let first = certs.first().ok_or_else(|| "the peer presented no certificate".to_string())?;
        let id = identify(first, members)?;
        Ok((id, Box::new(stream)))
    }

    /// Accepting side of a client connection.
    pub async fn accept_client(&self, tcp: TcpStream) -> io::Result<BoxStream> {
        Ok(Box::new(self.client_acceptor.accept(tcp).await?))
    }
}

/// The one node among `members` that `cert` names (its chain has already
/// been verified by the handshake). A certificate that names none is
/// refused, and so is one that names several: one certificate, one
/// identity.
pub fn identify(cert: &CertificateDer<'_>, members: impl IntoIterator<Item = NodeId>) -> Result<NodeId, String> {
    let parsed = ParsedCertificate::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut named = members.into_iter().filter(|&id| {
        let name = ServerName::try_from(node_name(id)).expect("node names are valid DNS names");
        rustls::client::verify_server_name(&parsed, &name).is_ok()
    });
    match (named.next(), named.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => Err("the certificate names no member of the cluster".into()),
        (Some(a), Some(b)) => Err(format!("the certificate names more than one node ({a}, {b}, ...)")),
    }
}

/// A client's TLS: trusts the authority in `ca_file`, presents nothing.
pub fn client_connector(ca_file: &Path) -> Result<TlsConnector, TlsError> {
    let dir = ca_file.parent().unwrap_or(Path::new("."));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error(dir))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------
// Issuing: `raftkv certs`

/// Names every node certificate carries besides [`node_name`], so that
/// clients on this machine can check a node they reach by `localhost` or a
/// loopback address.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long a new node certificate is valid, by default: a year, so that an
/// abandoned key stops working, and a cluster's operator renews them
/// (`raftkv certs` again, then a restart of each node: certificates are
/// read at start) on a yearly schedule.
pub const NODE_CERT_DAYS_DEFAULT: u32 = 365;

/// How long a new authority is valid: ten years (replacing it means
/// reissuing every certificate at once).
pub const CA_DAYS: u32 = 3650;

/// Certificates are valid from an hour before they are issued, so that a
/// peer whose clock is a little behind accepts them at once.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Writes an authority (unless `dir` already holds one, which is then
/// reused, so nodes can be added later) and a certificate and key for each
/// of `nodes`, naming [`node_name`], [`LOCAL_NAMES`] and `hosts` (DNS
/// names or IP addresses), valid for `days` from now. Keys are written
/// readable by the owner only. Returns the files written.
pub fn issue(
    dir: &Path,
    nodes: impl IntoIterator<Item = NodeId>,
    hosts: &[String],
    days: u32,
) -> Result<Vec<PathBuf>, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let issue_error = |e: rcgen::Error| TlsError::Issue(e.to_string());
    let now = time::OffsetDateTime::now_utc();
    let valid_for = |params: &mut CertificateParams, days: u32| {
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(i64::from(days));
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read { path: dir.to_owned(), source })?;
    let mut written = Vec::new();

    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let issuer = if ca_cert.exists() && ca_key.exists() {
        let key_pem = String::from_utf8(read_bounded(&ca_key)?)
            .map_err(|e| TlsError::Parse { path: ca_key.clone(), why: e.to_string() })?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Parse { path: ca_key.clone(), why: e.to_string() })?;
        let cert_pem = String::from_utf8(read_bounded(&ca_cert)?)
            .map_err(|e| TlsError::Parse { path: ca_cert.clone(), why: e.to_string() })?;
        Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| TlsError::Parse { path: ca_cert.clone(), why: e.to_string() })?
    } else {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "raftkv cluster authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for(&mut params, CA_DAYS);
        let cert = params.self_signed(&key).map_err(issue_error)?;
        write_file(&ca_cert, cert.pem().as_bytes(), false, &mut written)?;
        write_file(&ca_key, key.serialize_pem().as_bytes(), true, &mut written)?;
        Issuer::new(params, key)
    };

    for id in nodes {
        let names: Vec<String> =
            [node_name(id)].into_iter().chain(LOCAL_NAMES.map(String::from)).chain(hosts.iter().cloned()).collect();
        let mut params = CertificateParams::new(names).map_err(issue_error)?;
        params.distinguished_name.push(DnType::CommonName, node_name(id));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is a server (accepting) and a client (dialling).
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        valid_for(&mut params, days);
        let key = KeyPair::generate().map_err(issue_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(issue_error)?;
        write_file(&dir.join(node_cert_file(id)), cert.pem().as_bytes(), false, &mut written)?;
        write_file(&dir.join(node_key_file(id)), key.serialize_pem().as_bytes(), true, &mut written)?;
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool, written: &mut Vec<PathBuf>) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| TlsError::Read { path: path.to_owned(), source };
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    written.push(path.to_owned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tempdir::TempDir;

    #[test]
    fn issued_certificates_load_and_name_exactly_their_node() {
        let dir = TempDir::new("tls-issue").unwrap();
        let written = issue(dir.path(), 0..3, &["10.1.2.3".into(), "db.example".into()], 30).unwrap();
        assert_eq!(written.len(), 2 + 3 * 2);
        for id in 0..3 {
            NodeTls::load(dir.path(), id).unwrap();
            let cert = read_certs(&dir.path().join(node_cert_file(id))).unwrap().remove(0);
            assert_eq!(identify(&cert, 0..5).unwrap(), id);
            assert!(identify(&cert, (0..5).filter(|&m| m != id)).is_err(), "names no other member");
        }
        // Valid for the days asked, from an hour ago; the authority for ten
        // years.
        let validity = |file: &str| {
            let pem = std::fs::read(dir.path().join(file)).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            let cert = pem.parse_x509().unwrap();
            let validity = cert.validity();
            (validity.not_before.timestamp(), validity.not_after.timestamp())
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (from, until) = validity(&node_cert_file(0));
        assert!((now - 3_700..=now - 3_500).contains(&from), "{from} vs {now}");
        assert!((now + 30 * 86_400 - 100..=now + 30 * 86_400).contains(&until), "{until} vs {now}");
        let (_, ca_until) = validity(CA_CERT);
        assert!(ca_until >= now + i64::from(CA_DAYS - 1) * 86_400);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(node_key_file(1))).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private");
    }

    #[test]
    fn a_second_run_reuses_the_authority() {
        let dir = TempDir::new("tls-reissue").unwrap();
        issue(dir.path(), 0..1, &[], NODE_CERT_DAYS_DEFAULT).unwrap();
        let ca = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let written = issue(dir.path(), 3..4, &[], NODE_CERT_DAYS_DEFAULT).unwrap();
        assert_eq!(written.len(), 2, "only the new node's files");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca);
        NodeTls::load(dir.path(), 3).unwrap();
    }

    #[test]
    fn missing_or_garbage_files_are_named_in_the_error() {
        let dir = TempDir::new("tls-bad").unwrap();
        let error = NodeTls::load(dir.path(), 0).unwrap_err().to_string();
        assert!(error.contains("node-0.pem"), "{error}");
        issue(dir.path(), 0..2, &[], NODE_CERT_DAYS_DEFAULT).unwrap();
        std::fs::write(dir.path().join(node_key_file(0)), b"not a key").unwrap();
        let error = NodeTls::load(dir.path(), 0).unwrap_err().to_string();
        assert!(error.contains("node-0.key"), "{error}");
        // Node 1's key with node 0's certificate.
        std::fs::copy(dir.path().join(node_key_file(1)), dir.path().join(node_key_file(0))).unwrap();
        let error = NodeTls::load(dir.path(), 0).unwrap_err().to_string();
        assert!(error.contains("do not fit"), "{error}");
        std::fs::write(dir.path().join(CA_CERT), vec![b'x'; FILE_BYTES_MAX as usize + 1]).unwrap();
        let error = NodeTls::load(dir.path(), 1).unwrap_err().to_string();
        assert!(error.contains("ca.pem") && error.contains("above"), "{error}");
    }
}
