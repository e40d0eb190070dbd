//! Mutual TLS on the controller listener: every node presents its certificate, and a peer
//! whose certificate the trust store does not verify cannot vote, replicate, register or
//! fetch metadata — the handshake fails, and `authenticate_peer` refuses any request on a
//! connection without a verified certificate.
//!
//! The server accepts TCP connections in one task and runs each handshake in its own task
//! (bounded by [`HANDSHAKE_TIMEOUT`] and [`MAX_PENDING_HANDSHAKES`]), so a slow or silent
//! peer holds up neither the accept loop nor the others' handshakes; axum serves the
//! connections whose handshake completed ([`TlsPeerListener`], which the broker's admin HTTP
//! server uses too), each with the peer's verified certificate ([`PeerIdentity`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// The longest a TLS handshake may take on the controller listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the accept loop waits for one to end beyond this.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// The server configuration a [`TlsPeerListener`] uses for the next connection: a function,
/// so that its owner can follow renewed key and trust store files.
pub type ServerTls = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// The TLS of the controller listener, both sides, built by the server from its
/// `listener.name.<controller>.ssl.*` settings.
#[derive(Clone)]
pub struct QuorumTls {
    /// This node as a server: must require client certificates (mutual TLS).
    pub server: ServerTls,
    /// This node as a client of the others: presents this node's certificate.
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for QuorumTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuorumTls")
    }
}

/// Who is at the other end of a connection served by axum: its address and, over TLS, the
/// certificate it presented, which the trust store verified.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub addr: SocketAddr,
    pub certificate: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsPeerListener>> for PeerIdentity {
    fn connect_info(stream: IncomingStream<'_, TlsPeerListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TcpListener>> for PeerIdentity {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerIdentity {
            addr: *stream.remote_addr(),
            certificate: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, with each request's [`PeerIdentity`] as its
/// connect info: one server loop for a plaintext and a TLS listener alike.
pub async fn serve_identified<L>(
    listener: L,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
    PeerIdentity: for<'a> axum::extract::connect_info::Connected<IncomingStream<'a, L>>,
{
    let app = router.into_make_service_with_connect_info::<PeerIdentity>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The connections of a TLS listener whose handshake completed, for `axum::serve`.
pub struct TlsPeerListener {
    established: mpsc::Receiver<(TlsStream<TcpStream>, PeerIdentity)>,
    local: PeerIdentity,
}

impl TlsPeerListener {
    /// Starts accepting on `listener` until `stop` turns true; returns the listener for axum
    /// and the accept task.
    pub fn spawn(
        listener: TcpListener,
        config: ServerTls,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let local = PeerIdentity {
            addr: listener.local_addr()?,
            certificate: None,
        };
        let (tx, established) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    permit = pending.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = stopped(&mut stop) => return,
                };
                let (tcp, addr) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "TLS listener cannot accept");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = stopped(&mut stop) => return,
                };
                let (acceptor, tx) = (tokio_rustls::TlsAcceptor::from(config()), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tcp.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|leaf| leaf.clone().into_owned());
                            let peer = PeerIdentity { addr, certificate };
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok((TlsPeerListener { established, local }, task))
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

impl Listener for TlsPeerListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerIdentity;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(established) => established,
            // The accept task stopped: the server is shutting down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local.clone())
    }
}
