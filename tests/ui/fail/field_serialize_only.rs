use squall::prelude::*;

/// Serializable but not deserializable: a tuple can carry it but not read it back.
#[derive(serde::Serialize)]
pub struct Position {
    pub x: f64,
}

#[derive(Tuple)]
pub struct Ship {
    pub name: Str,
    pub position: Position,
}

fn main() {}
