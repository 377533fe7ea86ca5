use squall::prelude::*;

pub struct Position {
    pub x: f64,
}

#[derive(Tuple)]
pub struct Ship {
    pub name: Str,
    pub position: Position,
}

fn main() {}
