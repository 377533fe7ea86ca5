//! A real Apache Kafka broker for tests: Kafka's own jars, downloaded by `scripts/setup` into a
//! cache folder (see [`kafka_home`]), run as one combined broker and controller (KRaft) on free
//! loopback ports with its own data directory.
//!
//! ```no_run
//! use squall_kafka::testing::KafkaBroker;
//!
//! let broker = KafkaBroker::start()?;
//! broker.create_topic("events", 8)?;
//! assert_eq!(broker.partition_count("events")?, Some(8));
//! println!("bootstrap.servers={}", broker.bootstrap_servers());
//! # Ok::<(), squall_kafka::testing::KafkaBrokerError>(())
//! ```

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The Kafka release the harness runs, as pinned in `kafka/KAFKA_VERSION` (read by `scripts/setup`
/// too).
pub const KAFKA_VERSION: &str = include_str!("../KAFKA_VERSION").trim_ascii();
/// How long [`KafkaBroker::start`] and [`KafkaBroker::restart`] wait for the broker to serve.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`KafkaBroker::create_topic`] and [`KafkaBroker::add_partitions`] wait for the broker
/// to report every partition with a leader.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable naming the folder whose `libs/` holds Kafka's jars.
pub const KAFKA_HOME_ENV: &str = "SQUALL_KAFKA_HOME";

/// The broker's settings, shared with `scripts/dev-kafka`; the `@…@` placeholders are filled in.
const SERVER_PROPERTIES: &str = include_str!("../config/server.properties");
const SERVER_LOG4J2: &str = include_str!("../config/log4j2.properties");
const TOOLS_LOG4J2: &str = include_str!("../config/tools-log4j2.properties");
const FIX: &str = "run scripts/setup";

/// Why the test Kafka broker, or one of Kafka's tools run against it, did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBrokerError {
    /// Neither `SQUALL_KAFKA_HOME` nor `HOME` is set, so the jars cannot be found.
    #[error(
        "cannot find Kafka's jars: neither {KAFKA_HOME_ENV} nor HOME is set; set {KAFKA_HOME_ENV} to the folder scripts/setup downloads Kafka into"
    )]
    NoHome,
    /// Kafka's jars are not where `scripts/setup` puts them.
    #[error(
        "Kafka {KAFKA_VERSION}'s jars are not in {libs} ({missing} is missing); {FIX}, which downloads them there \
         ({KAFKA_HOME_ENV} chooses another folder)"
    )]
    Jars {
        /// The folder searched.
        libs: PathBuf,
        /// The jar that is not there.
        missing: String,
    },
    /// `java` could not be run.
    #[error("cannot run {java:?} to start Kafka: {source}; install a Java 17+ runtime (scripts/setup installs one)")]
    Java {
        /// The java command.
        java: String,
        /// Why it could not be spawned.
        source: std::io::Error,
    },
    /// Preparing the broker's directory or ports failed.
    #[error("cannot prepare the test Kafka broker ({what}): {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One of Kafka's command-line tools failed.
    #[error("Kafka's {tool} could not {what}: it ended with {status}:\n{output}")]
    Tool {
        /// The tool's class.
        tool: &'static str,
        /// What it was asked to do.
        what: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed (stderr, then stdout).
        output: String,
    },
    /// The broker exited or did not serve in time.
    #[error("Kafka on 127.0.0.1:{port} did not come up: {reason}. Last lines of {log}:\n{tail}")]
    NotUp {
        /// Its client port.
        port: u16,
        /// What happened.
        reason: String,
        /// The broker's log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// A Metadata request to the broker failed.
    #[error("Kafka on 127.0.0.1:{port} did not answer a metadata request: {source}")]
    Metadata {
        /// Its client port.
        port: u16,
        /// What went wrong: I/O, or a response that could not be read.
        source: std::io::Error,
    },
    /// A created or grown topic did not show its partitions in time.
    #[error("topic {topic:?} did not show {expected} partitions with leaders within {waited:?} (last seen: {seen})")]
    TopicNotReady {
        /// The topic.
        topic: String,
        /// The partition count asked for.
        expected: usize,
        /// How long we waited.
        waited: Duration,
        /// What the broker reported last.
        seen: String,
    },
}

