//! A blocking client of Nimbus's HTTP API, for the CLI and supervisors. It finds the leader among
//! the configured seeds and follows it when leadership moves: while no Nimbus leads, or the one
//! named leader does not answer or no longer leads, it retries for a bounded time
//! ([`NimbusClient::with_failover_wait`]) before giving up.

use std::io::Read;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ApiError, ArtifactUploaded, LeaderInfo, LogLevelRequest, RebalanceRequest, SubmitRequest, SupervisorSummary,
    TopologyDetails, TopologySummary,
};

/// How long a Nimbus may take to say who leads before it counts as not answering.
const LEADER_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between attempts while the leadership changes.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long [`NimbusClient::new`] waits for a new leader by default.
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(45);

/// A request Nimbus did not carry out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No seed answered.
    #[error(
        "cannot reach Nimbus at {seeds}: {last_error}; start it with `squall nimbus` or fix `nimbus.seeds` in squall.toml"
    )]
    Unreachable {
        /// The addresses tried.
        seeds: String,
        /// The last error.
        last_error: String,
    },
    /// A Nimbus answered but cannot reach ZooKeeper (HTTP 503).
    #[error("{message}")]
    ZooKeeper {
        /// The Nimbus that answered.
        nimbus: String,
        /// Its explanation, naming the ZooKeeper servers.
        message: String,
    },
    /// Nimbus processes answered, but no leader took over within the failover wait.
    #[error(
        "no Nimbus leader after waiting {waited_secs} s for the leadership to change: {detail}; see the Nimbus logs"
    )]
    NoLeader {
        /// How long we waited.
        waited_secs: u64,
        /// What the last attempt saw.
        detail: String,
    },
    /// `submit` found a topology of that name already there.
    #[error("a topology named `{name}` is already running; kill it first or choose another name")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// Nimbus answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// Nimbus's explanation.
        message: String,
    },
    /// Nimbus answered something that is not the expected JSON.
    #[error("unexpected answer from Nimbus at {address}: {detail}")]
    BadAnswer {
        /// Who answered.
        address: String,
        /// What was wrong.
        detail: String,
    },
}

/// One attempt at a request to the leader.
enum Attempt {
    /// The request never reached the leader (connection refused or not established): another
    /// attempt cannot do it twice.
    NotSent(String),
    /// The leader answered 421: it no longer leads.
    Misdirected(String),
    /// Anything else, final.
    Done(ClientError),
}

impl From<ClientError> for Attempt {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { status: 421, message } => Attempt::Misdirected(message),
            e => Attempt::Done(e),
        }
    }
}

/// What asking the seeds for the leader found.
enum Lookup {
    Leader(String),
    /// Some Nimbus answered but none leads right now.
    Changing(String),
    Failed(ClientError),
}

/// Talks to the Nimbus leader.
#[derive(Debug, Clone)]
pub struct NimbusClient {
    seeds: Vec<String>,
    agent: ureq::Agent,
    failover_wait: Duration,
    on_retry: Option<fn(&str)>,
}

impl NimbusClient {
    /// A client for a cluster whose Nimbus processes listen at `seeds` (`host:port`); `timeout`
    /// bounds each request. It waits [`DEFAULT_FAILOVER_WAIT`] for a new leader.
    pub fn new(seeds: Vec<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build();
        NimbusClient { seeds, agent: config.into(), failover_wait: DEFAULT_FAILOVER_WAIT, on_retry: None }
    }

    /// How long to keep retrying while the leadership changes (no leader yet, or the named leader
    /// does not answer or no longer leads); about twice the ZooKeeper session timeout covers a
    /// dead leader's election node expiring.
    pub fn with_failover_wait(mut self, wait: Duration) -> Self {
        self.failover_wait = wait;
        self
    }

    /// Calls `notice` with a message (once per request) when a request starts waiting for a new
    /// leader; without it the message is logged.
    pub fn on_retry(mut self, notice: fn(&str)) -> Self {
        self.on_retry = Some(notice);
        self
    }

    /// The leader's address, asking each seed in turn and waiting while the leadership changes.
    pub fn leader(&self) -> Result<String, ClientError> {
        self.with_leader(|leader| Ok(leader.to_owned()))
    }

