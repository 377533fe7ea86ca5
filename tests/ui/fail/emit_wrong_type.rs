use squall::prelude::*;

#[derive(Tuple)]
pub struct Sentence {
    pub text: Str,
}

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
}

#[derive(Clone, Bolt)]
#[squall(output = Word)]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(&mut self, input: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let sentence: Sentence = input.to()?;
        out.emit(sentence)?;
        Ok(())
    }
}

fn main() {}
