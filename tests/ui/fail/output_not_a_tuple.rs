use squall::prelude::*;

#[derive(Clone, Bolt)]
#[squall(output = String, stream(errors = u64))]
pub struct Split;

impl squall::Bolt for Split {
    async fn execute(&mut self, _: squall::Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn main() {}