    /// Uploads a topology binary, calling `progress` with the bytes sent so far.
    pub fn upload(&self, binary: &[u8], progress: &mut dyn FnMut(u64)) -> Result<ArtifactUploaded, ClientError> {
        self.with_leader(|leader| {
            let url = format!("http://{leader}/api/v1/artifacts");
            let mut reader = ProgressReader { bytes: binary, sent: 0, progress: &mut *progress };
            let response = self
                .agent
                .put(&url)
                .header("content-type", "application/octet-stream")
                .send(ureq::SendBody::from_reader(&mut reader))
                .map_err(|e| failed(leader, e))?;
            Ok(decode(leader, response)?)
        })
    }

    /// Downloads an artifact from one Nimbus.
    pub fn download(&self, address: &str, hash: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("http://{address}/api/v1/artifacts/{}", encode_segment(hash));
        let mut response = self.agent.get(&url).call().map_err(|e| unreachable(address, &e))?;
        if !response.status().is_success() {
            return Err(api_error(address, response));
        }
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::BadAnswer { address: address.to_owned(), detail: e.to_string() })?;
        Ok(bytes)
    }

    /// Submits a topology whose binary was uploaded.
    pub fn submit(&self, request: &SubmitRequest) -> Result<TopologySummary, ClientError> {
        self.post("/topologies", request)
    }

    /// Fails with [`ClientError::NameTaken`] when a topology named `name` exists, so `submit` can
    /// say so before uploading; Nimbus checks again when the topology is submitted.
    pub fn check_name_free(&self, name: &str) -> Result<(), ClientError> {
        match self.describe(name) {
            Ok(_) => Err(ClientError::NameTaken { name: name.to_owned() }),
            Err(ClientError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every topology.
    pub fn list(&self) -> Result<Vec<TopologySummary>, ClientError> {
        self.get("/topologies")
    }

    /// One topology in detail.
    pub fn describe(&self, name: &str) -> Result<TopologyDetails, ClientError> {
        self.get(&format!("/topologies/{}", encode_segment(name)))
    }

    /// Every live supervisor.
    pub fn supervisors(&self) -> Result<Vec<SupervisorSummary>, ClientError> {
        self.get("/supervisors")
    }

    /// Kills a topology after deactivating it for `wait_secs`.
    pub fn kill(&self, name: &str, wait_secs: u64) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{}/kill?wait={wait_secs}", encode_segment(name)), &())
    }

    /// Activates a topology's spouts.
    pub fn activate(&self, name: &str) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{}/activate", encode_segment(name)), &())
    }

    /// Deactivates a topology's spouts.
    pub fn deactivate(&self, name: &str) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{}/deactivate", encode_segment(name)), &())
    }

    /// Changes a topology's workers or parallelism.
    pub fn rebalance(&self, name: &str, request: &RebalanceRequest) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{}/rebalance", encode_segment(name)), request)
    }

    /// Sets (or with no filter, resets) a running topology's log filter.
    pub fn set_log_level(&self, name: &str, request: &LogLevelRequest) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{}/log-level", encode_segment(name)), request)
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.with_leader(|leader| {
            let url = format!("http://{leader}/api/v1{path}");
            let response = self.agent.post(&url).send_json(body).map_err(|e| failed(leader, e))?;
            Ok(decode(leader, response)?)
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.with_leader(|leader| {
            let url = format!("http://{leader}/api/v1{path}");
            let response = self.agent.get(&url).call().map_err(|e| failed(leader, e))?;
            Ok(decode(leader, response)?)
        })
    }

    /// Runs `op` against the leader; while the leadership changes, looks the leader up again and
    /// retries, for up to the failover wait.
    fn with_leader<T>(&self, mut op: impl FnMut(&str) -> Result<T, Attempt>) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut announced = false;
        loop {
            let detail = match self.lookup_leader() {
                Lookup::Leader(leader) => match op(&leader) {
                    Ok(value) => return Ok(value),
                    Err(Attempt::Done(e)) => return Err(e),
                    Err(Attempt::NotSent(e)) => format!("the leader {leader} does not answer ({e})"),
                    Err(Attempt::Misdirected(e)) => format!("{leader} no longer leads ({e})"),
                },
                Lookup::Changing(detail) => detail,
                Lookup::Failed(e) => return Err(e),
            };
            let waited = started.elapsed();
            if waited >= self.failover_wait {
                return Err(ClientError::NoLeader { waited_secs: waited.as_secs(), detail });
            }
            if !announced {
                announced = true;
                let message = format!(
                    "the leader is changing, retrying for up to {} s ({detail})",
                    self.failover_wait.saturating_sub(waited).as_secs()
                );
                match self.on_retry {
                    Some(notice) => notice(&message),
                    None => tracing::warn!(seeds = ?self.seeds, %detail, "the leader is changing, retrying"),
                }
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Asks each seed who leads.
    fn lookup_leader(&self) -> Lookup {
        let mut last_error = "no seeds configured".to_owned();
        let mut no_leader = None;
        let mut failure = None;
        for seed in &self.seeds {
            let url = format!("http://{seed}/api/v1/leader");
            let answer = self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(LEADER_PROBE_TIMEOUT))
                .build()
                .call()
                .map_err(|e| unreachable(seed, &e))
                .and_then(|response| decode::<LeaderInfo>(seed, response));
            match answer {
                Ok(LeaderInfo { leader: Some(leader), .. }) => return Lookup::Leader(leader),
                Ok(LeaderInfo { leader: None, me }) => no_leader = Some(format!("{me} answered but no Nimbus leads")),
                Err(ClientError::Unreachable { last_error: e, .. }) => last_error = e,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(detail) = no_leader {
            return Lookup::Changing(detail);
        }
        Lookup::Failed(failure.unwrap_or(ClientError::Unreachable { seeds: self.seeds.join(", "), last_error }))
    }
}

/// Percent-encodes one URL path segment: everything but ASCII letters, digits and `-._~`.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether the request certainly did not reach the server, so sending it again cannot repeat it.
fn not_sent(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        ureq::Error::Io(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        _ => false,
    }
}

fn failed(address: &str, error: ureq::Error) -> Attempt {
    if not_sent(&error) { Attempt::NotSent(error.to_string()) } else { Attempt::Done(unreachable(address, &error)) }
}

fn unreachable(address: &str, error: &ureq::Error) -> ClientError {
    let last_error = match error {
        ureq::Error::Timeout(ureq::Timeout::Global | ureq::Timeout::RecvResponse) => {
            format!("{address} accepted the connection but did not answer in time ({error}); is it still starting?")
        }
        e => e.to_string(),
    };
    ClientError::Unreachable { seeds: address.to_owned(), last_error }
}

fn api_error(address: &str, mut response: ureq::http::Response<ureq::Body>) -> ClientError {
    let status = response.status().as_u16();
    match response.body_mut().read_json::<ApiError>() {
        Ok(e) if status == 503 => ClientError::ZooKeeper { nimbus: address.to_owned(), message: e.error },
        Ok(e) => ClientError::Api { status, message: e.error },
        Err(_) => ClientError::BadAnswer { address: address.to_owned(), detail: format!("HTTP {status}") },
    }
}

fn decode<T: DeserializeOwned>(
    address: &str,
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<T, ClientError> {
    if !response.status().is_success() {
        return Err(api_error(address, response));
    }
    response
        .body_mut()
        .read_json::<T>()
        .map_err(|e| ClientError::BadAnswer { address: address.to_owned(), detail: e.to_string() })
}

struct ProgressReader<'a> {
    bytes: &'a [u8],
    sent: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl Read for ProgressReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.len().min(buf.len()).min(256 * 1024);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("word-count_2"), "word-count_2");
        assert_eq!(encode_segment("my topo"), "my%20topo");
        assert_eq!(encode_segment("a/b?c#d%"), "a%2Fb%3Fc%23d%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn a_dead_single_seed_is_unreachable_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
        let client = NimbusClient::new(vec![format!("127.0.0.1:{port}")], Duration::from_secs(5));
        let started = Instant::now();
        let err = client.list().unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("start it with `squall nimbus`"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
