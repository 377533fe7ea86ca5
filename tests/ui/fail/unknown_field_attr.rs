use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    #[squall(bogus)]
    pub word: Str,
    #[squall(rename = "size", skip)]
    pub len: u32,
}

#[derive(Clone, Bolt)]
pub struct Sink {
    #[squall(rename = "x")]
    count: u64,
}

impl squall::Bolt for Sink {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn main() {}
