//! A real ZooKeeper server for tests: Debian's `zookeeper` package run on a free loopback port.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The classpath used by [`ZooKeeperServer::start`]: Debian's ZooKeeper jar (whose manifest lists its
/// dependencies) and an SLF4J binding so the server's log is not empty.
pub const DEBIAN_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";
/// How long [`ZooKeeperServer::start`] waits for the server to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const FIX: &str = "install Java and Debian's zookeeper package: apt-get install zookeeper";

/// Why the test ZooKeeper server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ZooKeeperServerError {
    /// `java` could not be run.
    #[error("cannot run {java:?} to start ZooKeeper: {source}; {FIX}")]
    Java {
        /// The java command.
        java: String,
        /// Why it could not be spawned.
        source: std::io::Error,
    },
    /// A jar of the classpath is missing.
    #[error("ZooKeeper jar {jar} is missing; {FIX}")]
    Jar {
        /// The missing file.
        jar: PathBuf,
    },
    /// Preparing the server's directory or port failed.
    #[error("cannot prepare the test ZooKeeper server ({what}): {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server exited or did not answer in time.
    #[error("ZooKeeper on 127.0.0.1:{port} did not come up: {reason}; {FIX}. Last lines of {log}:\n{tail}")]
    NotUp {
        /// Its port.
        port: u16,
        /// What happened.
        reason: String,
        /// The server's log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
}

/// A standalone ZooKeeper server with its own data directory, killed on drop.
#[derive(Debug)]
pub struct ZooKeeperServer {
    dir: tempfile::TempDir,
    port: u16,
    java: String,
    classpath: String,
    /// The address it listens on.
    bind: Ipv4Addr,
    child: Option<Child>,
}

impl ZooKeeperServer {
    /// Starts a server with `java` from `PATH` and [`DEBIAN_CLASSPATH`], and waits until it answers.
    pub fn start() -> Result<ZooKeeperServer, ZooKeeperServerError> {
        Self::start_with("java", DEBIAN_CLASSPATH)
    }

    /// Starts a server listening on `bind` (such as `0.0.0.0`, for clients in another network
    /// namespace) rather than on loopback only; [`ZooKeeperServer::connect_string`] stays on
    /// loopback.
    pub fn start_on(bind: Ipv4Addr) -> Result<ZooKeeperServer, ZooKeeperServerError> {
        Self::start_full("java", DEBIAN_CLASSPATH, bind)
    }

    /// Starts a server with the given java command and classpath.
    pub fn start_with(java: &str, classpath: &str) -> Result<ZooKeeperServer, ZooKeeperServerError> {
        Self::start_full(java, classpath, Ipv4Addr::LOCALHOST)
    }

    fn start_full(java: &str, classpath: &str, bind: Ipv4Addr) -> Result<ZooKeeperServer, ZooKeeperServerError> {
        for jar in classpath.split(':').filter(|entry| !entry.is_empty() && !entry.ends_with('*')) {
            if !Path::new(jar).exists() {
                return Err(ZooKeeperServerError::Jar { jar: jar.into() });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("squall-zookeeper-")
            .tempdir()
            .map_err(|source| ZooKeeperServerError::Setup { what: "create a temporary directory".into(), source })?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|source| setup(format!("create {}", data.display()), source))?;
        let mut server =
            ZooKeeperServer { dir, port: 0, java: java.to_owned(), classpath: classpath.to_owned(), bind, child: None };
        // The free port may be taken between our probe and the server's bind: try a few.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            server.write_config()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e @ ZooKeeperServerError::NotUp { .. }) if e.to_string().contains("Address already in use") => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| setup("find a free port".into(), std::io::ErrorKind::AddrInUse.into())))
    }

    /// The client connect string, `127.0.0.1:<port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// The server's last transaction id (`srvr`'s `Zxid`): it grows by one with every write
    /// (create, set, delete, session open and close), so its growth over a time is the write
    /// rate. `None` if the server does not answer.
    pub fn last_zxid(&self) -> Option<u64> {
        let reply = srvr(self.port)?;
        let zxid = reply.lines().find_map(|l| l.strip_prefix("Zxid: 0x"))?;
        u64::from_str_radix(zxid.trim(), 16).ok()
    }

    /// Kills the server, keeping its data directory and port for [`ZooKeeperServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), ZooKeeperServerError> {
        self.stop();
        self.launch()
    }

