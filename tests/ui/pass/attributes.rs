// Every attribute form: several attributes, direct default, generics, raw names, crate paths.
use squall::prelude::*;

mod facade {
    pub use ::squall as engine;
}

#[derive(Tuple, Clone)]
#[squall(crate = "facade::engine")]
struct Event {
    r#type: String,
    #[squall(rename = "at")]
    timestamp: u64,
    note: Option<String>,
}

#[derive(Tuple)]
struct Ack {}

#[derive(Clone, Spout)]
#[squall(direct(default = Event))]
#[squall(stream(r#type = Ack), direct(retries = Event))]
#[squall(crate = "::squall")]
struct Source;

impl squall::Spout for Source {
    type MsgId = u64;
    async fn next_tuple(&mut self, out: &mut SpoutCollector<'_, Self>) -> Result<(), ComponentError> {
        let event = || Event { r#type: "e".into(), timestamp: 1, note: None };
        out.emit_direct(1, Self::DEFAULT, event())?;
        out.emit_direct(2, Self::RETRIES, event())?;
        out.emit_on_with_id(Self::TYPE, Ack {}, 7)?;
        Ok(())
    }
}

#[derive(Clone, Bolt)]
#[squall(output = T)]
struct Forward<T: TypedTuple + Clone + Sync>(std::marker::PhantomData<T>);

impl<T: TypedTuple + Clone + Sync> squall::Bolt for Forward<T> {
    async fn execute(&mut self, input: squall::Tuple, out: &mut BoltCollector<'_, Self>) -> Result<(), ComponentError> {
        out.emit(input.to::<T>()?)?;
        Ok(())
    }
}

fn main() {
    assert_eq!(<Event as TypedTuple>::FIELDS, ["type", "at", "note"]);
    assert_eq!(Event::keys().timestamp.name(), "at");
    assert_eq!((Source::DEFAULT.index(), Source::TYPE.index(), Source::RETRIES.index()), (0, 1, 2));
    let _ = Forward::<Event>(std::marker::PhantomData);
}
