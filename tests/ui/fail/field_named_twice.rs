use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
    #[squall(rename = "word")]
    pub text: Str,
    #[squall(rename = "len")]
    pub length: u32,
    pub len: u32,
}

fn main() {}
