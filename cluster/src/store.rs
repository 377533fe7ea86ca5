//! Typed reads and writes of each record.

use std::collections::BTreeMap;

use zookeeper_client::Error as Zk;

use crate::records::{MAX_ERRORS, unix_secs};
use crate::{
    Assignment, ClusterError, ClusterState, ErrorRecord, NimbusInfo, SupervisorInfo, TopologyRecord, WorkerHeartbeat,
    paths,
};

impl ClusterState {
    /// Writes a topology record, replacing any record of that name.
    pub async fn put_topology(&self, record: &TopologyRecord) -> Result<(), ClusterError> {
        self.write_json(&paths::topology(&record.name)?, "topology record", record).await
    }

    /// Writes a new topology record; [`ClusterError::AlreadyExists`] if the name is taken.
    pub async fn create_topology(&self, record: &TopologyRecord) -> Result<(), ClusterError> {
        self.create_json(&paths::topology(&record.name)?, "topology record", record).await
    }

    /// The topology record named `name`.
    pub async fn topology(&self, name: &str) -> Result<Option<TopologyRecord>, ClusterError> {
        Ok(self.read_json(&paths::topology(name)?, "topology record").await?.map(|(r, _)| r))
    }

    /// Every topology record, by name.
    pub async fn topologies(&self) -> Result<BTreeMap<String, TopologyRecord>, ClusterError> {
        self.read_dir(paths::TOPOLOGIES, "topology record").await
    }

    /// Changes a topology record with compare-and-set, re-reading and retrying when another writer
    /// got in first. Returns the record written, or `None` if there is no such topology.
    ///
    /// As with any ZooKeeper write, a connection-loss error leaves it unknown whether the write
    /// was applied: re-read before retrying a change that must not be applied twice.
    pub async fn update_topology(
        &self,
        name: &str,
        mut change: impl FnMut(&mut TopologyRecord),
    ) -> Result<Option<TopologyRecord>, ClusterError> {
        let path = paths::topology(name)?;
        self.update_json(&path, "topology record", |current: Option<TopologyRecord>| {
            current.map(|mut record| {
                change(&mut record);
                record
            })
        })
        .await
    }

    /// Deletes a topology record; `false` if there was none.
    pub async fn delete_topology(&self, name: &str) -> Result<bool, ClusterError> {
        self.delete_node(&paths::topology(name)?).await
    }

    /// A fresh topology id `<name>-<counter>-<unix secs>`, the counter shared by every Nimbus.
    pub async fn new_topology_id(&self, name: &str) -> Result<String, ClusterError> {
        paths::check_name("topology name", name)?;
        let (client, _) = self.live("count topology ids").await?;
        let path = paths::TOPOLOGY_COUNTER;
        match client.set_data(path, &[], None).await {
            Ok(stat) => Ok(TopologyRecord::make_id(name, u64::from(stat.version.unsigned_abs()), unix_secs())),
            Err(e) => Err(self.shared().zk("bump", path, e)),
        }
    }

    /// Writes the assignment of topology `name`, setting its `version` to one more than the stored
    /// one (1 for the first). Returns the assignment as written.
    pub async fn put_assignment(&self, name: &str, assignment: &Assignment) -> Result<Assignment, ClusterError> {
        let path = paths::assignment(name)?;
        let written = self
            .update_json(&path, "assignment", |current: Option<Assignment>| {
                Some(Assignment { version: current.map_or(1, |c| c.version + 1), ..assignment.clone() })
            })
            .await?;
        written.ok_or_else(|| self.shared().zk("write", &path, Zk::RuntimeInconsistent))
    }

    /// The assignment of topology `name`.
    pub async fn assignment(&self, name: &str) -> Result<Option<Assignment>, ClusterError> {
        Ok(self.read_json(&paths::assignment(name)?, "assignment").await?.map(|(a, _)| a))
    }

    /// Every assignment, by topology name.
    pub async fn assignments(&self) -> Result<BTreeMap<String, Assignment>, ClusterError> {
        self.read_dir(paths::ASSIGNMENTS, "assignment").await
    }

    /// Deletes the assignment of topology `name`; `false` if there was none.
    pub async fn delete_assignment(&self, name: &str) -> Result<bool, ClusterError> {
        self.delete_node(&paths::assignment(name)?).await
    }

    /// Registers (or rewrites) this supervisor's ephemeral node; it is re-created after a session loss.
    ///
    /// When another session holds the node (a previous run of this supervisor that was killed),
    /// waits for that session to expire (up to twice the session timeout) before failing.
    pub async fn register_supervisor(&self, info: &SupervisorInfo) -> Result<(), ClusterError> {
        let path = paths::supervisor(&info.id)?;
        let data = serde_json::to_vec(info).map_err(|source| ClusterError::Encode {
            path: self.shared().full_path(&path),
            what: "supervisor info",
            source,
        })?;
        self.register_ephemeral_waiting(&path, "supervisor id", data).await
    }

    /// Removes this process's supervisor node; `false` if it had not registered `id`.
    pub async fn unregister_supervisor(&self, id: &str) -> Result<bool, ClusterError> {
        self.unregister_ephemeral(&paths::supervisor(id)?).await
    }

    /// The live supervisor `id`.
    pub async fn supervisor(&self, id: &str) -> Result<Option<SupervisorInfo>, ClusterError> {
        Ok(self.read_json(&paths::supervisor(id)?, "supervisor info").await?.map(|(s, _)| s))
    }