/// The folder whose `libs/` holds Kafka's jars: `$SQUALL_KAFKA_HOME` when set and not empty, else
/// `$HOME/.cache/squall/kafka-<KAFKA_VERSION>` — the rule `scripts/setup` follows to fill it.
pub fn kafka_home() -> Result<PathBuf, KafkaBrokerError> {
    if let Some(home) = std::env::var_os(KAFKA_HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(home.into());
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).ok_or(KafkaBrokerError::NoHome)?;
    Ok(PathBuf::from(home).join(".cache/squall").join(format!("kafka-{KAFKA_VERSION}")))
}

/// One combined Kafka broker and controller (KRaft, node 1) on free loopback ports, with its own
/// temporary data directory; the process is killed on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
    java: String,
    libs: PathBuf,
    child: Option<Child>,
    /// Where the current run's output starts in the log file.
    log_start: u64,
}

impl KafkaBroker {
    /// Starts a broker with `java` from `PATH` and the jars under [`kafka_home`], and waits until
    /// it answers a Metadata request listing itself.
    pub fn start() -> Result<KafkaBroker, KafkaBrokerError> {
        Self::start_with("java", &kafka_home()?)
    }

    /// Starts a broker with the given java command and the jars in `<kafka_home>/libs`.
    pub fn start_with(java: &str, kafka_home: &Path) -> Result<KafkaBroker, KafkaBrokerError> {
        let libs = kafka_home.join("libs");
        for jar in [format!("kafka_2.13-{KAFKA_VERSION}.jar"), format!("kafka-tools-{KAFKA_VERSION}.jar")] {
            if !libs.join(&jar).is_file() {
                return Err(KafkaBrokerError::Jars { libs, missing: jar });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("squall-kafka-")
            .tempdir()
            .map_err(|source| setup("create a temporary directory".into(), source))?;
        for (name, text) in [("log4j2.properties", SERVER_LOG4J2), ("tools-log4j2.properties", TOOLS_LOG4J2)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|source| setup(format!("write {}", path.display()), source))?;
        }
        let mut broker =
            KafkaBroker { dir, port: 0, controller_port: 0, java: java.to_owned(), libs, child: None, log_start: 0 };
        // The free ports may be taken between our probe and the broker's bind: try a few. The
        // controller's port is written into the formatted data, so each try formats afresh.
        let mut last = None;
        for _ in 0..3 {
            (broker.port, broker.controller_port) = free_ports()?;
            broker.format()?;
            match broker.launch() {
                Ok(()) => return Ok(broker),
                Err(e @ KafkaBrokerError::NotUp { .. }) if e.to_string().contains("Address already in use") => {
                    tracing::debug!(port = broker.port, "kafka port taken meanwhile, trying others");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| setup("find free ports".into(), std::io::ErrorKind::AddrInUse.into())))
    }

    /// The `bootstrap.servers` value for clients: `127.0.0.1:<port>`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client (PLAINTEXT) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's log file (its stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    /// Kills the broker (SIGKILL, as a crash would), keeping its data and ports for
    /// [`KafkaBroker::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(port = self.port, "kafka broker killed");
        }
    }

    /// Starts the broker again on the same ports with the same data, and waits until it serves.
    ///
    /// After a kill the broker's previous registration lasts until its session expires
    /// (`broker.session.timeout.ms`, 4 s here), so a restart takes that much longer than a start.
    pub fn restart(&mut self) -> Result<(), KafkaBrokerError> {
        self.stop();
        self.launch()
    }

    /// Creates `name` with `partitions` partitions (one replica each) with Kafka's `kafka-topics`
    /// tool, and waits until the broker reports every partition with a leader.
    pub fn create_topic(&self, name: &str, partitions: usize) -> Result<(), KafkaBrokerError> {
        let count = partitions.to_string();
        self.run_tool(
            TOPIC_COMMAND,
            format!("create topic {name:?} with {partitions} partitions"),
            &["--create", "--topic", name, "--partitions", &count, "--replication-factor", "1"],
        )?;
        self.wait_for_partitions(name, partitions)
    }

    /// Grows `name` to `total` partitions with Kafka's `kafka-topics` tool, and waits until the
    /// broker reports every partition with a leader.
    pub fn add_partitions(&self, name: &str, total: usize) -> Result<(), KafkaBrokerError> {
        let count = total.to_string();
        self.run_tool(
            TOPIC_COMMAND,
            format!("grow topic {name:?} to {total} partitions"),
            &["--alter", "--topic", name, "--partitions", &count],
        )?;
        self.wait_for_partitions(name, total)
    }

