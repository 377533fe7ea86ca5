// The example of the macros' documentation compiles and its streams line up.
use squall::prelude::*;

#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Sentence {
    pub text: Str,
}

#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct Word {
    #[squall(rename = "word")]
    pub text: Str,
    pub len: u32,
}

#[derive(Tuple, Debug, Clone, PartialEq)]
pub struct ParseError {
    pub reason: String,
}

#[derive(Clone, Bolt)]
#[squall(output = Word, stream(errors = ParseError))]
#[squall(direct(commands = Word))]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(
        &mut self,
        input: squall::Tuple,
        out: &mut squall::BoltCollector<'_, Self>,
    ) -> Result<(), squall::ComponentError> {
        let s: Sentence = input.to()?;
        for w in s.text.split(' ') {
            out.emit(Word { text: Str::new(w), len: w.len() as u32 })?;
        }
        out.emit_on(Self::ERRORS, ParseError { reason: "x".into() })?;
        Ok(())
    }
}

#[derive(Clone, Spout)]
#[squall(output = Sentence)]
pub struct Lines;

impl squall::Spout for Lines {
    type MsgId = ();
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(Sentence { text: Str::new("the quick fox") })?;
        Ok(())
    }
}

#[derive(Clone, Bolt)]
pub struct Count;

impl squall::Bolt for Count {
    async fn execute(&mut self, input: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        let _word: Word = input.to()?;
        Ok(())
    }
}

fn main() {
    let mut builder = TopologyBuilder::new();
    let lines = builder.spout("lines", Lines, 1).handle();
    let split = builder.bolt("split", Split, 2).shuffle_grouping(&lines).handle();
    builder.bolt("count", Count, 2).fields_grouping_by(&split, |w| w.text);
    builder.bolt("errors", Count, 1).shuffle_grouping(split.stream(Split::ERRORS));
    let topology = builder.build().unwrap();
    let count = topology.component("count").unwrap();
    assert_eq!(count.inputs[0].grouping.fields(), ["word"]);
    assert_eq!(Split::ERRORS.index(), 1);
    assert_eq!(Split::COMMANDS.index(), 2);
}
