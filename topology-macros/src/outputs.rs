//! `#[derive(Spout)]` and `#[derive(Bolt)]`: implement `Outputs` from the container's
//! `#[squall(...)]` attributes and give every named stream a typed constant.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{Data, DeriveInput, Ident, Token, Type};

use crate::attr::{self, CratePath, Ctxt};

/// The name of the default stream.
const DEFAULT_STREAM: &str = "default";

/// Which trait the component must also implement.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// `#[derive(Spout)]`.
    Spout,
    /// `#[derive(Bolt)]`.
    Bolt,
}

impl Kind {
    fn trait_name(self) -> &'static str {
        match self {
            Kind::Spout => "Spout",
            Kind::Bolt => "Bolt",
        }
    }
}

/// One declared stream.
struct OutputStream {
    /// The stream's id.
    name: String,
    /// Where it was declared: the name in `stream(name = T)`, or `output`. Duplicates are
    /// reported here and the generated constant is spanned here.
    span_tokens: TokenStream,
    span: Span,
    /// The typed tuple it carries.
    ty: Type,
    direct: bool,
}

impl OutputStream {
    fn is_default(&self) -> bool {
        self.name == DEFAULT_STREAM
    }
}

/// Expands `#[derive(Spout)]` or `#[derive(Bolt)]`.
pub(crate) fn expand(input: &DeriveInput, kind: Kind) -> TokenStream {
    let mut cx = Ctxt::new();
    let mut krate = CratePath::new();
    let mut streams: Vec<OutputStream> = Vec::new();

    attr::for_each_item(&mut cx, &input.attrs, |cx, meta| {
        if krate.parse_item(meta)? {
            return Ok(());
        }
        if meta.path.is_ident("output") {
            let ty = type_value(meta, "output = MyTuple")?;
            let path = &meta.path;
            add_stream(cx, &mut streams, DEFAULT_STREAM.to_owned(), quote!(#path), ty, false);
            return Ok(());
        }
        let direct = meta.path.is_ident("direct");
        if direct || meta.path.is_ident("stream") {
            return stream_list(cx, &mut streams, meta, direct);
        }
        Err(attr::unknown_key(meta, "`output`, `stream`, `direct` or `crate`"))
    });
    reject_field_attrs(&mut cx, input, kind);

    let consts = stream_consts(&mut cx, &streams);
    let generated = generate(input, kind, &krate.into_tokens(), &streams, consts);
    let errors = cx.into_compile_errors();
    quote!(#generated #errors)
}

/// Parses `= Type`, with a message showing the expected form.
fn type_value(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<Type> {
    let expected = || format!("expected a tuple type: `{example}`");
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(expected()));
    }
    let value = meta.value()?;
    value.parse::<Type>().map_err(|error| syn::Error::new(error.span(), expected()))
}

/// Parses `stream(name = T, ...)` or `direct(name = T, ...)`.
fn stream_list(
    cx: &mut Ctxt,
    streams: &mut Vec<OutputStream>,
    meta: &ParseNestedMeta<'_>,
    direct: bool,
) -> syn::Result<()> {
    let key = attr::key_name(meta);
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error(format!("expected a list of streams: `{key}(name = MyTuple, ...)`")));
    }
    attr::for_each_nested_item(cx, meta, |cx, inner| {
        let Some(ident) = inner.path.get_ident() else {
            return Err(syn::Error::new_spanned(&inner.path, "a stream name must be an identifier, e.g. `errors`"));
        };
        let name = ident.unraw().to_string();
        let ty = type_value(inner, &format!("{key}({name} = MyTuple)"))?;
        add_stream(cx, streams, name, ident.to_token_stream(), ty, direct);
        Ok(())
    })
}

/// Adds a stream unless one of that name is already declared.
fn add_stream(
    cx: &mut Ctxt,
    streams: &mut Vec<OutputStream>,
    name: String,
    span_tokens: TokenStream,
    ty: Type,
    direct: bool,
) {
    if streams.iter().any(|s| s.name == name) {
        cx.error_spanned_by(span_tokens, format!("stream `{name}` is declared twice"));
        return;
    }
    let span = span_tokens.clone().into_iter().next().map_or_else(Span::call_site, |t| t.span());
    streams.push(OutputStream { name, span_tokens, span, ty, direct });
}

/// `#[squall]` on a field of a component does nothing: say so rather than ignore it.
fn reject_field_attrs(cx: &mut Ctxt, input: &DeriveInput, kind: Kind) {
    let message = format!("#[derive({})] reads `#[squall(...)]` on the struct only, not on fields", kind.trait_name());
    match &input.data {
        Data::Struct(data) => data.fields.iter().for_each(|f| attr::reject_attrs(cx, &f.attrs, &message)),
        Data::Enum(data) => data.variants.iter().for_each(|v| {
            attr::reject_attrs(cx, &v.attrs, &message);
            v.fields.iter().for_each(|f| attr::reject_attrs(cx, &f.attrs, &message));
        }),
        Data::Union(data) => data.fields.named.iter().for_each(|f| attr::reject_attrs(cx, &f.attrs, &message)),
    }
}