    /// The number of partitions the broker reports for `topic`, or `None` if it does not know the
    /// topic. Asks the broker directly (a Metadata request), so it is cheap enough to poll.
    pub fn partition_count(&self, topic: &str) -> Result<Option<usize>, KafkaBrokerError> {
        let metadata = metadata(self.port, Some(topic)).map_err(|source| self.metadata_error(source))?;
        Ok(metadata.topics.into_iter().find(|t| t.name == topic && t.error_code == 0).map(|t| t.leaders.len()))
    }

    /// Describes `topic` with Kafka's `kafka-topics --describe`: one line for the topic, then one
    /// per partition with its leader, replicas and in-sync replicas.
    pub fn describe_topic(&self, topic: &str) -> Result<String, KafkaBrokerError> {
        self.run_tool(TOPIC_COMMAND, format!("describe topic {topic:?}"), &["--describe", "--topic", topic])
    }

    fn wait_for_partitions(&self, name: &str, expected: usize) -> Result<(), KafkaBrokerError> {
        let deadline = Instant::now() + TOPIC_TIMEOUT;
        loop {
            let metadata = metadata(self.port, Some(name)).map_err(|source| self.metadata_error(source))?;
            let topic = metadata.topics.iter().find(|t| t.name == name);
            let seen = match topic {
                Some(t) if t.error_code == 0 && t.leaders.len() == expected && t.leaders.iter().all(|&l| l >= 0) => {
                    return Ok(());
                }
                Some(t) => format!("error code {}, partition leaders {:?}", t.error_code, t.leaders),
                None => "no such topic".to_owned(),
            };
            if Instant::now() >= deadline {
                return Err(KafkaBrokerError::TopicNotReady {
                    topic: name.to_owned(),
                    expected,
                    waited: TOPIC_TIMEOUT,
                    seen,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn classpath(&self) -> String {
        // java expands a trailing `*` itself, to every jar of the folder.
        format!("{}/*", self.libs.display())
    }

    /// A command that runs the main class `class` of Kafka's jars (such as
    /// `org.apache.kafka.tools.ConsumerPerformance`) with the java and the jars this broker
    /// runs with, logging warnings and errors on stderr. `jvm_options` go before the class;
    /// add the tool's own arguments to the command.
    pub fn java_command(&self, jvm_options: &[&str], class: &str) -> Command {
        let mut command = Command::new(&self.java);
        command
            .args(jvm_options)
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.path().join("tools-log4j2.properties").display()))
            .args(["-cp", &self.classpath(), class]);
        command
    }

    /// Runs one of Kafka's command-line tools against this broker's files or port, returning
    /// its stdout.
    fn run_tool(&self, tool: &'static str, what: String, args: &[&str]) -> Result<String, KafkaBrokerError> {
        // A short-lived tool starts faster with the quick compiler only and a small heap.
        let mut command = self.java_command(&["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"], tool);
        if tool == TOPIC_COMMAND {
            command.args(["--bootstrap-server", &self.bootstrap_servers()]);
        }
        let started = Instant::now();
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| KafkaBrokerError::Java { java: self.java.clone(), source })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        tracing::debug!(tool, what, elapsed_ms = started.elapsed().as_millis() as u64, status = %output.status, "kafka tool ran");
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let output_text = [stderr.trim(), stdout.trim()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
        Err(KafkaBrokerError::Tool { tool, what, status: output.status, output: output_text.join("\n") })
    }

    /// Writes `server.properties` for the current ports and formats an empty data directory
    /// as a one-controller dynamic quorum with a fresh cluster id.
    fn format(&self) -> Result<(), KafkaBrokerError> {
        let data = self.dir.path().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|source| setup(format!("empty {}", data.display()), source))?;
        }
        let properties = SERVER_PROPERTIES
            .replace("@PORT@", &self.port.to_string())
            .replace("@CONTROLLER_PORT@", &self.controller_port.to_string())
            .replace("@LOG_DIR@", &data.display().to_string());
        let path = self.properties_path();
        std::fs::write(&path, properties).map_err(|source| setup(format!("write {}", path.display()), source))?;
        let config = path.display().to_string();
        let cluster_id = random_cluster_id();
        self.run_tool(
            STORAGE_TOOL,
            format!("format {}", data.display()),
            &["format", "--config", &config, "--cluster-id", &cluster_id, "--standalone"],
        )?;
        Ok(())
    }

    fn properties_path(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    fn launch(&mut self) -> Result<(), KafkaBrokerError> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| setup(format!("open {}", log_path.display()), source))?;
        let stderr = log.try_clone().map_err(|source| setup(format!("open {}", log_path.display()), source))?;
        self.log_start = log.metadata().map_err(|source| setup(format!("read {}", log_path.display()), source))?.len();
        let started = Instant::now();
        let child = Command::new(&self.java)
            .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.path().join("log4j2.properties").display()))
            .args(["-cp", &self.classpath(), "kafka.Kafka"])
            .arg(self.properties_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| KafkaBrokerError::Java { java: self.java.clone(), source })?;
        self.child = Some(child);
        let result = self.wait_up();
        match &result {
            Ok(()) => tracing::info!(
                port = self.port,
                log = %log_path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "kafka broker up"
            ),
            Err(_) => self.stop(),
        }
        result
    }

    fn wait_up(&mut self) -> Result<(), KafkaBrokerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut reason = format!("the java process exited with {status}");
                // Kafka logs much after the error that stopped it (its shutdown), so the tail
                // of the log may not show it.
                if let Some(error) = self.first_error() {
                    reason.push_str(&format!("; its first error: {error}"));
                }
                return Err(self.not_up(reason));
            }
            // The broker lists itself once the controller has unfenced it: then it serves.
            if metadata(self.port, None).is_ok_and(|m| m.brokers > 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    self.not_up(format!("it did not list itself in a metadata response within {START_TIMEOUT:?}"))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_up(&self, reason: String) -> KafkaBrokerError {
        let log = self.log_path();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        KafkaBrokerError::NotUp { port: self.port, reason, log, tail }
    }

    /// The first ERROR line the current run logged, with the exception message that follows it.
    fn first_error(&self) -> Option<String> {
        let mut text = String::new();
        let mut log = std::fs::File::open(self.log_path()).ok()?;
        log.seek(SeekFrom::Start(self.log_start)).ok()?;
        log.read_to_string(&mut text).ok()?;
        let mut lines = text.lines().skip_while(|line| !line.contains("] ERROR "));
        let error = lines.next()?;
        let error = match lines.next() {
            Some(next) if !next.starts_with('[') => format!("{error} {next}"),
            _ => error.to_owned(),
        };
        Some(error.trim_end_matches('.').to_owned())
    }

    fn metadata_error(&self, source: std::io::Error) -> KafkaBrokerError {
        KafkaBrokerError::Metadata { port: self.port, source }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kafka's topic tool (`kafka-topics.sh`), in the kafka-tools jar.
const TOPIC_COMMAND: &str = "org.apache.kafka.tools.TopicCommand";
/// Kafka's storage tool (`kafka-storage.sh`), in the kafka_2.13 jar.
const STORAGE_TOOL: &str = "kafka.tools.StorageTool";

fn setup(what: String, source: std::io::Error) -> KafkaBrokerError {
    KafkaBrokerError::Setup { what, source }
}

/// Two distinct free loopback ports: the client port and the controller's.
fn free_ports() -> Result<(u16, u16), KafkaBrokerError> {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| setup("bind a loopback port".into(), source));
    // Both held at once, so they differ.
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr().map(|a| a.port()).map_err(|source| setup("read the bound port".into(), source))
    };
    Ok((port(&a)?, port(&b)?))
}

