//! Listening on and connecting to a rank's endpoints (the job plan names them):
//! `tcp://host:port` (TCP, Nagle off: control messages are small and latency-bound) and
//! `ipc://path` (a Unix socket in the run directory).

use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

/// A connected byte stream of either kind.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub type Conn = Box<dyn Stream>;

enum Addr<'a> {
    Tcp(&'a str),
    Ipc(&'a str),
}

fn parse(endpoint: &str) -> io::Result<Addr<'_>> {
    if let Some(a) = endpoint.strip_prefix("tcp://") {
        Ok(Addr::Tcp(a))
    } else if let Some(p) = endpoint.strip_prefix("ipc://") {
        Ok(Addr::Ipc(p))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{endpoint}: brigade endpoints are tcp://host:port or ipc://path"),
        ))
    }
}

/// A bound endpoint; a Unix socket's file is removed when it is dropped.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub async fn bind(endpoint: &str) -> io::Result<Listener> {
        match parse(endpoint)? {
            Addr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            Addr::Ipc(p) => {
                // A socket file left by a crashed run would make bind fail.
                let _ = std::fs::remove_file(p);
                Ok(Listener::Unix(UnixListener::bind(p)?, PathBuf::from(p)))
            }
        }
    }

    /// The next connection and where it comes from (`tcp://ip:port` or `ipc://path`).
    pub async fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, from) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Box::new(s), format!("tcp://{from}")))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), format!("ipc://{}", path.display())))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects to `endpoint`, retrying until `within` has passed: the peer may start later than
/// this rank. The ZMTP handshake is the caller's.
pub async fn connect(endpoint: &str, within: Duration) -> io::Result<Conn> {
    let deadline = Instant::now() + within;
    let addr = parse(endpoint)?;
    loop {
        let attempt: io::Result<Conn> = match addr {
            Addr::Tcp(a) => match TcpStream::connect(a).await {
                Ok(s) => s.set_nodelay(true).map(|()| Box::new(s) as Conn),
                Err(e) => Err(e),
            },
            Addr::Ipc(p) => UnixStream::connect(p).await.map(|s| Box::new(s) as Conn),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
