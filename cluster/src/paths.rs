//! Every ZooKeeper path Squall uses, relative to the cluster's chroot.
//!
//! | path | node |
//! |---|---|
//! | `/topologies/<name>` | [`TopologyRecord`](crate::TopologyRecord) |
//! | `/assignments/<name>` | [`Assignment`](crate::Assignment) |
//! | `/supervisors/<id>` (ephemeral) | [`SupervisorInfo`](crate::SupervisorInfo) |
//! | `/workerbeats/<name>/<supervisor>-<port>` | [`WorkerHeartbeat`](crate::WorkerHeartbeat) |
//! | `/errors/<name>/<component>` | the newest [`ErrorRecord`](crate::ErrorRecord)s |
//! | `/nimbus/election/m-<tag>-<seq>` (ephemeral sequential) | the member id, for leader election |
//! | `/nimbus/members/<host:port>` (ephemeral) | [`NimbusInfo`](crate::NimbusInfo) |
//! | `/artifacts/<hash>/<host:port>` (ephemeral) | which Nimbus holds which artifact |
//! | `/counters/topology-id` | its version is the topology id counter |

use crate::ClusterError;

/// The chroot used when none is configured.
pub const DEFAULT_CHROOT: &str = "/squall";
/// Topology records, one child per topology name.
pub const TOPOLOGIES: &str = "/topologies";
/// Assignments, one child per topology name.
pub const ASSIGNMENTS: &str = "/assignments";
/// Live supervisors, one ephemeral child per supervisor id.
pub const SUPERVISORS: &str = "/supervisors";
/// Worker heartbeats, one child per topology name, then one per worker.
pub const WORKERBEATS: &str = "/workerbeats";
/// Component errors, one child per topology name, then one per component.
pub const ERRORS: &str = "/errors";
/// The Nimbus subtree.
pub const NIMBUS: &str = "/nimbus";
/// Leader election members (ephemeral sequential).
pub const ELECTION: &str = "/nimbus/election";
/// Live Nimbus processes, one ephemeral child per `host:port`.
pub const NIMBUS_MEMBERS: &str = "/nimbus/members";
/// Artifact holders, one child per artifact hash, then one ephemeral per `host:port`.
pub const ARTIFACTS: &str = "/artifacts";
/// Counters.
pub const COUNTERS: &str = "/counters";
/// The node whose version counts topology ids.
pub const TOPOLOGY_COUNTER: &str = "/counters/topology-id";
/// Durable values of each topology name (Storm's `/transactional`): kept when the topology is
/// killed, so a resubmission under the same name resumes from them.
pub const TRANSACTIONAL: &str = "/transactional";
/// The prefix of election member nodes, followed by a per-member tag, `-` and the sequence.
pub const ELECTION_PREFIX: &str = "m-";

/// The persistent nodes created (idempotently) on connect, parents first.
pub const BASE_PATHS: &[&str] = &[
    TOPOLOGIES,
    ASSIGNMENTS,
    SUPERVISORS,
    WORKERBEATS,
    ERRORS,
    NIMBUS,
    ELECTION,
    NIMBUS_MEMBERS,
    ARTIFACTS,
    COUNTERS,
    TOPOLOGY_COUNTER,
    TRANSACTIONAL,
];

/// `/topologies/<name>`.
pub fn topology(name: &str) -> Result<String, ClusterError> {
    child(TOPOLOGIES, "topology name", name)
}

/// `/assignments/<name>`.
pub fn assignment(name: &str) -> Result<String, ClusterError> {
    child(ASSIGNMENTS, "topology name", name)
}

/// `/supervisors/<id>`.
pub fn supervisor(id: &str) -> Result<String, ClusterError> {
    child(SUPERVISORS, "supervisor id", id)
}

/// `/workerbeats/<name>`: the heartbeats of one topology.
pub fn workerbeats(name: &str) -> Result<String, ClusterError> {
    child(WORKERBEATS, "topology name", name)
}

/// `/workerbeats/<name>/<supervisor>-<port>`.
pub fn workerbeat(name: &str, supervisor: &str, port: u16) -> Result<String, ClusterError> {
    check_name("supervisor id", supervisor)?;
    Ok(format!("{}/{}", workerbeats(name)?, worker_key(supervisor, port)))
}

