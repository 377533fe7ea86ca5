//! Components for the crate's unit tests.

use squall_topology::{
    Bolt, BoltCollector, ComponentError, NoOutput, OutputDeclarer, Outputs, Spout, SpoutCollector, Tuple,
};

/// A spout with a one-field `default` stream, a seven-field `all` stream and a one-field
/// direct stream `direct`; it emits nothing.
#[derive(Clone)]
pub(crate) struct Words;

impl Outputs for Words {
    type Default = NoOutput;
    fn declare_outputs(declarer: &mut OutputDeclarer) {
        declarer.declare_fields("default", &["word"], false);
        declarer.declare_fields("all", &["a", "b", "c", "d", "e", "f", "g"], false);
        declarer.declare_fields("direct", &["word"], true);
    }
}

impl Spout for Words {
    type MsgId = ();
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        out.done();
        Ok(())
    }
}

/// A bolt that drops what it receives.
#[derive(Clone)]
pub(crate) struct Sink;

impl Outputs for Sink {
    type Default = NoOutput;
    fn declare_outputs(_: &mut OutputDeclarer) {}
}

impl Bolt for Sink {
    async fn execute(&mut self, _: Tuple, _: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}
