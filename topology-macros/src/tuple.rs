//! `#[derive(Tuple)]`: implements `TypedTuple` for a struct with named fields.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, FieldsNamed, Ident, LitStr, Type};

use crate::attr::{self, CratePath, Ctxt};

/// One field of the tuple.
struct TupleField<'a> {
    /// The Rust field name.
    ident: &'a Ident,
    ty: &'a Type,
    /// The tuple field name: the Rust name, or its `rename`.
    name: String,
    /// The `rename` literal, if any: where a duplicate name is reported.
    rename: Option<LitStr>,
}

/// Expands `#[derive(Tuple)]`.
pub(crate) fn expand(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::new();
    let krate = container_attrs(&mut cx, input);

    let Some(named) = named_fields(&mut cx, input) else {
        return cx.into_compile_errors();
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &input.generics,
            "#[derive(Tuple)] does not support generic structs: a tuple schema is a concrete type",
        );
        return cx.into_compile_errors();
    }

    let fields: Vec<TupleField<'_>> = named.named.iter().map(|f| tuple_field(&mut cx, f)).collect();
    check_duplicates(&mut cx, &input.ident, &fields);

    // Attribute errors do not stop the expansion: the impl is generated from what could be
    // understood, so the errors are not buried under "`Word: TypedTuple` is not satisfied".
    let generated = generate(input, &krate, &fields);
    let errors = cx.into_compile_errors();
    quote!(#generated #errors)
}

/// The named fields, or an error at the part of the item that is not a struct with named fields.
fn named_fields<'a>(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<&'a FieldsNamed> {
    let ident = &input.ident;
    let culprit = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => return Some(named),
            Fields::Unnamed(unnamed) => unnamed.to_token_stream(),
            Fields::Unit => {
                let struct_token = data.struct_token;
                quote!(#struct_token #ident)
            }
        },
        Data::Enum(data) => {
            let enum_token = data.enum_token;
            quote!(#enum_token #ident)
        }
        Data::Union(data) => {
            let union_token = data.union_token;
            quote!(#union_token #ident)
        }
    };
    cx.error_spanned_by(culprit, "#[derive(Tuple)] needs a struct with named fields");
    None
}

/// Reads the container attributes: only `crate`.
fn container_attrs(cx: &mut Ctxt, input: &DeriveInput) -> TokenStream {
    let mut krate = CratePath::new();
    attr::for_each_item(cx, &input.attrs, |_, meta| {
        if krate.parse_item(meta)? {
            return Ok(());
        }
        Err(attr::unknown_key(meta, "`crate`"))
    });
    krate.into_tokens()
}

/// Reads a field and its attributes: only `rename`.
fn tuple_field<'a>(cx: &mut Ctxt, field: &'a Field) -> TupleField<'a> {
    // Named fields always have an ident.
    let ident = field.ident.as_ref().expect("named field");
    let mut rename: Option<LitStr> = None;
    attr::for_each_item(cx, &field.attrs, |_, meta| {
        if !meta.path.is_ident("rename") {
            return Err(attr::unknown_key(meta, "`rename`"));
        }
        if rename.is_some() {
            return Err(syn::Error::new_spanned(&meta.path, "duplicate squall attribute `rename`"));
        }
        let lit = attr::string_value(meta, "\"name\"")?;
        if lit.value().is_empty() {
            return Err(syn::Error::new_spanned(&lit, "a tuple field name must not be empty"));
        }
        rename = Some(lit);
        Ok(())
    });
    let name = match &rename {
        Some(lit) => lit.value(),
        None => ident_name(ident),
    };
    TupleField { ident, ty: &field.ty, name, rename }
}

/// The name of an identifier without its `r#`.
fn ident_name(ident: &Ident) -> String {
    syn::ext::IdentExt::unraw(ident).to_string()
}

/// Reports every field whose name an earlier field already has, at the later field.
fn check_duplicates(cx: &mut Ctxt, tuple: &Ident, fields: &[TupleField<'_>]) {
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|earlier| earlier.name == field.name) {
            let message = format!("field `{}` is named twice in tuple `{tuple}`", field.name);
            match &field.rename {
                Some(lit) => cx.error_spanned_by(lit, message),
                None => cx.error_spanned_by(field.ident, message),
            }
        }
    }
}

/// The `<Name>Keys` struct and the `TypedTuple` impl.
fn generate(input: &DeriveInput, krate: &TokenStream, fields: &[TupleField<'_>]) -> TokenStream {
    let private = quote!(#krate::__private);
    let ident = &input.ident;
    let vis = &input.vis;
    let keys = format_ident!("{}Keys", ident);
    let keys_doc = format!("The field keys of [`{ident}`], for typed fields grouping.");

    let rust_names: Vec<&Ident> = fields.iter().map(|f| f.ident).collect();
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let indices = (0..fields.len()).map(Literal::usize_unsuffixed);

    // A field converts with `IntoValue`/`FromValue` if its type has them, through serde if not:
    // `value::derive_support` explains how the method calls below pick one. They are spanned at
    // the field type, so a type that is neither is reported there.
    let support = quote!(#private::value::derive_support);
    // (`self` and `values` are interpolated, so they keep the call site's hygiene. The path to
    // the support module takes the field type's span too: with a span of the macro's, rustc
    // would report the error at the derive.)
    let into_values = fields.iter().map(|f| {
        let (field, ty, name) = (f.ident, f.ty, &f.name);
        let support = respanned(&support, ty.span());
        let field = quote!(self.#field);
        let value = quote_spanned!(ty.span()=> #support::Write::<#ty>(#field).write_field(#name));
        quote!(#value)
    });
    // Up to `Values`' inline capacity (2) the values are written in place; past it, into one
    // exact allocation (`derive_support` has why).
    let values = match fields.len() {
        0 => quote!(#private::Values::new()),
        1 => quote!(#support::values1(#(#into_values),*)),
        2 => quote!(#support::values2(#(#into_values),*)),
        _ => quote!(#support::values([#(#into_values),*])),
    };

    let from_values = fields.iter().enumerate().map(|(i, f)| {
        let (field, ty, name) = (f.ident, f.ty, &f.name);
        let i = Literal::usize_unsuffixed(i);
        let support = respanned(&support, ty.span());
        let values = quote!(values);
        let read = quote_spanned!(ty.span()=> (&#support::Read::<#ty>::new()).read_field(#values, #i, #name)?);
        quote!(#field: #read,)
    });

    quote! {
        #[doc = #keys_doc]
        #[doc(hidden)]
        #[allow(missing_docs, dead_code)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #keys {
            #(pub #rust_names: #private::FieldKey<#ident>,)*
        }

        const _: () = {
            #[allow(unused_imports)]
            use #support::{ReadWithFromValue as _, ReadWithSerde as _, WriteWithIntoValue as _, WriteWithSerde as _};

            #[automatically_derived]
            impl #private::TypedTuple for #ident {
                const FIELDS: &'static [&'static str] = &[#(#names),*];

                type Keys = #keys;

                fn keys() -> #keys {
                    #keys {
                        #(#rust_names: #private::FieldKey::new(#indices, #names),)*
                    }
                }

                fn into_values(self) -> #private::Values {
                    #values
                }

                fn from_values(
                    values: &[#private::Value],
                ) -> ::core::result::Result<Self, #private::TupleError> {
                    #private::tuple::derive_support::check_arity::<Self>(values)?;
                    ::core::result::Result::Ok(#ident {
                        #(#from_values)*
                    })
                }
            }
        };
    }
}

/// The tokens (a path: no groups) with the span `span`.
fn respanned(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}