    /// Every live supervisor, by id.
    pub async fn supervisors(&self) -> Result<BTreeMap<String, SupervisorInfo>, ClusterError> {
        self.read_dir(paths::SUPERVISORS, "supervisor info").await
    }

    /// Writes a worker's heartbeat under topology `name`.
    pub async fn put_worker_heartbeat(&self, name: &str, beat: &WorkerHeartbeat) -> Result<(), ClusterError> {
        let path = paths::workerbeat(name, &beat.supervisor_id, beat.port)?;
        self.write_json(&path, "worker heartbeat", beat).await
    }

    /// The heartbeats of topology `name`'s workers, by `<supervisor>-<port>`.
    pub async fn worker_heartbeats(&self, name: &str) -> Result<BTreeMap<String, WorkerHeartbeat>, ClusterError> {
        self.read_dir(&paths::workerbeats(name)?, "worker heartbeat").await
    }

    /// Deletes one worker's heartbeat; `false` if there was none.
    pub async fn delete_worker_heartbeat(&self, name: &str, supervisor: &str, port: u16) -> Result<bool, ClusterError> {
        self.delete_node(&paths::workerbeat(name, supervisor, port)?).await
    }

    /// Deletes every heartbeat of topology `name`; `false` if there were none.
    pub async fn delete_worker_heartbeats(&self, name: &str) -> Result<bool, ClusterError> {
        self.delete_tree(&paths::workerbeats(name)?).await
    }

    /// Appends an error of `component`, keeping the newest [`MAX_ERRORS`].
    pub async fn record_error(&self, name: &str, component: &str, error: ErrorRecord) -> Result<(), ClusterError> {
        let path = paths::component_errors(name, component)?;
        self.update_json(&path, "error list", |current: Option<Vec<ErrorRecord>>| {
            let mut errors = current.unwrap_or_default();
            errors.push(error.clone());
            let excess = errors.len().saturating_sub(MAX_ERRORS);
            errors.drain(..excess);
            Some(errors)
        })
        .await?;
        Ok(())
    }

    /// The newest errors of `component`, oldest first.
    pub async fn errors(&self, name: &str, component: &str) -> Result<Vec<ErrorRecord>, ClusterError> {
        let path = paths::component_errors(name, component)?;
        Ok(self.read_json(&path, "error list").await?.map(|(e, _)| e).unwrap_or_default())
    }

    /// The newest errors of every component of topology `name`, by component.
    pub async fn topology_errors(&self, name: &str) -> Result<BTreeMap<String, Vec<ErrorRecord>>, ClusterError> {
        self.read_dir(&paths::topology_errors(name)?, "error list").await
    }

    /// Deletes every error of topology `name`; `false` if there were none.
    pub async fn delete_errors(&self, name: &str) -> Result<bool, ClusterError> {
        self.delete_tree(&paths::topology_errors(name)?).await
    }

    /// Deletes everything stored for topology `name`: record, assignment, heartbeats and errors.
    pub async fn remove_topology_state(&self, name: &str) -> Result<(), ClusterError> {
        self.delete_assignment(name).await?;
        self.delete_worker_heartbeats(name).await?;
        self.delete_errors(name).await?;
        self.delete_topology(name).await?;
        Ok(())
    }

    /// Registers this Nimbus's ephemeral node `/nimbus/members/<host:port>`.
    ///
    /// When another session holds the node (a previous run of this Nimbus that was killed),
    /// waits for that session to expire (up to twice the session timeout) before failing; its
    /// leader-election node expires with it.
    pub async fn register_nimbus(&self, info: &NimbusInfo) -> Result<(), ClusterError> {
        let path = paths::nimbus_member(&info.address())?;
        let data = serde_json::to_vec(info).map_err(|source| ClusterError::Encode {
            path: self.shared().full_path(&path),
            what: "nimbus info",
            source,
        })?;
        self.register_ephemeral_waiting(&path, "nimbus address", data).await
    }

    /// Every live Nimbus, by `host:port`.
    pub async fn nimbuses(&self) -> Result<BTreeMap<String, NimbusInfo>, ClusterError> {
        self.read_dir(paths::NIMBUS_MEMBERS, "nimbus info").await
    }

    /// Records (ephemerally) that `holder` (`host:port`) has the artifact `hash`.
    ///
    /// Registered already in this process, it writes nothing: the node is re-created with every
    /// new session, and Nimbus calls this for every topology in every round.
    pub async fn register_artifact(&self, hash: &str, holder: &str) -> Result<(), ClusterError> {
        let path = paths::artifact_holder(hash, holder)?;
        if self.shared().ephemerals.lock().await.contains_key(&path) {
            return Ok(());
        }
        self.register_ephemeral(&path, "artifact holder", Vec::new()).await
    }

    /// Withdraws this process's claim that `holder` has the artifact `hash`.
    pub async fn unregister_artifact(&self, hash: &str, holder: &str) -> Result<bool, ClusterError> {
        self.unregister_ephemeral(&paths::artifact_holder(hash, holder)?).await
    }

    /// The `host:port`s holding the artifact `hash`, sorted.
    pub async fn artifact_holders(&self, hash: &str) -> Result<Vec<String>, ClusterError> {
        self.children(&paths::artifact(hash)?).await
    }

    /// The hashes of every artifact anyone has registered (possibly with no live holder left).
    pub async fn artifacts(&self) -> Result<Vec<String>, ClusterError> {
        self.children(paths::ARTIFACTS).await
    }
}
