//! Generic JSON node operations of [`ClusterState`]: read, write, create, compare-and-set, delete, list.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zookeeper_client::{Client, CreateOptions, Error as Zk, Stat};

use crate::state::PERSISTENT;
use crate::{ClusterError, ClusterState};

/// Compare-and-set attempts before [`ClusterError::Contended`].
const CAS_ATTEMPTS: u32 = 256;
/// Reads of one directory under way at once.
const READS_IN_FLIGHT: usize = 128;

impl ClusterState {
    /// The raw data and stat of `path`; `None` if it does not exist.
    pub(crate) async fn read_raw(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, ClusterError> {
        let (client, _) = self.live("read a node").await?;
        match client.get_data(path).await {
            Ok(found) => Ok(Some(found)),
            Err(Zk::NoNode) => Ok(None),
            Err(e) => Err(self.shared().zk("read", path, e)),
        }
    }

    /// Decodes the JSON of `path`.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
        data: &[u8],
    ) -> Result<T, ClusterError> {
        serde_json::from_slice(data).map_err(|source| ClusterError::Malformed {
            path: self.shared().full_path(path),
            what,
            source,
        })
    }

    fn encode<T: Serialize>(&self, path: &str, what: &'static str, value: &T) -> Result<Vec<u8>, ClusterError> {
        serde_json::to_vec(value).map_err(|source| ClusterError::Encode {
            path: self.shared().full_path(path),
            what,
            source,
        })
    }

    /// The record at `path` and its stat; `None` if it does not exist.
    pub(crate) async fn read_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<Option<(T, Stat)>, ClusterError> {
        let Some((data, stat)) = self.read_raw(path).await? else { return Ok(None) };
        Ok(Some((self.decode(path, what, &data)?, stat)))
    }

    /// Writes `value` at `path`, creating the node and its parents if needed.
    pub(crate) async fn write_json<T: Serialize>(
        &self,
        path: &str,
        what: &'static str,
        value: &T,
    ) -> Result<(), ClusterError> {
        let data = self.encode(path, what, value)?;
        self.write_raw(path, &data).await
    }

    /// Writes `data` at `path`, creating the node and its parents if needed.
    pub(crate) async fn write_raw(&self, path: &str, data: &[u8]) -> Result<(), ClusterError> {
        let (client, _) = self.live("write a node").await?;
        for _ in 0..CAS_ATTEMPTS {
            match client.set_data(path, data, None).await {
                Ok(_) => return Ok(()),
                Err(Zk::NoNode) => {}
                Err(e) => return Err(self.shared().zk("write", path, e)),
            }
            match self.create_with_parents(&client, path, data, &PERSISTENT).await {
                Ok(()) => return Ok(()),
                Err(Zk::NodeExists) => continue,
                Err(e) => return Err(self.shared().zk("create", path, e)),
            }
        }
        Err(ClusterError::Contended { path: self.shared().full_path(path), attempts: CAS_ATTEMPTS })
    }

    /// Creates `path` holding `value`; [`ClusterError::AlreadyExists`] if it exists.
    pub(crate) async fn create_json<T: Serialize>(
        &self,
        path: &str,
        what: &'static str,
        value: &T,
    ) -> Result<(), ClusterError> {
        let data = self.encode(path, what, value)?;
        let (client, _) = self.live("create a node").await?;
        match self.create_with_parents(&client, path, &data, &PERSISTENT).await {
            Ok(()) => Ok(()),
            Err(Zk::NodeExists) => Err(ClusterError::AlreadyExists { path: self.shared().full_path(path), what }),
            Err(e) => Err(self.shared().zk("create", path, e)),
        }
    }

