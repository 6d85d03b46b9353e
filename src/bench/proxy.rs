//! A small userspace TCP proxy for link faults between a worker and the supervisor on 127.0.0.1
//! (this kernel has no netem and no iptables): delay, throttle, blackhole and reset, switched at
//! run time for every connection, current and new. Used by `bench chaos` and the tests.
//!
//! It owns only sockets on 127.0.0.1 and the tasks that pump them; it knows nothing of the
//! protocol it carries. It needs a tokio runtime (it spawns onto the current one).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to the bytes it carries, in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Hold each chunk this long (from when it was read) before forwarding; order is kept.
    Delay(Duration),
    /// At most this many bytes a second in each direction (a token bucket per direction).
    Throttle { bytes_per_s: u64 },
    /// Forward nothing and read nothing new, keeping the sockets open: a cut cable. What was
    /// read before the cut is forwarded when the mode changes back.
    Blackhole,
}

/// Bytes read at once from a socket.
const CHUNK: usize = 16 * 1024;
/// Chunks queued between the reader and the writer of one direction (backpressure beyond).
const QUEUE: usize = 64;

struct Shared {
    mode: watch::Sender<Mode>,
    /// Bumped by `reset_all`; each connection resets when it sees a newer value than its own.
    reset: watch::Sender<u64>,
    connections: AtomicUsize,
}

