use squall::prelude::*;

#[derive(Tuple)]
pub enum Word {
    Short(Str),
    Long(Str),
}

fn main() {}
