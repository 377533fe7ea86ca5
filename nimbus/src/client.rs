//! A blocking client of Nimbus's HTTP API, for the CLI and supervisors. It finds the leader among
//! the configured seeds and follows it when leadership moves.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ApiError, ArtifactUploaded, LeaderInfo, RebalanceRequest, SubmitRequest, TopologyDetails, TopologySummary,
};

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

/// Talks to the Nimbus leader.
#[derive(Debug, Clone)]
pub struct NimbusClient {
    seeds: Vec<String>,
    agent: ureq::Agent,
}

impl NimbusClient {
    /// A client for a cluster whose Nimbus processes listen at `seeds` (`host:port`).
    pub fn new(seeds: Vec<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build();
        NimbusClient { seeds, agent: config.into() }
    }

    /// The leader's address, asking each seed in turn.
    pub fn leader(&self) -> Result<String, ClientError> {
        let mut last_error = "no seeds configured".to_owned();
        for seed in &self.seeds {
            match self.get_json::<LeaderInfo>(seed, "/leader") {
                Ok(LeaderInfo { leader: Some(leader), .. }) => return Ok(leader),
                Ok(LeaderInfo { leader: None, me }) => last_error = format!("{me} answered but no Nimbus leads yet"),
                Err(ClientError::Unreachable { last_error: e, .. }) => last_error = e,
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(ClientError::Unreachable { seeds: self.seeds.join(", "), last_error })
    }

    /// Uploads a topology binary, calling `progress` with the bytes sent so far.
    pub fn upload(&self, binary: &[u8], progress: &mut dyn FnMut(u64)) -> Result<ArtifactUploaded, ClientError> {
        let leader = self.leader()?;
        let url = format!("http://{leader}/api/v1/artifacts");
        let mut reader = ProgressReader { bytes: binary, sent: 0, progress };
        let response = self
            .agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| unreachable(&leader, e))?;
        decode(&leader, response)
    }

    /// Downloads an artifact from one Nimbus.
    pub fn download(&self, address: &str, hash: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("http://{address}/api/v1/artifacts/{hash}");
        let mut response = self.agent.get(&url).call().map_err(|e| unreachable(address, e))?;
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

    /// Every topology.
    pub fn list(&self) -> Result<Vec<TopologySummary>, ClientError> {
        let leader = self.leader()?;
        self.get_json(&leader, "/topologies")
    }

    /// One topology in detail.
    pub fn describe(&self, name: &str) -> Result<TopologyDetails, ClientError> {
        let leader = self.leader()?;
        self.get_json(&leader, &format!("/topologies/{name}"))
    }

    /// Kills a topology after deactivating it for `wait_secs`.
    pub fn kill(&self, name: &str, wait_secs: u64) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{name}/kill?wait={wait_secs}"), &())
    }

    /// Activates a topology's spouts.
    pub fn activate(&self, name: &str) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{name}/activate"), &())
    }

    /// Deactivates a topology's spouts.
    pub fn deactivate(&self, name: &str) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{name}/deactivate"), &())
    }

    /// Changes a topology's workers or parallelism.
    pub fn rebalance(&self, name: &str, request: &RebalanceRequest) -> Result<TopologySummary, ClientError> {
        self.post(&format!("/topologies/{name}/rebalance"), request)
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let leader = self.leader()?;
        let url = format!("http://{leader}/api/v1{path}");
        let response = self.agent.post(&url).send_json(body).map_err(|e| unreachable(&leader, e))?;
        decode(&leader, response)
    }

    fn get_json<T: DeserializeOwned>(&self, address: &str, path: &str) -> Result<T, ClientError> {
        let url = format!("http://{address}/api/v1{path}");
        let response = self.agent.get(&url).call().map_err(|e| unreachable(address, e))?;
        decode(address, response)
    }
}

fn unreachable(address: &str, error: ureq::Error) -> ClientError {
    ClientError::Unreachable { seeds: address.to_owned(), last_error: error.to_string() }
}

fn api_error(address: &str, mut response: ureq::http::Response<ureq::Body>) -> ClientError {
    let status = response.status().as_u16();
    match response.body_mut().read_json::<ApiError>() {
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
