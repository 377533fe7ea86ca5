//! The types of Nimbus's HTTP API, shared with the CLI. Paths are under `/api/v1`.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/leader` | → [`LeaderInfo`] |
//! | PUT | `/artifacts` | topology binary → [`ArtifactUploaded`] |
//! | GET | `/artifacts/{hash}` | → the binary |
//! | POST | `/topologies` | [`SubmitRequest`] → [`TopologySummary`] |
//! | GET | `/topologies` | → `Vec<`[`TopologySummary`]`>` |
//! | GET | `/topologies/{name}` | → [`TopologyDetails`] |
//! | GET | `/supervisors` | → `Vec<`[`SupervisorSummary`]`>` |
//! | POST | `/topologies/{name}/kill?wait=S` | → [`TopologySummary`] |
//! | POST | `/topologies/{name}/activate`, `/deactivate` | → [`TopologySummary`] |
//! | POST | `/topologies/{name}/rebalance` | [`RebalanceRequest`] → [`TopologySummary`] |
//! | POST | `/topologies/{name}/log-level` | [`LogLevelRequest`] → [`TopologySummary`] |
//!
//! Errors answer with a status code and an [`ApiError`] body. A write sent to a Nimbus that does
//! not lead answers 421 with the leader's address in `leader`; a Nimbus that cannot reach
//! ZooKeeper answers 503. Topology names in paths are percent-encoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squall_topology::{TaskId, TopologySpec};

/// The longest topology name accepted.
pub const MAX_TOPOLOGY_NAME_LEN: usize = 128;

/// The rule topology names follow, for error messages.
pub const TOPOLOGY_NAME_RULE: &str =
    "topology names may only contain ASCII letters, digits, `_` and `-` (at most 128 characters), such as word-count";

/// A topology name that breaks [`TOPOLOGY_NAME_RULE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology name {name:?}: {reason}; {TOPOLOGY_NAME_RULE}")]
pub struct InvalidTopologyName {
    /// The name.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a new topology's name against [`TOPOLOGY_NAME_RULE`]: ASCII letters, digits, `_` and
/// `-`, 1 to [`MAX_TOPOLOGY_NAME_LEN`] characters. Such a name is safe as a ZooKeeper node, a URL
/// path segment and a file name (Storm forbids `/ . : \`; whitespace and the like are refused too).
pub fn check_topology_name(name: &str) -> Result<(), InvalidTopologyName> {
    let invalid = |reason: String| Err(InvalidTopologyName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("it is empty".to_owned());
    }
    if name.chars().count() > MAX_TOPOLOGY_NAME_LEN {
        return invalid(format!("it is {} characters long", name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        let what = match c {
            ' ' => "a space".to_owned(),
            c if c.is_whitespace() || c.is_control() => format!("the character {c:?}"),
            c => format!("`{c}`"),
        };
        return invalid(format!("it contains {what}"));
    }
    Ok(())
}

/// Who leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The Nimbus that answered.
    pub me: String,
    /// The leader's `host:port`, if one leads.
    pub leader: Option<String>,
}

/// An uploaded binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactUploaded {
    /// Its hex SHA-256.
    pub hash: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A topology to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Its name, unique among running topologies.
    pub name: String,
    /// The hash of its uploaded binary.
    pub artifact: String,
    /// Its spec, as the binary printed it with `--describe`.
    pub spec: TopologySpec,
    /// Config overrides (`-c key=value`), applied by the workers.
    pub config: BTreeMap<String, String>,
    /// Submit with spouts inactive.
    #[serde(default)]
    pub inactive: bool,
}

/// A change of workers or parallelism.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceRequest {
    /// The new number of workers.
    pub workers: Option<u32>,
    /// New executor counts by component.
    #[serde(default)]
    pub parallelism: BTreeMap<String, u32>,
}

/// `squall set-log-level`: a log filter for a running topology's workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelRequest {
    /// `tracing`'s `EnvFilter` syntax (`debug`, `my_topology=trace,squall=info`); `None` resets
    /// the workers to their own filter.
    pub filter: Option<String>,
    /// How long it holds, in seconds (`None`: until reset).
    #[serde(default)]
    pub for_secs: Option<u64>,
}

