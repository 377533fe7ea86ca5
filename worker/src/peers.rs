//! Where the other workers' tasks run, changeable while this worker runs: a repair or a
//! rebalance that leaves this worker's own tasks alone only moves its lanes, it does not restart
//! it. Routers pick up a new table between batches; lanes to workers that left are closed and
//! lanes to new ones are opened on first use.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use squall_topology::{TaskId, TaskLayout};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::executor::TopologyStatus;
use crate::runtime::{Feeding, LaunchError};
use crate::transport::{InboundLanes, Lane, RemoteSender, WeakRemoteSender, WireIdentity};

/// Lane writers of a worker, with the lane each serves.
pub(crate) type Writers = Arc<Mutex<Vec<(Lane, JoinHandle<()>)>>>;

/// The remote half of a worker's routing, shared by its routers and its [`PeerPlan`].
pub(crate) struct PeerRoutes {
    /// Bumped when the table changes; routers compare it before each send.
    version: AtomicU64,
    table: Mutex<PeerTable>,
    writers: Writers,
    identity: Arc<WireIdentity>,
    status: watch::Receiver<TopologyStatus>,
    /// The queue capacity of lanes into each component (that of its executors).
    capacity: HashMap<String, usize>,
}

#[derive(Default)]
struct PeerTable {
    /// The lane that reaches each remote task this worker sends to, by task id.
    lane_of: Vec<Option<Lane>>,
    /// Open lanes, held weakly: a lane's writer says Bye once its routers are gone.
    senders: HashMap<Lane, WeakRemoteSender>,
}

impl PeerRoutes {
    pub(crate) fn new(
        identity: Arc<WireIdentity>,
        status: watch::Receiver<TopologyStatus>,
        capacity: HashMap<String, usize>,
        writers: Writers,
    ) -> Self {
        PeerRoutes { version: AtomicU64::new(0), table: Mutex::default(), writers, identity, status, capacity }
    }

    /// The table's version; a router whose copy is older asks [`PeerRoutes::sender`] again.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The sender for `task`'s lane, starting the lane's writer if no router holds one.
    pub(crate) fn sender(&self, task: TaskId) -> Option<RemoteSender> {
        let mut table = self.lock();
        let lane = table.lane_of.get(task as usize)?.clone()?;
        if let Some(sender) = table.senders.get(&lane).and_then(WeakRemoteSender::upgrade) {
            return Some(sender);
        }
        let capacity = self.capacity.get(&lane.component).copied().unwrap_or(1);
        let (sender, writer) = RemoteSender::spawn(lane.clone(), capacity, self.identity.clone(), self.status.clone());
        table.senders.insert(lane.clone(), sender.downgrade());
        lock(&self.writers).push((lane, writer));
        Some(sender)
    }

    /// Publishes where remote tasks run now; stops the writers of lanes no task uses any more
    /// (what they still held is lost, and replayed by acking).
    fn publish(&self, lane_of: Vec<Option<Lane>>) -> (usize, usize) {
        let wanted: HashSet<&Lane> = lane_of.iter().flatten().collect();
        let mut table = self.lock();
        let before: HashSet<Lane> = table.lane_of.iter().flatten().cloned().collect();
        let added = wanted.iter().filter(|l| !before.contains(**l)).count();
        let mut removed = 0;
        for (lane, writer) in lock(&self.writers).iter() {
            if !wanted.contains(lane) && !writer.is_finished() {
                writer.abort();
                removed += 1;
            }
        }
        table.senders.retain(|lane, _| wanted.contains(lane));
        table.lane_of = lane_of.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        (added, removed)
    }

    /// Records the initial lanes (the ones `start` opened).
    pub(crate) fn seed(&self, lane_of: Vec<Option<Lane>>, senders: &HashMap<Lane, RemoteSender>) {
        let mut table = self.lock();
        table.lane_of = lane_of;
        table.senders = senders.iter().map(|(lane, s)| (lane.clone(), s.downgrade())).collect();
    }

