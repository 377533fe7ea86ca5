use squall::prelude::*;

#[derive(Tuple)]
pub struct Word {
    pub word: Str,
}

#[derive(Clone, Bolt)]
#[squall(output = Word, bogus, outputs = std::collections::HashMap<u8, u8>, stream(errors = Word))]
#[squall(streams(errors = Word))]
pub struct Split;

// Only the attribute errors are reported: what could be read is generated, so the impl and its
// emits still type-check.
impl squall::Bolt for Split {
    async fn execute(&mut self, _: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(Word { word: Str::new("a") })?;
        out.emit_on(Self::ERRORS, Word { word: Str::new("b") })?;
        Ok(())
    }
}

#[derive(Tuple)]
#[squall(output = Word)]
pub struct NotAComponent {
    pub word: Str,
}

fn main() {}