/// The name of a stream's constant: SCREAMING_SNAKE_CASE of the stream name.
fn const_name(stream: &str) -> String {
    let chars: Vec<char> = stream.chars().collect();
    let mut out = String::with_capacity(stream.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_is_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// One generated stream constant.
struct StreamConst<'a> {
    ident: Ident,
    decl: &'a OutputStream,
    index: u16,
}

/// The constants of the named streams and of a direct default stream, with their indices: the
/// default stream is 0, named streams 1, 2, … in declaration order (the rule of
/// `OutputDeclarer`). Two streams whose constants would have the same name are an error.
fn stream_consts<'a>(cx: &mut Ctxt, streams: &'a [OutputStream]) -> Vec<StreamConst<'a>> {
    let mut consts: Vec<StreamConst<'a>> = Vec::new();
    let named = streams.iter().filter(|s| !s.is_default());
    let indexed = streams.iter().filter(|s| s.is_default()).map(|s| (s, 0)).chain(named.zip(1u16..));
    for (decl, index) in indexed {
        if decl.is_default() && !decl.direct {
            continue;
        }
        let name = const_name(&decl.name);
        if syn::parse_str::<Ident>(&name).is_err() {
            cx.error_spanned_by(&decl.span_tokens, format!("stream `{}` has no constant name", decl.name));
            continue;
        }
        if let Some(other) = consts.iter().find(|c| c.ident == name) {
            cx.error_spanned_by(
                &decl.span_tokens,
                format!(
                    "streams `{}` and `{}` would both have the constant `{name}`; rename one",
                    other.decl.name, decl.name
                ),
            );
            continue;
        }
        consts.push(StreamConst { ident: Ident::new(&name, decl.span), decl, index });
    }
    consts
}

/// The `Outputs` impl, the stream constants and the trait assertion.
fn generate(
    input: &DeriveInput,
    kind: Kind,
    krate: &TokenStream,
    streams: &[OutputStream],
    consts: Vec<StreamConst<'_>>,
) -> TokenStream {
    let private = quote!(#krate::__private);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    let default = streams.iter().find(|s| s.is_default());
    let default_ty = match default {
        Some(OutputStream { ty, direct: false, .. }) => ty.to_token_stream(),
        _ => quote!(#private::NoOutput),
    };

    // The default stream first, then the named ones in order: the indices of the constants.
    let declared = default.into_iter().chain(streams.iter().filter(|s| !s.is_default()));
    let declarations: Vec<TokenStream> = declared
        .map(|s| {
            let OutputStream { name, ty, direct, .. } = s;
            quote!(declarer.declare::<#ty>(#name, #direct);)
        })
        .collect();
    let declarer = if declarations.is_empty() { quote!(_declarer) } else { quote!(declarer) };

    let const_items = consts.iter().map(|c| {
        let StreamConst { ident: const_ident, decl, index } = c;
        let (name, ty) = (&decl.name, &decl.ty);
        let index_lit = Literal::u16_unsuffixed(*index);
        let (handle, doc) = if decl.direct {
            let doc = format!("The direct `{name}` stream (index {index}): emit on it with `emit_direct`.");
            (quote!(DirectStream), doc)
        } else {
            (quote!(Stream), format!("The `{name}` stream (index {index}): emit on it with `emit_on`."))
        };
        quote! {
            #[doc = #doc]
            pub const #const_ident: #private::#handle<Self, #ty> = #private::#handle::new(#name, #index_lit);
        }
    });
    let inherent = if consts.is_empty() {
        quote!()
    } else {
        quote! {
            #[automatically_derived]
            impl #impl_generics #ident #ty_generics #where_clause {
                #(#const_items)*
            }
        }
    };

    // `#[derive(Bolt)]` without `impl Bolt` is an error here, at the struct's name, rather than
    // where the builder is used. A generic component may implement the trait under extra bounds
    // only, so it gets no assertion.
    let assertion = if input.generics.params.is_empty() {
        let trait_ident = Ident::new(kind.trait_name(), Span::call_site());
        let assert_fn = Ident::new(&format!("must_implement_{}", kind.trait_name().to_lowercase()), Span::call_site());
        quote! {
            fn #assert_fn<T: ?::core::marker::Sized + #private::#trait_ident>() {}
            let _ = #assert_fn::<#ident>;
        }
    } else {
        quote!()
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Outputs for #ident #ty_generics #where_clause {
                type Default = #default_ty;

                fn declare_outputs(#declarer: &mut #private::OutputDeclarer) {
                    #(#declarations)*
                }
            }

            #inherent

            #assertion
        };
    }
}

#[cfg(test)]
mod tests {
    use super::const_name;

    #[test]
    fn const_names_are_screaming_snake_case() {
        assert_eq!(const_name("errors"), "ERRORS");
        assert_eq!(const_name("parse_errors"), "PARSE_ERRORS");
        assert_eq!(const_name("parseErrors"), "PARSE_ERRORS");
        assert_eq!(const_name("HTTPErrors"), "HTTP_ERRORS");
        assert_eq!(const_name("v2Out"), "V2_OUT");
        assert_eq!(const_name("default"), "DEFAULT");
    }
}
