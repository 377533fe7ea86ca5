//! What can go wrong reading or writing state.

/// A state operation that failed; nothing of a failed `multi_put` is half-applied per key.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backend could not be reached or refused the operation.
    #[error("state backend {backend} failed: {detail}; check that it is running and reachable")]
    Unavailable {
        /// Which backend: a path or an address.
        backend: String,
        /// What it said.
        detail: String,
    },
    /// A stored value does not decode as the state's type.
    #[error(
        "state `{state}` holds a value that does not decode ({detail}); was the state written with another value type or semantics?"
    )]
    Corrupt {
        /// The state's name.
        state: String,
        /// The decoder's message.
        detail: String,
    },
    /// A key or value does not encode.
    #[error("state `{state}`: cannot encode a key or value: {detail}")]
    Encode {
        /// The state's name.
        state: String,
        /// The encoder's message.
        detail: String,
    },
}

impl StateError {
    pub(crate) fn unavailable(backend: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        StateError::Unavailable { backend: backend.into(), detail: detail.to_string() }
    }
}
