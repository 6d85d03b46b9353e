//! Serving the router over TLS (`serve --tls-cert --tls-key`): the accept loop `axum::serve`
//! runs for plain HTTP, with a rustls handshake first. Each connection gets its own task, whose
//! handshake is bounded by `handshake_timeout`, so a client that opens TCP and never speaks
//! holds nothing for long; a failed handshake is logged at debug and ends that connection only.
//! Requests carry `ConnectInfo<SocketAddr>` as on the plain path. HTTP/1.1 with upgrades, so
//! `/worker`'s WebSocket works as over plain TCP.
//!
//! Knows sockets and TLS, nothing of what the router serves.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::{debug, error};

use crate::tls::ServerTls;

/// Serves `app` over TLS on `listener` until `stopped` resolves, then lets each open HTTP
/// connection finish its request and waits for them (upgraded WebSockets are the driver's to
/// close, as on the plain path).
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: ServerTls,
    stopped: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => break,
            // Reap finished connection tasks so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin (as
                    // `axum::serve` does).
                    error!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            tls.handshake_timeout,
            app.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    // Small frames matter more than throughput here: an Assign or Activity must not wait for
    // Nagle's timer.
    let _ = tcp.set_nodelay(true);
    let stream = tokio::select! {
        handshake = tokio::time::timeout(handshake_timeout, handshake(tcp, &acceptor)) => {
            match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "no TLS handshake within {} ms: connection dropped",
                        handshake_timeout.as_millis());
                    return;
                }
            }
        }
        () = stopping(&mut stop) => return,
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        // A `Router` is always ready: calling it without `poll_ready` is what it documents.
        app.clone().call(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        debug!(%peer, "connection ended: {e}");
    }
}

/// The TLS handshake; a client that speaks plain HTTP here (an `http://` or `ws://` URL) gets
/// a plain `400` saying to use `https://` / `wss://`, instead of a connection that just ends.
async fn handshake(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    // A TLS connection starts with a handshake record (0x16); HTTP with a method's letter.
    if tcp.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        use tokio::io::AsyncWriteExt;
        let body = "this port serves TLS only: use https:// (operators) or wss:// (workers)\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut tcp = tcp;
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "plain HTTP on the TLS port (answered 400)",
        ));
    }
    acceptor.accept(tcp).await
}

/// Resolves once the accept loop says it is stopping (or is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The `Ref` it returns is not `Send`: dropped here, before any other await.
    let _ = stop.wait_for(|stopping| *stopping).await;
}
