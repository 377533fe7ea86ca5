//! A real Redis server for tests: Debian's `redis-server` on a free loopback port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`RedisServer::start`] waits for the server to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
const FIX: &str = "install Debian's redis-server package (scripts/setup does: apt-get install redis-server)";

/// Why the test Redis server did not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// `redis-server` could not be run.
    #[error("cannot run redis-server: {source}; {FIX}")]
    Spawn {
        /// Why it could not be spawned.
        source: std::io::Error,
    },
    /// Preparing its directory or port failed.
    #[error("cannot prepare the test Redis server ({what}): {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server exited or did not answer in time.
    #[error("Redis on 127.0.0.1:{port} did not come up: {reason}. Last lines of {log}:\n{tail}")]
    NotUp {
        /// Its port.
        port: u16,
        /// What happened.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
}

/// A Redis server with its own directory (append-only file on, so a restart keeps the data),
/// killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> Result<RedisServer, RedisServerError> {
        let dir = tempfile::tempdir().map_err(|source| setup("create a temp dir", source))?;
        let port = free_port()?;
        let mut server = RedisServer { dir, port, child: None };
        server.launch()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would; the append-only file keeps what it acknowledged).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.stop();
        self.launch()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn launch(&mut self) -> Result<(), RedisServerError> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| RedisServerError::Spawn { source })?;
        self.child = Some(child);
        self.wait_up()
    }

    fn wait_up(&mut self) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.not_up(format!("it exited ({status})")));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(self.not_up(format!("no answer to PING within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_up(&self, reason: String) -> RedisServerError {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        RedisServerError::NotUp { port: self.port, reason, log: self.log(), tail }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn setup(what: &str, source: std::io::Error) -> RedisServerError {
    RedisServerError::Setup { what: what.to_owned(), source }
}

fn free_port() -> Result<u16, RedisServerError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| setup("bind a loopback port", source))?;
    Ok(listener.local_addr().map_err(|source| setup("read the bound port", source))?.port())
}

/// Whether a server on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
