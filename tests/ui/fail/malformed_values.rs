use squall::prelude::*;

#[derive(Tuple)]
#[squall(crate = squall)]
pub struct Word {
    #[squall(rename = word)]
    pub text: Str,
    #[squall(rename)]
    pub len: u32,
    #[squall(rename = "")]
    pub count: u32,
}

#[derive(Clone, Bolt)]
#[squall(output = "Word", stream = Word)]
#[squall(stream(a::b = Word, errors))]
#[squall(crate = "not a path")]
#[squall]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn main() {}
