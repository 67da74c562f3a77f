//! Moving a running guest to another platform: `sevctl launch --migrate-to ADDR` is the
//! source VMM ([`send`]), `sevctl receive --listen ADDR` the destination VMM ([`receive`]).
//! The two speak the stream of [`stream`] over a Unix or TCP socket; the firmware on each side
//! does SEND_* and RECEIVE_*, so neither VMM ever holds the guest's plaintext. A guest kept
//! with `--control` moves later, on `sevctl migrate` ([`control`]).

pub mod control;
pub mod receive;
pub mod send;
pub mod stream;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{input, CliError, Result};
use stream::StreamError;

/// How long either side waits for the other before it gives up, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the destination listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(String),
}

impl std::str::FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Addr, String> {
        if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(Addr::Unix(path.into()));
        }
        if let Some(hp) = s.strip_prefix("tcp:") {
            if hp
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Ok(Addr::Tcp(hp.to_string()));
            }
        }
        Err(format!("{s:?} is not unix:PATH or tcp:HOST:PORT"))
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

/// One connection, with both directions timed out.
pub enum Conn {
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

impl Conn {
    fn timed(self, timeout: Duration) -> io::Result<Conn> {
        match &self {
            Conn::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
            }
        }
        Ok(self)
    }

    /// A second handle on the same connection, for a writer thread.
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    /// Ends both directions, so a peer blocked on us wakes at once.
    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// Ends the reading direction only: a thread blocked reading wakes, and what this side
    /// still has to say (an ABORT) can go out.
    pub fn shutdown_read(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Read),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Read),
        };
    }

    /// Connects to `addr`, waiting at most `timeout` for the connection.
    pub fn connect(addr: &Addr, timeout: Duration) -> Result<Conn> {
        let failed = |e: io::Error| CliError::Migration(format!("cannot connect to {addr}: {e}"));
        let conn = match addr {
            Addr::Unix(path) => Conn::Unix(UnixStream::connect(path).map_err(failed)?),
            Addr::Tcp(hp) => {
                let mut last = None;
                let mut found = None;
                for sa in hp.to_socket_addrs().map_err(failed)? {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let none = || io::Error::new(io::ErrorKind::NotFound, "no address");
                Conn::Tcp(found.ok_or_else(|| failed(last.unwrap_or_else(none)))?)
            }
        };
        conn.timed(timeout).map_err(failed)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket; a Unix socket's file is removed when it is dropped.
pub enum Listener {
    /// On a Unix socket path.
    Unix(UnixListener, PathBuf),
    /// On TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Listens on `addr`. A Unix socket file nobody listens on any more (left by a killed
    /// receiver) is replaced; one in use, or any other file, is refused.
    pub fn bind(addr: &Addr) -> Result<Listener> {
        let failed = |e: io::Error| input(format!("cannot listen on {addr}: {e}"));
        match addr {
            Addr::Unix(path) => {
                remove_stale_socket(path).map_err(failed)?;
                let l = UnixListener::bind(path).map_err(failed)?;
                Ok(Listener::Unix(l, path.clone()))
            }
            Addr::Tcp(hp) => Ok(Listener::Tcp(TcpListener::bind(hp).map_err(failed)?)),
        }
    }

    /// Listens on the Unix socket `path` for this user alone: the socket is bound at a
    /// temporary name beside it, given mode 0600 and only then renamed into place, so under
    /// any umask nobody else ever finds it open to them.
    pub fn bind_private(path: &Path) -> Result<Listener> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: io::Error| input(format!("cannot listen on unix:{}: {e}", path.display()));
        remove_stale_socket(path).map_err(failed)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let l = UnixListener::bind(&tmp).map_err(failed)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(failed(e));
        }
        Ok(Listener::Unix(l, path.to_path_buf()))
    }

    /// Where it listens (a TCP port 0 resolved).
    pub fn local(&self) -> String {
        match self {
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp:{a}"),
                Err(_) => "tcp:?".into(),
            },
        }
    }

    /// The next connection, and who it is from.
    pub fn accept(&self, timeout: Duration) -> Result<(Conn, String)> {
        let failed = |e: io::Error| CliError::Migration(format!("accept: {e}"));
        let (conn, peer) = match self {
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().map_err(failed)?;
                (Conn::Unix(s), "a local process".to_string())
            }
            Listener::Tcp(l) => {
                let (s, a) = l.accept().map_err(failed)?;
                (Conn::Tcp(s), a.to_string())
            }
        };
        Ok((conn.timed(timeout).map_err(failed)?, peer))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process listens there",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// A stream error as the CLI reports it, with the timeout in seconds.
pub(crate) fn stream_error(e: StreamError, timeout: Duration) -> CliError {
    let e = match e {
        StreamError::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            StreamError::Timeout(timeout.as_secs())
        }
        e => e,
    };
    CliError::Migration(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Addr::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:4444".parse(),
            Ok(Addr::Tcp("127.0.0.1:4444".into()))
        );
        assert_eq!("tcp:[::1]:4444".parse(), Ok(Addr::Tcp("[::1]:4444".into())));
        for bad in [
            "unix:",
            "tcp:host",
            "tcp::1",
            "tcp:h:99999",
            "/run/x",
            "udp:h:1",
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad}");
        }
    }
}
