use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
}

#[derive(Clone, Bolt)]
#[squall(output = Word)]
pub struct Split;

#[derive(Clone, Spout)]
#[squall(output = Word)]
pub struct Source;

fn main() {}