/// The node name of a worker's heartbeat: `<supervisor>-<port>`.
pub fn worker_key(supervisor: &str, port: u16) -> String {
    format!("{supervisor}-{port}")
}

/// Splits `<supervisor>-<port>` back; the supervisor id may itself contain `-`.
pub fn parse_worker_key(key: &str) -> Option<(&str, u16)> {
    let (supervisor, port) = key.rsplit_once('-')?;
    Some((supervisor, port.parse().ok()?))
}

/// `/errors/<name>`: the errors of one topology.
pub fn topology_errors(name: &str) -> Result<String, ClusterError> {
    child(ERRORS, "topology name", name)
}

/// `/errors/<name>/<component>`.
pub fn component_errors(name: &str, component: &str) -> Result<String, ClusterError> {
    child(&topology_errors(name)?, "component id", component)
}

/// `/transactional/<name>/<key>`: one value of a topology's durable store.
pub fn transactional(name: &str, key: &str) -> Result<String, ClusterError> {
    child(&child(TRANSACTIONAL, "topology name", name)?, "store key", key)
}

/// `/nimbus/members/<host:port>`.
pub fn nimbus_member(address: &str) -> Result<String, ClusterError> {
    child(NIMBUS_MEMBERS, "nimbus address", address)
}

/// `/artifacts/<hash>`: the holders of one artifact.
pub fn artifact(hash: &str) -> Result<String, ClusterError> {
    child(ARTIFACTS, "artifact hash", hash)
}

/// `/artifacts/<hash>/<host:port>`.
pub fn artifact_holder(hash: &str, holder: &str) -> Result<String, ClusterError> {
    child(&artifact(hash)?, "artifact holder", holder)
}

fn child(parent: &str, what: &'static str, name: &str) -> Result<String, ClusterError> {
    check_name(what, name)?;
    Ok(format!("{parent}/{name}"))
}

/// Checks that `name` can be one path segment: not empty, not `.` or `..`, no `/`, no control characters.
pub fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    let invalid = |reason| Err(ClusterError::InvalidName { what, name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not allowed as ZooKeeper node names");
    }
    if name.contains('/') {
        return invalid("it contains `/`");
    }
    if name.chars().any(|c| c.is_control() || ('\u{e000}'..='\u{f8ff}').contains(&c) || c >= '\u{fff0}') {
        return invalid("it contains a control or reserved character");
    }
    Ok(())
}

/// Normalises a chroot: absolute, no trailing `/`; `""` and `"/"` mean the ZooKeeper root.
pub fn normalize_chroot(chroot: &str) -> Result<String, ClusterError> {
    let invalid = |reason| Err(ClusterError::InvalidChroot { chroot: chroot.to_owned(), reason });
    if chroot.is_empty() || chroot == "/" {
        return Ok(String::new());
    }
    if !chroot.starts_with('/') {
        return invalid("it must start with `/`, such as /squall");
    }
    let trimmed = chroot.trim_end_matches('/');
    for segment in trimmed[1..].split('/') {
        if check_name("chroot segment", segment).is_err() {
            return invalid("each segment must be a non-empty node name without `.`, `..` or control characters");
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_chroots() {
        assert_eq!(topology("wc").unwrap(), "/topologies/wc");
        assert_eq!(workerbeat("wc", "sup-1", 6700).unwrap(), "/workerbeats/wc/sup-1-6700");
        assert_eq!(parse_worker_key("sup-1-6700"), Some(("sup-1", 6700)));
        assert_eq!(parse_worker_key("nope"), None);
        assert_eq!(artifact_holder("abc", "host:8080").unwrap(), "/artifacts/abc/host:8080");
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(topology(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_chroot("/squall/").unwrap(), "/squall");
        assert_eq!(normalize_chroot("/").unwrap(), "");
        assert_eq!(normalize_chroot("/a/b").unwrap(), "/a/b");
        for bad in ["squall", "/a//b", "/a/../b"] {
            assert!(normalize_chroot(bad).is_err(), "{bad:?}");
        }
    }
}
