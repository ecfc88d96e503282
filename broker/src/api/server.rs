//! The HTTP accept loop: at most [`MAX_CONNECTIONS`] connections (further ones wait in the
//! listen backlog), a deadline on reading request headers so a slow client cannot hold a
//! connection, and a graceful stop that lets requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's line and headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// The running HTTP server.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    closed: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Serves `router` on `listener` until [`ApiServer::shutdown`].
    pub fn spawn(listener: TcpListener, router: Router) -> std::io::Result<ApiServer> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let (closing, closed) = oneshot::channel();
        let task = tokio::spawn(serve(listener, router, stopped, closing));
        info!(http = %addr, "ops HTTP API listening");
        Ok(ApiServer {
            addr,
            stop,
            closed,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and returns once the port is free; requests in flight finish in
    /// the background (for up to 5 s).
    pub async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.closed.await;
    }

    /// Stops accepting, lets requests in flight finish (for up to 5 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            warn!("ops HTTP server task ended abnormally: {e}");
        }
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: oneshot::Receiver<()>,
    closed: oneshot::Sender<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, then go on.
                    warn!("ops HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, "ops HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closed.send(());
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => warn!("ops HTTP requests still running after {DRAIN:?}: closing them"),
    }
}
