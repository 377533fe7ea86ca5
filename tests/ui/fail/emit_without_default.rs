use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
}

#[derive(Clone, Bolt)]
#[squall(stream(words = Word))]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(&mut self, _: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(Word { word: Str::new("a") })?;
        Ok(())
    }
}

fn main() {}
