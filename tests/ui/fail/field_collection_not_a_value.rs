use std::collections::HashMap;

use squall::prelude::*;

pub struct Position {
    pub x: f64,
}

/// A collection is a field type when its items are: these are neither `IntoValue` nor serde.
#[derive(Tuple)]
pub struct Fleet {
    pub names: Vec<Str>,
    pub positions: Vec<Position>,
    pub by_name: HashMap<String, Option<Position>>,
}

fn main() {}