/// One line of `squall list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologySummary {
    /// Its name.
    pub name: String,
    /// Its unique id.
    pub id: String,
    /// active, inactive, killed or rebalancing.
    pub status: String,
    /// Workers asked for.
    pub workers: u32,
    /// Workers assigned and heartbeating.
    pub workers_running: u32,
    /// Tasks, ackers included.
    pub tasks: u32,
    /// Seconds since submission.
    pub uptime_secs: u64,
    /// Why it is not (fully) running, e.g. "waiting for 4 free worker slots, 2 available".
    pub reason: Option<String>,
}

/// One worker of a topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerDetails {
    /// The supervisor running it.
    pub supervisor: String,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its tasks.
    pub tasks: Vec<TaskId>,
    /// Milliseconds since its last heartbeat, if it ever sent one.
    pub heartbeat_age_ms: Option<u64>,
    /// Its resident memory in bytes, from its latest metrics report.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// The CPU time it has used, in seconds, from its latest metrics report.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Its log on its supervisor's logviewer (`http://host:port/api/v1/logs/<topology>-<port>.log`).
    #[serde(default)]
    pub log_url: Option<String>,
    /// Its transport to the other workers (bytes, tuples, connections, lanes), from its latest
    /// metrics report.
    #[serde(default)]
    pub transport: Option<serde_json::Value>,
}

/// One component of a topology with its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentDetails {
    /// Its id.
    pub id: String,
    /// spout, bolt or acker.
    pub kind: String,
    /// Executors.
    pub parallelism: u32,
    /// Its tasks.
    pub tasks: Vec<TaskId>,
    /// Counters summed over its workers' last heartbeats (emitted, executed, acked, …).
    pub metrics: serde_json::Value,
    /// The component whose executors run this bolt's (a chain; see `squall_topology::chain`).
    #[serde(default)]
    pub chained_to: Option<String>,
}

/// `squall describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyDetails {
    /// The summary line.
    pub summary: TopologySummary,
    /// Where it runs.
    pub workers: Vec<WorkerDetails>,
    /// Its components.
    pub components: Vec<ComponentDetails>,
    /// The hex SHA-256 of its binary (`squall query` runs it).
    #[serde(default)]
    pub artifact: String,
}

/// One live supervisor, as `squall supervisors` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorSummary {
    /// Its id.
    pub id: String,
    /// The host its workers advertise.
    pub host: String,
    /// Its worker ports (slots).
    pub ports: Vec<u16>,
    /// The ports some topology's assignment uses.
    pub used_ports: Vec<u16>,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Its Squall version.
    pub version: String,
    /// Its logviewer, `host:port`.
    #[serde(default)]
    pub logviewer: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong and what to do.
    pub error: String,
    /// The leader, when a write reached a Nimbus that does not lead.
    #[serde(default)]
    pub leader: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_follow_the_rule() {
        for good in ["wc", "word-count", "Word_Count_2", "a".repeat(MAX_TOPOLOGY_NAME_LEN).as_str()] {
            assert_eq!(check_topology_name(good), Ok(()), "{good:?}");
        }
        for (bad, reason) in [
            ("", "it is empty"),
            ("my topo", "it contains a space"),
            ("a\tb", "it contains the character '\\t'"),
            ("a.b", "it contains `.`"),
            ("a/b", "it contains `/`"),
            ("a:b", "it contains `:`"),
            ("a\\b", "it contains `\\`"),
            ("a%20b", "it contains `%`"),
            ("café", "it contains `é`"),
        ] {
            let err = check_topology_name(bad).unwrap_err();
            assert_eq!(err.reason, reason, "{bad:?}");
            assert!(err.to_string().contains("letters, digits, `_` and `-`"), "{err}");
        }
        let long = "a".repeat(MAX_TOPOLOGY_NAME_LEN + 1);
        assert_eq!(check_topology_name(&long).unwrap_err().reason, "it is 129 characters long");
    }
}
