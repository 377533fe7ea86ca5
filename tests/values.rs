//! Rich values end to end: typed tuples with lists, maps and nested serde structs through a
//! topology, fields grouping on such keys, in one process and across two workers over TCP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall::prelude::*;
use squall::{ComponentError, TaskId};
use squall_tests::{Log, Recorder, lock, run_to_completion};
use squall_worker::{RunningTopology, TopologyStatus, WorkerPlan};
use tokio::net::TcpListener;

// --- An order with collections and nested serde structs -----------------------------------------

/// A city: a serde struct nested in another.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
struct City {
    name: String,
    zip: u32,
}

/// Where an order goes: a serde struct, not `IntoValue`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
struct Address {
    street: String,
    number: i64,
    city: City,
    floors: Vec<u8>,
}

/// An order: scalars, a `Vec`, a `HashMap` and a nested serde struct.
#[derive(Tuple, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    items: Vec<String>,
    tags: HashMap<String, u64>,
    address: Address,
}

const ORDERS: u64 = 3_000;
const ADDRESSES: u64 = 40;

fn address(n: u64) -> Address {
    Address {
        street: format!("street {}", n % 7),
        number: n as i64 - 20,
        city: City { name: format!("city {}", n % 3), zip: 10_000 + n as u32 },
        floors: (0..(n % 4) as u8).collect(),
    }
}

/// Order `id`, the same wherever it is built.
fn order(id: u64) -> Order {
    let items: Vec<String> = (0..id % 5).map(|i| format!("item {}", (id + i) % 11)).collect();
    // Inserted in an order that depends on the id: the map's value must not.
    let mut tags = HashMap::new();
    for (i, item) in items.iter().enumerate().rev() {
        tags.insert(item.clone(), id * 10 + i as u64);
    }
    Order { id, items, tags, address: address(id % ADDRESSES) }
}

/// Emits orders `0..ORDERS` (of its task index's share), then is done.
#[derive(Clone, Spout)]
#[squall(output = Order)]
struct Orders {
    next: u64,
    step: u64,
}

impl Orders {
    fn new() -> Self {
        Orders { next: 0, step: 1 }
    }
}

impl Spout for Orders {
    type MsgId = ();

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.next = ctx.task_index() as u64;
        self.step = ctx.this_component_tasks().len() as u64;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next >= ORDERS {
            out.done();
            return Ok(());
        }
        out.emit(order(self.next))?;
        self.next += self.step;
        Ok(())
    }
}

/// Which task saw which address, from which task.
type Routes = Arc<Mutex<Vec<(TaskId, Address, TaskId)>>>;

/// Fields-grouped on the address: notes its task and the address, and passes the order on.
#[derive(Clone, Bolt)]
#[squall(output = Order)]
struct Route {
    routes: Routes,
    task: TaskId,
}

impl Bolt for Route {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), ComponentError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let order: Order = input.to()?;
        lock(&self.routes).push((self.task, order.address.clone(), input.source_task()));
        out.emit(order)?;
        Ok(())
    }
}

fn order_topology(routes: &Routes, log: &Log, spouts: u32) -> Topology {
    let mut b = TopologyBuilder::new();
    b.config_mut().set("topology.acker.executors", 0).unwrap();
    let orders = b.spout("orders", Orders::new(), spouts).handle();
    let route = b
        .bolt("route", Route { routes: routes.clone(), task: 0 }, 2)
        .tasks(4)
        .fields_grouping_by(&orders, |o| o.address)
        .handle();
    b.bolt("sink", Recorder::new(log), 2).shuffle_grouping(&route);
    b.build().unwrap()
}

