use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
}

#[derive(Tuple)]
pub struct ParseError {
    pub reason: String,
}

#[derive(Clone, Bolt)]
#[squall(output = Word, stream(errors = ParseError))]
#[squall(stream(errors = ParseError), direct(errors = Word))]
#[squall(stream(default = Word), direct(default = Word))]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[derive(Clone, Spout)]
#[squall(direct(default = Word), output = Word)]
pub struct Source;

impl squall::Spout for Source {
    type MsgId = ();
    async fn next_tuple(&mut self, _: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[derive(Clone, Bolt)]
#[squall(stream(parseErrors = ParseError, parse_errors = ParseError))]
pub struct Parse;

impl squall::Bolt for Parse {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn main() {}
