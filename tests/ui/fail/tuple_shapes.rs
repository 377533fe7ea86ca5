use squall::prelude::*;

#[derive(Tuple)]
pub struct Pair(Str, u32);

#[derive(Tuple)]
pub struct Unit;

#[derive(Tuple)]
pub struct Generic<T> {
    pub value: T,
}

fn main() {}