/// Every order arrived once and intact, and each address at exactly one route task.
fn check_orders(routes: &Routes, log: &Log) -> HashSet<TaskId> {
    let mut received: Vec<Order> = lock(log).iter().map(|r| r.tuple.to::<Order>().expect("an order")).collect();
    assert_eq!(received.len() as u64, ORDERS);
    received.sort_by_key(|o| o.id);
    for (id, got) in (0..ORDERS).zip(&received) {
        assert_eq!(got, &order(id));
    }

    let routes = lock(routes);
    assert_eq!(routes.len() as u64, ORDERS);
    let mut tasks_of: HashMap<&Address, HashSet<TaskId>> = HashMap::new();
    for (task, address, _) in routes.iter() {
        tasks_of.entry(address).or_default().insert(*task);
    }
    assert_eq!(tasks_of.len() as u64, ADDRESSES);
    for (address, tasks) in &tasks_of {
        assert_eq!(tasks.len(), 1, "{address:?} went to tasks {tasks:?}");
    }
    tasks_of.into_values().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_with_collections_and_nested_structs_arrive_intact_grouped_by_address() {
    let (routes, log) = (Routes::default(), Log::default());
    let topology = order_topology(&routes, &log, 1);
    run_to_completion(&topology).await;
    let used = check_orders(&routes, &log);
    assert_eq!(used.len(), 4, "40 addresses over all 4 route tasks: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_cross_the_wire_between_two_workers_intact_and_grouped_alike() {
    let (routes, log) = (Routes::default(), Log::default());
    // Tasks: orders 1-2, route 3-6, sink 7-8; odd tasks on worker 0, even on worker 1. Each
    // spout task's orders are routed to tasks on both workers, so they cross the wire both ways.
    let topology = order_topology(&routes, &log, 2);
    let count = topology.layout().task_count() as TaskId;
    assert_eq!(count, 8);
    let mut listeners = Vec::new();
    for _ in 0..2 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let worker_of = |task: TaskId| (task % 2) as usize;
    let mut workers: Vec<RunningTopology> = listeners
        .into_iter()
        .enumerate()
        .map(|(w, listener)| {
            let plan = WorkerPlan {
                topology_id: "orders-1".to_owned(),
                local_tasks: (1..=count).filter(|t| worker_of(*t) == w).collect(),
                remote: (1..=count).filter(|t| worker_of(*t) != w).map(|t| (t, addrs[worker_of(t)])).collect(),
                listener,
                advertised_addr: Some(addrs[w]),
                store: None,
            };
            // Each worker builds its own copy of the topology, as a worker process would.
            let topology = order_topology(&routes, &log, 2);
            RunningTopology::launch_worker("orders", &topology, TopologyStatus::Active, plan).expect("valid plan")
        })
        .collect();
    for (w, worker) in workers.iter_mut().enumerate() {
        assert!(worker.join(Duration::from_secs(120)).await, "worker {w} did not finish: {:?}", worker.unfinished());
    }
    for worker in workers {
        let (failures, aborted) = worker.finish().await;
        assert!(failures.is_empty(), "{failures:?}");
        assert!(aborted.is_empty(), "{aborted:?}");
    }
    let used = check_orders(&routes, &log);
    assert_eq!(used, HashSet::from([3, 4, 5, 6]));
    // Orders crossed the wire from spout to route tasks, in both directions, and from route to
    // sink tasks.
    let crossed: HashSet<(usize, usize)> = lock(&routes)
        .iter()
        .map(|(task, _, source)| (worker_of(*source), worker_of(*task)))
        .filter(|(from, to)| from != to)
        .collect();
    assert_eq!(crossed, HashSet::from([(0, 1), (1, 0)]));
    assert!(lock(&log).iter().any(|r| worker_of(r.tuple.source_task()) != worker_of(r.task)));
}

// --- Fields grouping on list and map keys -------------------------------------------------------

/// A tuple keyed by a map (built in a different insertion order each time) and by a list.
#[derive(Tuple, Debug, Clone)]
struct MapKeyed {
    key: HashMap<String, u64>,
    list: Vec<Value>,
    seq: u64,
}

const KEYED: u64 = 12_000;
const KEYS: u64 = 60;

/// Emits `KEYED` tuples over `KEYS` keys.
#[derive(Clone, Spout)]
#[squall(output = MapKeyed)]
struct MapKeys {
    next: u64,
}

impl Spout for MapKeys {
    type MsgId = ();

    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        if self.next == KEYED {
            out.done();
            return Ok(());
        }
        let (seq, k) = (self.next, self.next % KEYS);
        self.next += 1;
        // The same key's entries, inserted forwards or backwards.
        let entries: Vec<(String, u64)> = (0..=k % 5).map(|i| (format!("f{i}"), k + i)).collect();
        let key: HashMap<String, u64> =
            if seq % 2 == 0 { entries.into_iter().collect() } else { entries.into_iter().rev().collect() };
        let list = vec![Value::from(k % 3), Value::list([k, k + 1]), Value::map([("k", k)])];
        out.emit(MapKeyed { key, list, seq })?;
        Ok(())
    }
}

/// Groups `log` by the value of `field`: the tasks each key went to and how many tuples it had.
fn tasks_by_key(log: &Log, field: &str) -> BTreeMap<Value, (HashSet<TaskId>, u64)> {
    let mut by_key: BTreeMap<Value, (HashSet<TaskId>, u64)> = BTreeMap::new();
    for r in lock(log).iter() {
        let entry = by_key.entry(r.tuple.get_by_field(field).unwrap().clone()).or_default();
        entry.0.insert(r.task);
        entry.1 += 1;
    }
    by_key
}

fn check_grouped(log: &Log, field: &str, tasks: usize) {
    let mut seqs: Vec<u64> = lock(log).iter().map(|r| r.tuple.get_field_as::<u64>("seq").unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..KEYED).collect::<Vec<_>>(), "every tuple arrives exactly once");
    let by_key = tasks_by_key(log, field);
    assert_eq!(by_key.len() as u64, KEYS);
    for (key, (key_tasks, count)) in &by_key {
        assert_eq!(key_tasks.len(), 1, "{key} reached tasks {key_tasks:?}");
        assert_eq!(*count, KEYED / KEYS, "{key}");
    }
    let used: HashSet<TaskId> = by_key.values().flat_map(|(t, _)| t.iter().copied()).collect();
    assert_eq!(used.len(), tasks, "{KEYS} keys over all {tasks} tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_grouping_on_a_map_key_sends_equal_maps_to_one_task() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    b.spout("keys", MapKeys { next: 0 }, 1);
    b.bolt("sink", Recorder::new(&log), 4).fields_grouping("keys", ["key"]);
    run_to_completion(&b.build().unwrap()).await;
    check_grouped(&log, "key", 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_fields_grouping_on_a_list_key_sends_equal_lists_to_one_task() {
    let log = Log::default();
    let mut b = TopologyBuilder::new();
    let keys = b.spout("keys", MapKeys { next: 0 }, 1).handle();
    b.bolt("sink", Recorder::new(&log), 3).fields_grouping_by(&keys, |k| k.list);
    run_to_completion(&b.build().unwrap()).await;
    check_grouped(&log, "list", 3);
}
