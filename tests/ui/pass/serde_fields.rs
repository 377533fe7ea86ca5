// Fields of any serde type, beside `IntoValue` ones, and typed fields grouping on them.
use std::collections::{BTreeMap, HashMap};

use squall::prelude::*;
use squall::ComponentError;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Address {
    pub street: String,
    pub zip: u32,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub enum Status {
    Open,
    Shipped { to: Address },
}

#[derive(Tuple, Clone, Debug, PartialEq)]
pub struct Order {
    pub id: u64,
    pub items: Vec<String>,
    pub address: Address,
    pub tags: HashMap<String, u64>,
    pub status: Status,
    pub history: Vec<Address>,
    pub by_zip: BTreeMap<u32, Vec<Address>>,
    pub maybe: Option<Address>,
    pub raw: Value,
    #[squall(rename = "bytes")]
    pub payload: Vec<u8>,
}

#[derive(Clone, Spout)]
#[squall(output = Order)]
struct Orders;

impl squall::Spout for Orders {
    type MsgId = ();
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        out.done();
        Ok(())
    }
}

#[derive(Clone, Bolt)]
struct Sink;

impl squall::Bolt for Sink {
    async fn execute(&mut self, input: Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let order: Order = input.to()?;
        let _ = order.address.zip;
        Ok(())
    }
}

fn main() {
    let mut b = TopologyBuilder::new();
    let orders = b.spout("orders", Orders, 1).handle();
    b.bolt("by_address", Sink, 2).fields_grouping_by(&orders, |o| o.address);
    b.bolt("by_tags", Sink, 2).fields_grouping_by(&orders, |o| o.tags);
    b.bolt("by_history", Sink, 2).fields_grouping_by(&orders, |o| o.history);
    b.build().unwrap();
}
