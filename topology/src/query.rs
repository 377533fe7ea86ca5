//! [`QueryableState`]: a state a topology keeps (Trident's map states) that can be read while
//! the topology runs, from outside it (`squall query`), as Trident's DRPC is used without a
//! DRPC server.

/// Reads a state's current values by key.
#[async_trait::async_trait]
pub trait QueryableState: Send + Sync + std::fmt::Debug + 'static {
    /// The current value of each key (a key is the values of the state's key fields), in order;
    /// `None` for a key it does not have. The error says what could not be read.
    async fn query(&self, keys: &[Vec<crate::Value>]) -> Result<Vec<Option<crate::Value>>, String>;
}