/// A proxy listening on 127.0.0.1:0 and forwarding to one upstream address. Dropping it stops
/// the listener and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards each connection to `upstream`. Must be called within
    /// a tokio runtime.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("the proxy needs a tokio runtime: {e}")))?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _guard = handle.enter();
            TcpListener::from_std(std_listener)?
        };
        let shared = Arc::new(Shared {
            mode: watch::Sender::new(Mode::Pass),
            reset: watch::Sender::new(0),
            connections: AtomicUsize::new(0),
        });
        let accept = handle.spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Proxy {
            addr,
            upstream,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Changes the mode of every connection, current and new.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Aborts every current connection with a TCP RST on both sides (SO_LINGER 0, then close).
    /// New connections are accepted as before.
    pub fn reset_all(&self) {
        self.shared.reset.send_modify(|g| *g += 1);
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // A last reset ends every connection.
        self.shared.reset.send_modify(|g| *g = u64::MAX);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!("proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut reset = shared.reset.subscribe();
            reset.borrow_and_update();
            let Ok(server) = TcpStream::connect(upstream).await else {
                // Upstream down: the client sees its connection close, as with a refused one.
                reset_socket(&client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            shared.connections.fetch_add(1, Ordering::SeqCst);
            connection(client, server, &shared, &mut reset).await;
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Pumps one connection until both directions end, or a reset.
async fn connection(
    mut client: TcpStream,
    mut server: TcpStream,
    shared: &Shared,
    reset: &mut watch::Receiver<u64>,
) {
    let aborted = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = direction(cr, sw, shared.mode.subscribe());
        let down = direction(sr, cw, shared.mode.subscribe());
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = reset.changed() => true,
        }
    };
    if aborted {
        reset_socket(&client);
        reset_socket(&server);
    }
}

/// Makes the coming close send a RST instead of a FIN.
fn reset_socket(s: &TcpStream) {
    // tokio deprecates SO_LINGER because a non-zero linger blocks the closing thread; a zero
    // linger never blocks (the kernel drops the buffers and sends a RST at once).
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// One direction: a reader that queues chunks with the time they arrived, and a writer that
/// forwards them as the current mode allows. Ends when the source ends or either side fails.
async fn direction<R, W>(mut from: R, mut to: W, mode: watch::Receiver<Mode>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let mut read_mode = mode.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // A cut cable: read nothing new (the sender's kernel buffers fill, as they would).
            if read_mode.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
                return;
            }
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut write_mode = mode;
    let writer = async move {
        let mut bucket = Bucket::new();
        while let Some((read_at, chunk)) = rx.recv().await {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let m = *write_mode.borrow_and_update();
                let n = match m {
                    Mode::Pass => rest.len(),
                    Mode::Blackhole => {
                        if write_mode.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Mode::Delay(d) => {
                        let due = read_at + d;
                        if Instant::now() < due {
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => {}
                                r = write_mode.changed() => if r.is_err() { return },
                            }
                            continue;
                        }
                        rest.len()
                    }
                    Mode::Throttle { bytes_per_s } => match bucket.take(bytes_per_s, rest.len()) {
                        Ok(n) => n,
                        Err(wait) => {
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                r = write_mode.changed() => if r.is_err() { return },
                            }
                            continue;
                        }
                    },
                };
                if to.write_all(&rest[..n]).await.is_err() {
                    return;
                }
                rest = &rest[n..];
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A token bucket holding at most a twentieth of a second's bytes, so that bursts stay small
/// and the rate holds over short windows too.
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: u64,
}

impl Bucket {
    fn new() -> Self {
        Self {
            tokens: 0.0,
            at: Instant::now(),
            rate: 0,
        }
    }

    /// Takes up to `want` bytes' tokens: how many may be sent now, or how long to wait for one.
    fn take(&mut self, rate: u64, want: usize) -> Result<usize, Duration> {
        let rate = rate.max(1);
        let now = Instant::now();
        if rate != self.rate {
            // A new rate starts from an empty bucket.
            self.rate = rate;
            self.tokens = 0.0;
            self.at = now;
        }
        let cap = (rate as f64 / 20.0).max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * rate as f64).min(cap);
        self.at = now;
        if self.tokens >= 1.0 {
            let n = (self.tokens.floor() as usize).min(want);
            self.tokens -= n as f64;
            Ok(n)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate as f64)
                .max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1:0.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A sink that reads and counts everything, reporting the total when the peer closes.
    async fn sink() -> (SocketAddr, tokio::sync::oneshot::Receiver<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = tx.send(total);
        });
        (addr, rx)
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let start = Instant::now();
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
        start.elapsed()
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let p = Proxy::start(echo().await).unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"hello").await;
        assert_eq!(p.connections(), 1);
    }

    #[tokio::test]
    async fn delay_holds_each_chunk_and_keeps_order() {
        let p = Proxy::start(echo().await).unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"warm").await;
        p.set_mode(Mode::Delay(Duration::from_millis(150)));
        // Through the proxy twice (there and back): at least twice the delay.
        let rtt = round_trip(&mut s, b"late").await;
        assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
        // Many small writes come back whole and in order.
        let msg: Vec<u8> = (0..200u8).collect();
        for c in msg.chunks(10) {
            s.write_all(c).await.unwrap();
        }
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
        p.set_mode(Mode::Pass);
        assert!(round_trip(&mut s, b"quick").await < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn throttle_holds_the_rate() {
        let (addr, total) = sink().await;
        let p = Proxy::start(addr).unwrap();
        let rate = 200_000u64;
        p.set_mode(Mode::Throttle { bytes_per_s: rate });
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        let bytes = 400_000usize;
        let start = Instant::now();
        s.write_all(&vec![7u8; bytes]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(total.await.unwrap(), bytes);
        let measured = bytes as f64 / start.elapsed().as_secs_f64();
        assert!(
            (measured - rate as f64).abs() <= rate as f64 * 0.2,
            "{measured:.0} B/s against {rate}"
        );
    }

    #[tokio::test]
    async fn blackhole_delivers_nothing_then_pass_resumes() {
        let p = Proxy::start(echo().await).unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"before").await;
        p.set_mode(Mode::Blackhole);
        s.write_all(b"during").await.unwrap();
        let mut buf = [0u8; 6];
        let r = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "something came through the blackhole");
        p.set_mode(Mode::Pass);
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"during");
        round_trip(&mut s, b"after").await;
    }

    #[tokio::test]
    async fn reset_all_aborts_current_connections_only() {
        let p = Proxy::start(echo().await).unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"hi").await;
        p.reset_all();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap();
        match r {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            Ok(n) => assert_eq!(n, 0, "expected a reset or EOF"),
        }
        // A new connection works.
        let mut s2 = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s2, b"again").await;
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(Proxy::start("127.0.0.1:9".parse().unwrap()).is_err());
    }
}