    fn write_config(&self) -> Result<(), ZooKeeperServerError> {
        let mut config = String::new();
        let data = self.dir.path().join("data");
        let _ = writeln!(config, "tickTime=500");
        let _ = writeln!(config, "minSessionTimeout=1000");
        let _ = writeln!(config, "dataDir={}", data.display());
        let _ = writeln!(config, "clientPort={}", self.port);
        let _ = writeln!(config, "clientPortAddress={}", self.bind);
        let _ = writeln!(config, "admin.enableServer=false");
        let _ = writeln!(config, "4lw.commands.whitelist=srvr,ruok");
        let path = self.dir.path().join("zoo.cfg");
        std::fs::write(&path, config).map_err(|source| setup(format!("write {}", path.display()), source))
    }

    fn launch(&mut self) -> Result<(), ZooKeeperServerError> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| setup(format!("open {}", log_path.display()), source))?;
        let stderr = log.try_clone().map_err(|source| setup(format!("open {}", log_path.display()), source))?;
        let child = Command::new(&self.java)
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", &self.classpath])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ZooKeeperServerError::Java { java: self.java.clone(), source })?;
        self.child = Some(child);
        let result = self.wait_up();
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn wait_up(&mut self) -> Result<(), ZooKeeperServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.not_up(format!("the java process exited with {status}")));
            }
            if serving(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_up(format!("it did not answer `srvr` within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_up(&self, reason: String) -> ZooKeeperServerError {
        let log = self.log_path();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        ZooKeeperServerError::NotUp { port: self.port, reason, log, tail }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn setup(what: String, source: std::io::Error) -> ZooKeeperServerError {
    ZooKeeperServerError::Setup { what, source }
}

fn free_port() -> Result<u16, ZooKeeperServerError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| setup("bind a loopback port".into(), source))?;
    let port = listener.local_addr().map_err(|source| setup("read the bound port".into(), source))?.port();
    Ok(port)
}

/// Whether the server answers the `srvr` four-letter word as a serving server.
fn serving(port: u16) -> bool {
    srvr(port).is_some_and(|reply| reply.contains("Mode: "))
}

/// The server's answer to the `srvr` four-letter word.
fn srvr(port: u16) -> Option<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream.write_all(b"srvr").ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    Some(reply)
}

/// Ends `state`'s current ZooKeeper session from outside, as a session expiry would, and waits
/// until `state` has opened its next one.
///
/// A second client attaches to the same session and closes it. `state`'s own client reconnects
/// to the session at the same time, and each connection closes the other on the server, so the
/// attach may fail: then we try again.
pub async fn expire_session(state: &crate::ClusterState) -> Result<(), crate::ClusterError> {
    let servers = state.servers().to_owned();
    let before = state.session_epoch();
    let mut sessions = state.shared().current.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = zookeeper_client::Error::Timeout;
    while tokio::time::Instant::now() < deadline {
        let client = state.client().await?;
        if state.session_epoch() != before {
            return Ok(());
        }
        let connect = zookeeper_client::Client::connector()
            .with_session(client.session().clone())
            .with_session_timeout(client.session_timeout())
            .connect(&servers);
        drop(client);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            // Dropping the last handle of the intruding client closes the session on the server.
            Ok(Ok(intruder)) => drop(intruder),
            Ok(Err(e)) => {
                last = e;
                continue;
            }
            Err(_) => {
                last = zookeeper_client::Error::Timeout;
                continue;
            }
        }
        let replaced = sessions.wait_for(|c| c.closed || c.epoch != before);
        if let Ok(Ok(_)) = tokio::time::timeout(state.session_timeout() * 2, replaced).await {
            return Ok(());
        }
    }
    Err(crate::ClusterError::Connect { servers, waited: Duration::from_secs(30), source: last })
}