    fn lock(&self) -> MutexGuard<'_, PeerTable> {
        lock(&self.table)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the data consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a worker needs to re-plan its lanes for a new placement of the other workers' tasks.
pub(crate) struct PeerPlan {
    pub(crate) routes: Arc<PeerRoutes>,
    pub(crate) inbound: Arc<InboundLanes>,
    pub(crate) layout: Arc<TaskLayout>,
    /// Which tasks run here, by task id.
    pub(crate) local: Vec<bool>,
    /// Components this worker's executors send to.
    pub(crate) sends_to: HashSet<String>,
    /// For each component, the local components it sends to.
    pub(crate) feeds_local: HashMap<String, Vec<String>>,
    /// For each chained bolt, the only tasks of it this worker sends to (forward partitioning).
    pub(crate) forward: HashMap<String, HashSet<TaskId>>,
    /// Which chained bolt tasks each feeder task sends to.
    pub(crate) feeding: Arc<Feeding>,
    /// Where each remote task runs now.
    pub(crate) remote: HashMap<TaskId, SocketAddr>,
}

/// What a peer update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerUpdate {
    /// Remote tasks that moved to another worker.
    pub moved_tasks: usize,
    /// Lanes opened to workers this one did not send to before.
    pub lanes_added: usize,
    /// Lanes closed because no task they reached runs there any more.
    pub lanes_closed: usize,
}

impl PeerPlan {
    /// The lane of every remote task this worker sends to.
    pub(crate) fn lanes(&self, remote: &HashMap<TaskId, SocketAddr>) -> Vec<Option<Lane>> {
        let mut lane_of = vec![None; self.local.len()];
        for (&task, &peer) in remote {
            let Some(component) = self.layout.component_of(task) else { continue };
            let reached = self.forward.get(component).is_none_or(|r| r.contains(&task));
            if self.sends_to.contains(component) && reached {
                lane_of[task as usize] = Some(Lane { peer, component: component.to_owned() });
            }
        }
        lane_of
    }

    /// The (peer, local component) lanes this worker accepts for a placement.
    pub(crate) fn inbound(&self, remote: &HashMap<TaskId, SocketAddr>) -> HashSet<(SocketAddr, String)> {
        let mut expected = HashSet::new();
        for (&task, &peer) in remote {
            let Some(source) = self.layout.component_of(task) else { continue };
            for target in self.feeds_local.get(source).into_iter().flatten() {
                let local = |t: TaskId| self.local.get(t as usize).copied().unwrap_or(false);
                if self.feeding.is_chained(source, target) && !self.feeding.reaches(task, target, local) {
                    continue;
                }
                expected.insert((peer, target.clone()));
            }
        }
        expected
    }

    /// Moves the other workers' tasks to `remote`; this worker's own tasks must stay as they are.
    pub(crate) fn update(&mut self, remote: HashMap<TaskId, SocketAddr>) -> Result<PeerUpdate, LaunchError> {
        let count = self.local.len().saturating_sub(1);
        for (task, &local) in self.local.iter().enumerate().skip(1) {
            let task = task as TaskId;
            match (local, remote.get(&task)) {
                (true, Some(peer)) => return Err(LaunchError::AssignedTwice { task, peer: *peer }),
                (false, None) => {
                    let component = self.layout.component_of(task).unwrap_or("?").to_owned();
                    return Err(LaunchError::Unassigned { task, component });
                }
                _ => {}
            }
        }
        if let Some(&task) = remote.keys().find(|t| **t == 0 || **t as usize > count) {
            return Err(LaunchError::UnknownTask { task, count });
        }
        let moved_tasks = remote.iter().filter(|(t, p)| self.remote.get(t) != Some(p)).count();
        // A peer is fresh when its set of tasks changed: a new process, which says Hello anew.
        let tasks_of = |placement: &HashMap<TaskId, SocketAddr>| {
            let mut by_peer: HashMap<SocketAddr, Vec<TaskId>> = HashMap::new();
            for (task, peer) in placement {
                by_peer.entry(*peer).or_default().push(*task);
            }
            by_peer.values_mut().for_each(|t| t.sort_unstable());
            by_peer
        };
        let (old, new) = (tasks_of(&self.remote), tasks_of(&remote));
        let fresh: HashSet<SocketAddr> =
            new.iter().filter(|(peer, tasks)| old.get(*peer) != Some(*tasks)).map(|(peer, _)| *peer).collect();
        self.inbound.retarget(&self.inbound(&remote), &fresh);
        let (lanes_added, lanes_closed) = self.routes.publish(self.lanes(&remote));
        self.remote = remote;
        Ok(PeerUpdate { moved_tasks, lanes_added, lanes_closed })
    }
}
