//! Squall's derive macros (placeholder, being written).
use proc_macro::TokenStream;

/// Derives `TypedTuple`.
#[proc_macro_derive(Tuple, attributes(squall))]
pub fn derive_tuple(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Derives `Outputs` for a spout.
#[proc_macro_derive(Spout, attributes(squall))]
pub fn derive_spout(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Derives `Outputs` for a bolt.
#[proc_macro_derive(Bolt, attributes(squall))]
pub fn derive_bolt(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
