//! What the derives share: the error collector, `#[squall(...)]` parsing helpers and the
//! `crate = "..."` override.

use std::fmt::Display;

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitStr, Path, Token};

/// The name of the helper attribute every derive reads.
pub(crate) const SQUALL: &str = "squall";

/// Collects the errors of one derive so they are all reported together, instead of one per
/// compile (the idea of serde_derive's `Ctxt`).
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    /// An empty collector.
    pub(crate) fn new() -> Self {
        Ctxt::default()
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn error_spanned_by(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records an error that syn produced.
    pub(crate) fn syn_error(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// The recorded errors as `compile_error!` invocations, each at its own span.
    pub(crate) fn into_compile_errors(self) -> TokenStream {
        self.errors.iter().map(syn::Error::to_compile_error).collect()
    }
}

/// Calls `f` once per `key = value` / `key(...)` item of every `#[squall(...)]` attribute in
/// `attrs`. An error returned by `f` (or a malformed attribute) is recorded and the rest of that
/// item skipped, so the following items are still checked.
pub(crate) fn for_each_item(
    cx: &mut Ctxt,
    attrs: &[Attribute],
    mut f: impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    for attr in attrs.iter().filter(|a| a.path().is_ident(SQUALL)) {
        nested_items(cx, attr, &mut f);
    }
}

fn nested_items(
    cx: &mut Ctxt,
    attr: &Attribute,
    f: &mut impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    if attr.meta.require_list().is_err() {
        cx.error_spanned_by(attr, "expected attribute arguments in parentheses: `#[squall(...)]`");
        return;
    }
    let result = attr.parse_nested_meta(|meta| {
        if let Err(error) = f(cx, &meta) {
            cx.syn_error(error);
            skip_rest(&meta)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        cx.syn_error(error);
    }
}

/// Like [`for_each_item`] for the items inside `key(...)`.
pub(crate) fn for_each_nested_item(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    mut f: impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    meta.parse_nested_meta(|inner| {
        if let Err(error) = f(cx, &inner) {
            cx.syn_error(error);
            skip_rest(&inner)?;
        }
        Ok(())
    })
}

/// Skips what is left of one item after an error: tokens up to the next top-level comma (a
/// comma inside `<...>` belongs to a type and is skipped too).
fn skip_rest(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    let input = meta.input;
    let mut depth = 0usize;
    let at_end = |depth: usize| input.is_empty() || (depth == 0 && input.peek(Token![,]));
    while !at_end(depth) {
        match input.parse::<TokenTree>()? {
            TokenTree::Punct(p) if p.as_char() == '<' => depth += 1,
            TokenTree::Punct(p) if p.as_char() == '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The key of an item as written, for messages: `bogus`, `a::b`.
pub(crate) fn key_name(meta: &ParseNestedMeta<'_>) -> String {
    meta.path.to_token_stream().to_string().replace(' ', "")
}

/// The error for a key the derive does not know, listing the ones it does.
pub(crate) fn unknown_key(meta: &ParseNestedMeta<'_>, expected: &str) -> syn::Error {
    syn::Error::new_spanned(&meta.path, format!("unknown squall attribute `{}`; expected {expected}", key_name(meta)))
}

/// Parses the `= "value"` of a string-valued item, with a message showing the expected form.
pub(crate) fn string_value(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<LitStr> {
    let key = key_name(meta);
    let expected = || format!("expected a string: `{key} = {example}`");
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(expected()));
    }
    let value = meta.value()?;
    value.parse::<LitStr>().map_err(|error| syn::Error::new(error.span(), expected()))
}

/// The path generated code names the facade crate by: `::squall` unless overridden with
/// `#[squall(crate = "some::path")]`.
pub(crate) struct CratePath {
    path: Option<Path>,
    /// The `crate` key of the first override, to report a second one.
    seen: bool,
}

impl CratePath {
    /// No override yet.
    pub(crate) fn new() -> Self {
        CratePath { path: None, seen: false }
    }

    /// Handles the item if it is `crate = ...`; returns whether it was.
    pub(crate) fn parse_item(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<bool> {
        if !meta.path.is_ident("crate") {
            return Ok(false);
        }
        if self.seen {
            return Err(syn::Error::new_spanned(&meta.path, "duplicate squall attribute `crate`"));
        }
        self.seen = true;
        let lit = string_value(meta, "\"path::to::squall\"")?;
        let path = lit
            .parse::<Path>()
            .map_err(|_| syn::Error::new_spanned(&lit, format!("`{}` is not a path, e.g. `::squall`", lit.value())))?;
        self.path = Some(path);
        Ok(true)
    }

    /// The path to use.
    pub(crate) fn into_tokens(self) -> TokenStream {
        match self.path {
            Some(path) => path.into_token_stream(),
            None => quote!(::squall),
        }
    }
}

/// Reports `#[squall(...)]` attributes where no derive reads them.
pub(crate) fn reject_attrs(cx: &mut Ctxt, attrs: &[Attribute], message: &str) {
    for attr in attrs.iter().filter(|a| a.path().is_ident(SQUALL)) {
        cx.error_spanned_by(attr, message);
    }
}