/// A Kafka cluster id: a random UUID in unpadded URL-safe base64, as `kafka-storage random-uuid`
/// prints (22 characters).
fn random_cluster_id() -> String {
    loop {
        let id = encode_uuid(fastrand::u128(..));
        // Kafka's own random ids never start with '-' (a command line would read an option).
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_uuid(uuid: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid.to_be_bytes();
    let mut id = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            id.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    id
}

/// What a Metadata response says, as far as the harness needs.
struct Metadata {
    brokers: usize,
    topics: Vec<TopicMetadata>,
}

struct TopicMetadata {
    error_code: i16,
    name: String,
    /// The leader of each partition, by partition index order of the response; -1 when none.
    leaders: Vec<i32>,
}

/// Sends one Metadata request (v4: request header v1, no tagged fields) about `topic`, or about no
/// topic, over a fresh connection, and reads the brokers and topics from the response.
fn metadata(port: u16, topic: Option<&str>) -> std::io::Result<Metadata> {
    const METADATA: i16 = 3;
    const CORRELATION_ID: i32 = 0x5155_4c4c;
    let mut request = Vec::with_capacity(64);
    request.extend(METADATA.to_be_bytes());
    request.extend(4i16.to_be_bytes());
    request.extend(CORRELATION_ID.to_be_bytes());
    put_string(&mut request, "squall-kafka-testing");
    // An empty array asks about no topic (a null one would mean all topics).
    request.extend(i32::from(topic.is_some()).to_be_bytes());
    if let Some(topic) = topic {
        put_string(&mut request, topic);
    }
    request.push(0); // allow_auto_topic_creation: false

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let size = i32::try_from(request.len()).map_err(|_| invalid("request too large".into()))?;
    stream.write_all(&size.to_be_bytes())?;
    stream.write_all(&request)?;
    let mut size = [0; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size)).map_err(|_| invalid("negative response size".into()))?;
    if size > 16 << 20 {
        return Err(invalid(format!("response of {size} bytes")));
    }
    let mut response = vec![0; size];
    stream.read_exact(&mut response)?;

    let mut r = Reader(&response);
    let correlation = r.i32()?;
    if correlation != CORRELATION_ID {
        return Err(invalid(format!("correlation id {correlation} instead of {CORRELATION_ID}")));
    }
    r.i32()?; // throttle_time_ms
    let brokers = r.len()?;
    for _ in 0..brokers {
        r.i32()?; // node_id
        r.string()?; // host
        r.i32()?; // port
        r.string()?; // rack (nullable)
    }
    r.string()?; // cluster_id (nullable)
    r.i32()?; // controller_id
    let mut topics = Vec::new();
    for _ in 0..r.len()? {
        let error_code = r.i16()?;
        let name = r.string()?;
        r.take(1)?; // is_internal
        let mut leaders = Vec::new();
        for _ in 0..r.len()? {
            r.i16()?; // error_code
            r.i32()?; // partition_index
            leaders.push(r.i32()?);
            for _ in 0..2 {
                // replica_nodes, isr_nodes
                let n = r.len()?;
                r.take(4 * n)?;
            }
        }
        topics.push(TopicMetadata { error_code, name, leaders });
    }
    Ok(Metadata { brokers, topics })
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    // Topic names are at most 249 characters and the client id is ours: both fit an i16.
    buf.extend((s.len() as i16).to_be_bytes());
    buf.extend(s.as_bytes());
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed metadata response: {what}"))
}

/// Reads big-endian fields from the front of a response.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> std::io::Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> std::io::Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An array length; a null array (-1) counts as empty.
    fn len(&mut self) -> std::io::Result<usize> {
        Ok(usize::try_from(self.i32()?).unwrap_or(0))
    }

    /// A (nullable) string; null reads as empty.
    fn string(&mut self) -> std::io::Result<String> {
        let n = usize::try_from(self.i16()?).unwrap_or(0);
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

/// Every record of `topic` (partitions `0..partitions`) that a `read_committed` consumer sees,
/// as text, in partition order; reads each partition to its end (or for at most 30 s).
pub fn read_committed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "squall-read-committed")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let (mut seen, mut ended) = (Vec::new(), std::collections::BTreeSet::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ended.len() < usize::try_from(partitions).unwrap_or(0) && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            _ => {}
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_base64_characters_not_starting_with_a_dash() {
        for _ in 0..1000 {
            let id = random_cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
            assert!(!id.starts_with('-'), "{id}");
        }
        assert_ne!(random_cluster_id(), random_cluster_id());
    }

    #[test]
    fn uuids_encode_as_kafka_does() {
        // What Kafka 4.4's `new Uuid(most, least).toString()` prints for the same 128 bits.
        assert_eq!(encode_uuid(0), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(encode_uuid(u128::MAX), "_____________________w");
        assert_eq!(encode_uuid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210), "ASNFZ4mrze_-3LqYdlQyEA");
    }

    #[test]
    fn kafka_version_is_pinned_without_whitespace() {
        assert!(KAFKA_VERSION.starts_with("4."), "{KAFKA_VERSION:?}");
        assert!(!KAFKA_VERSION.contains(char::is_whitespace));
    }
}
