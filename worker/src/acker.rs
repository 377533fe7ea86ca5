//! The acker: a system bolt (`__acker`) that keeps the XOR of every tuple tree's edge ids and
//! tells the spout task when a tree completes or fails (Storm's `Acker`).

use squall_topology::ack::RotatingMap;
use squall_topology::driver::{BatchOutcome, BoltFactory, BoxFuture, ErasedBolt, Polls};
use squall_topology::{
    AckerMessage, ComponentError, Control, OutputDeclarer, SpoutNotice, TaskId, TopologyContext, Transfer, Tuple,
};

/// One tuple tree as the acker sees it.
#[derive(Debug, Default)]
struct Tree {
    /// XOR of the edge ids reported so far; 0 once every tuple is acked.
    value: u64,
    /// The spout task that rooted the tree, once its `Init` (or an `Adopt`) arrived.
    spout_task: Option<TaskId>,
    failed: bool,
    /// Whether an `Adopt` already XORed in the root, the sole copy's edge.
    adopted: bool,
}

/// An acker task. Trees not complete after two or three tick periods (one tick every
/// `topology.message.timeout.secs`) are forgotten; the spout times them out on its own clock.
pub struct Acker {
    task: TaskId,
    trees: RotatingMap<u64, Tree>,
}

impl Acker {
    fn handle(&mut self, message: AckerMessage, transfer: &mut dyn Transfer) {
        let root = message.root();
        if let AckerMessage::ResetTimeout { .. } = message {
            self.trees.touch(root);
            if let Some(spout) = self.trees.get_mut(&root).and_then(|t| t.spout_task) {
                transfer.notify_spout(spout, SpoutNotice::ResetTimeout(root));
            }
            return;
        }
        let tree = self.trees.get_or_insert_with(root, Tree::default);
        match message {
            AckerMessage::Init { value, spout_task, .. } => {
                tree.value ^= value;
                tree.spout_task = Some(spout_task);
            }
            AckerMessage::Ack { value, .. } => tree.value ^= value,
            AckerMessage::Adopt { value, spout_task, .. } => {
                if !tree.adopted {
                    tree.adopted = true;
                    tree.value ^= root;
                }
                tree.value ^= value;
                tree.spout_task = Some(spout_task);
            }
            AckerMessage::Fail { .. } => tree.failed = true,
            AckerMessage::ResetTimeout { .. } => {}
        }
        let Some(spout) = tree.spout_task else { return };
        let notice = if tree.failed {
            SpoutNotice::Failed(root)
        } else if tree.value == 0 {
            SpoutNotice::Acked(root)
        } else {
            return;
        };
        self.trees.remove(&root);
        transfer.notify_spout(spout, notice);
    }
}

impl ErasedBolt for Acker {
    fn prepare<'a>(&'a mut self, _ctx: &'a TopologyContext) -> BoxFuture<'a, Result<(), ComponentError>> {
        Box::pin(async { Ok(()) })
    }

    fn execute_batch<'a>(
        &'a mut self,
        tuples: &'a mut Vec<Tuple>,
        _transfer: &'a mut dyn Transfer,
        _polls: &'a Polls,
    ) -> BoxFuture<'a, BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        for tuple in tuples.drain(..) {
            outcome.executed += 1;
            if tuple.is_tick() {
                let expired = self.trees.rotate().count();
                if expired > 0 {
                    tracing::debug!(task = self.task, expired, "acker forgot trees that timed out");
                }
                continue;
            }
            tracing::warn!(task = self.task, ?tuple, "acker got a tuple; it takes only acking messages");
        }
        Box::pin(async move { outcome })
    }

    fn control(&mut self, messages: &mut Vec<Control>, transfer: &mut dyn Transfer) {
        for message in messages.drain(..) {
            match message {
                Control::Acker(message) => self.handle(message, transfer),
                Control::Notice(notice) => tracing::warn!(task = self.task, ?notice, "acker got a spout notice"),
            }
        }
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Makes acker tasks.
pub struct AckerFactory;

impl BoltFactory for AckerFactory {
    fn create(&self, task: TaskId) -> Box<dyn ErasedBolt> {
        // Three buckets: a tree is forgotten two to three timeouts after its last message.
        Box::new(Acker { task, trees: RotatingMap::new(3) })
    }

    fn declare_outputs(&self, _declarer: &mut OutputDeclarer) {}

    fn type_name(&self) -> &'static str {
        std::any::type_name::<Acker>()
    }
}