    pub(crate) async fn create_with_parents(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        options: &CreateOptions<'_>,
    ) -> Result<(), Zk> {
        match client.create(path, data, options).await {
            Err(Zk::NoNode) => {}
            other => return other.map(|_| ()),
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && !parent.is_empty()
        {
            client.mkdir(parent, &PERSISTENT).await?;
        }
        client.create(path, data, options).await.map(|_| ())
    }

    /// Read-modify-write of `path` with compare-and-set, retried on conflicts.
    ///
    /// `change` gets the current value (`None` if absent) and returns the value to write, or `None`
    /// to write nothing. Returns what was written.
    pub(crate) async fn update_json<T, F>(
        &self,
        path: &str,
        what: &'static str,
        mut change: F,
    ) -> Result<Option<T>, ClusterError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 0 {
                let pause = Duration::from_micros(fastrand::u64(0..=(200 * u64::from(attempt.min(50)))));
                tokio::time::sleep(pause).await;
            }
            let (client, _) = self.live("update a node").await?;
            let (current, version) = match client.get_data(path).await {
                Ok((data, stat)) => (Some(self.decode::<T>(path, what, &data)?), Some(stat.version)),
                Err(Zk::NoNode) => (None, None),
                Err(e) => return Err(self.shared().zk("read", path, e)),
            };
            let Some(next) = change(current) else { return Ok(None) };
            let data = self.encode(path, what, &next)?;
            let written = match version {
                Some(version) => client.set_data(path, &data, Some(version)).await.map(|_| ()),
                None => self.create_with_parents(&client, path, &data, &PERSISTENT).await,
            };
            match written {
                Ok(()) => return Ok(Some(next)),
                Err(Zk::BadVersion | Zk::NoNode | Zk::NodeExists) => continue,
                Err(e) => return Err(self.shared().zk("update", path, e)),
            }
        }
        Err(ClusterError::Contended { path: self.shared().full_path(path), attempts: CAS_ATTEMPTS })
    }

    /// Deletes `path`; `false` if it did not exist.
    pub(crate) async fn delete_node(&self, path: &str) -> Result<bool, ClusterError> {
        let (client, _) = self.live("delete a node").await?;
        match client.delete(path, None).await {
            Ok(()) => Ok(true),
            Err(Zk::NoNode) => Ok(false),
            Err(e) => Err(self.shared().zk("delete", path, e)),
        }
    }

    /// Deletes `path` and everything under it; `false` if it did not exist.
    pub(crate) async fn delete_tree(&self, path: &str) -> Result<bool, ClusterError> {
        let (client, _) = self.live("delete a subtree").await?;
        let mut existed = false;
        for _ in 0..CAS_ATTEMPTS {
            // Depth first, iteratively: collect the subtree, delete leaves first.
            let mut order = vec![path.to_owned()];
            let mut i = 0;
            while i < order.len() {
                match client.list_children(&order[i]).await {
                    Ok(children) => {
                        let parent = order[i].clone();
                        order.extend(children.into_iter().map(|c| format!("{parent}/{c}")));
                    }
                    Err(Zk::NoNode) => {}
                    Err(e) => return Err(self.shared().zk("list", &order[i], e)),
                }
                i += 1;
            }
            let mut retry = false;
            for node in order.iter().rev() {
                match client.delete(node, None).await {
                    Ok(()) => existed = true,
                    Err(Zk::NoNode) => {}
                    Err(Zk::NotEmpty) => retry = true,
                    Err(e) => return Err(self.shared().zk("delete", node, e)),
                }
            }
            if !retry {
                return Ok(existed);
            }
        }
        Err(ClusterError::Contended { path: self.shared().full_path(path), attempts: CAS_ATTEMPTS })
    }

    /// The sorted children of `path`; empty if it does not exist.
    pub(crate) async fn children(&self, path: &str) -> Result<Vec<String>, ClusterError> {
        let (client, _) = self.live("list children").await?;
        match client.list_children(path).await {
            Ok(mut children) => {
                children.sort();
                Ok(children)
            }
            Err(Zk::NoNode) => Ok(Vec::new()),
            Err(e) => Err(self.shared().zk("list", path, e)),
        }
    }

    /// Every child of `dir` decoded, by child name; children that vanish meanwhile are skipped.
    pub(crate) async fn read_dir<T: DeserializeOwned>(
        &self,
        dir: &str,
        what: &'static str,
    ) -> Result<BTreeMap<String, T>, ClusterError> {
        // The reads go out together on the session's one connection: a directory of a
        // thousand supervisors takes a few round trips, not a thousand.
        let reads = self.children(dir).await?.into_iter().map(|child| async move {
            let path = format!("{dir}/{child}");
            Ok::<_, ClusterError>(self.read_json(&path, what).await?.map(|(value, _)| (child, value)))
        });
        let mut out = BTreeMap::new();
        let mut reads = futures_util::stream::iter(reads).buffer_unordered(READS_IN_FLIGHT);
        while let Some(read) = reads.next().await {
            if let Some((child, value)) = read? {
                out.insert(child, value);
            }
        }
        Ok(out)
    }
}
