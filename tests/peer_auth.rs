//! With TLS on, peers authenticate each other (`src/server/tls.rs`): a
//! connection that presents no identity, an identity from another
//! authority, or another node's identity gets not a single frame into the
//! node; a dialler that reaches the wrong node sends it nothing. Each case
//! is run against a real `PeerTransport` on loopback, with certificates
//! issued by `tls::issue` (what `raftkv certs` runs).

use raftkv::kv::Command;
use raftkv::raft::{Envelope, Message, NodeId};
use raftkv::server::node::Sending;
use raftkv::server::peer::{Deliver, PeerConfig, PeerTransport};
use raftkv::server::tempdir::TempDir;
use raftkv::server::tls::{self, NodeTls};
use raftkv::wire::{self, Limits};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Generous: only a broken transport gets near it.
const WAIT: Duration = Duration::from_secs(10);

type Inbox = mpsc::UnboundedReceiver<Envelope<Command>>;

fn heartbeat(from: NodeId, to: NodeId, term: u64) -> Envelope<Command> {
    Envelope { from, to, message: Message::Heartbeat { term, commit: 0, read_round: term } }
}

fn frames(envelopes: &[Envelope<Command>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in envelopes {
        wire::encode_into(e, &Limits::default(), &mut out).unwrap();
    }
    out
}

/// An address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Node `id` with TLS from `certs`, listening on `listen`.
async fn start(id: NodeId, listen: SocketAddr, peers: &[(NodeId, SocketAddr)], certs: &Path) -> (PeerTransport, Inbox) {
    let mut config = PeerConfig::new(id, listen, peers.iter().copied().collect());
    config.tls = Some(Arc::new(NodeTls::load(certs, id).unwrap()));
    let (tx, rx) = mpsc::unbounded_channel();
    let deliver: Deliver = Arc::new(move |envelope| drop(tx.send(envelope)));
    (PeerTransport::start(config, deliver).await.unwrap(), rx)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A TLS client trusting the authority in `trust`, presenting node `as_node`'s
/// certificate from `present`, or none.
fn connector(trust: &Path, present: Option<(&Path, NodeId)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(trust.join(tls::CA_CERT)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match present {
        Some((dir, id)) => {
            let chain = CertificateDer::pem_file_iter(dir.join(tls::node_cert_file(id)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(tls::node_key_file(id))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Reads until the other side closes: acks may come first, nothing else.
async fn assert_closed(stream: &mut (impl AsyncRead + Unpin)) {
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) if byte[0] == 0x06 => {}
            Ok(Ok(_)) => panic!("expected the connection to be closed, got {byte:?}"),
            Err(_) => panic!("the connection was not closed in time"),
        }
    }
}

#[tokio::test]
async fn tls_peers_exchange_messages_both_ways() {
    let certs = TempDir::new("peer-auth-ok").unwrap();
    tls::issue(certs.path(), 0..2, &[], tls::NODE_CERT_DAYS_DEFAULT).unwrap();
    let a_addr = free_addr();
    let (b, mut at_b) = start(1, "127.0.0.1:0".parse().unwrap(), &[(0, a_addr)], certs.path()).await;
    let (a, mut at_a) = start(0, a_addr, &[(1, b.local_addr())], certs.path()).await;
    // Asked for at once, as an idle node thread does: over TLS the writer
    // sends them anyway.
    for term in 1..=20 {
        a.sender().send(heartbeat(0, 1, term), Sending::AtOnce);
        b.sender().send(heartbeat(1, 0, 100 + term), Sending::AtOnce);
    }
    for term in 1..=20 {
        assert_eq!(tokio::time::timeout(WAIT, at_b.recv()).await.unwrap().unwrap(), heartbeat(0, 1, term));
        assert_eq!(tokio::time::timeout(WAIT, at_a.recv()).await.unwrap().unwrap(), heartbeat(1, 0, 100 + term));
    }
    // Acks flow back over TLS too (they keep the connections alive).
    wait_until("both sides saw an ack", || a.stats().acks_in > 0 && b.stats().acks_in > 0).await;
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.handshake_failures, sb.handshake_failures, sa.refused_frames, sb.refused_frames), (0, 0, 0, 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn forged_peers_cannot_get_a_single_frame_in() {
    let certs = TempDir::new("peer-auth-certs").unwrap();
    tls::issue(certs.path(), 0..3, &[], tls::NODE_CERT_DAYS_DEFAULT).unwrap();
    let other = TempDir::new("peer-auth-other").unwrap();
    tls::issue(other.path(), 0..3, &[], tls::NODE_CERT_DAYS_DEFAULT).unwrap();
    let (node, mut inbox) =
        start(0, "127.0.0.1:0".parse().unwrap(), &[(1, free_addr()), (2, free_addr())], certs.path()).await;
    let addr = node.local_addr();
    let claims_to_be_1 = frames(&[heartbeat(1, 0, 1), heartbeat(1, 0, 2)]);

    // Each forgery: how it connects (None: plain TCP).
    let forgeries: [(&str, Option<TlsConnector>); 4] = [
        ("plain text", None),
        ("TLS without a certificate", Some(connector(certs.path(), None))),
        ("node 1's certificate from another authority", Some(connector(certs.path(), Some((other.path(), 1))))),
        ("node 2's certificate, frames from node 1", Some(connector(certs.path(), Some((certs.path(), 2))))),
    ];
    for (i, (what, tls)) in forgeries.into_iter().enumerate() {
        let tcp = TcpStream::connect(addr).await.unwrap();
        match tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(&claims_to_be_1).await.unwrap();
                // All it gets back is a TLS alert record, then the end.
                let mut answer = Vec::new();
                tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
                assert_eq!(answer.first(), Some(&0x15), "{what}: {answer:?}");
            }
            Some(connector) => {
                let name = ServerName::try_from(tls::node_name(0)).unwrap();
                // TLS 1.3: the client may finish its side before the
                // server has judged its certificate; then the frames go
                // out and the server closes.
                if let Ok(mut stream) = connector.connect(name, tcp).await {
                    let _ = stream.write_all(&claims_to_be_1).await;
                    let _ = stream.flush().await;
                    assert_closed(&mut stream).await;
                }
            }
        }
        let refusals = |s: &raftkv::server::peer::PeerStats| s.handshake_failures + s.refused_frames;
        wait_until(what, || refusals(&node.stats()) == i as u64 + 1).await;
        assert_eq!(node.stats().frames_in, 0, "{what}: a frame got in");
        assert!(inbox.try_recv().is_err(), "{what}: a frame was delivered");
    }
    let stats = node.stats();
    assert_eq!((stats.handshake_failures, stats.refused_frames), (3, 1), "{stats:?}");

    // The same frames, from the node they claim: delivered. (So the
    // refusals above were about identity, not the frames.)
    let name = ServerName::try_from(tls::node_name(0)).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut genuine = connector(certs.path(), Some((certs.path(), 1))).connect(name, tcp).await.unwrap();
    genuine.write_all(&claims_to_be_1).await.unwrap();
    genuine.flush().await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, inbox.recv()).await.unwrap().unwrap(), heartbeat(1, 0, 1));
    node.shutdown().await;
}

#[tokio::test]
async fn a_dialler_sends_nothing_to_a_node_that_is_not_the_peer_it_meant() {
    let certs = TempDir::new("peer-auth-dial").unwrap();
    tls::issue(certs.path(), 0..3, &[], tls::NODE_CERT_DAYS_DEFAULT).unwrap();
    let a_addr = free_addr();
    // Node 2 listens where node 0 believes node 1 is.
    let (impostor, mut at_impostor) = start(2, "127.0.0.1:0".parse().unwrap(), &[(0, a_addr)], certs.path()).await;
    let (a, _at_a) = start(0, a_addr, &[(1, impostor.local_addr())], certs.path()).await;
    a.sender().send(heartbeat(0, 1, 1), Sending::AtOnce);
    wait_until("node 0 refused the impostor's certificate twice", || a.stats().handshake_failures >= 2).await;
    assert_eq!((a.stats().connections_out, a.stats().sent), (0, 0));
    assert_eq!(impostor.stats().frames_in, 0);
    assert!(at_impostor.try_recv().is_err());
    a.shutdown().await;
    impostor.shutdown().await;
}
