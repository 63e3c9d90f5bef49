//! Reading `#[replicated(...)]` and the parts of `#[sea_orm(...)]` the derive needs.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Attribute, LitStr, Token, Type, parenthesized};

/// `#[replicated(...)]` on the struct.
#[derive(Default)]
pub(crate) struct ModelAttrs {
    pub(crate) sync_key: Option<LitStr>,
    pub(crate) hooks: bool,
}

/// What the derive needs to know of one field.
pub(crate) struct FieldAttrs {
    pub(crate) skip: bool,
    /// `#[replicated(skip)]`, for an error that names it.
    pub(crate) skip_span: Option<Span>,
    /// Marked as no column by a `#[sea_orm(...)]` key: `ignore`, or a relation key.
    pub(crate) not_a_column: bool,
    pub(crate) column_name: Option<String>,
    pub(crate) enum_name: Option<String>,
}

pub(crate) fn model(attrs: &[Attribute]) -> syn::Result<ModelAttrs> {
    let mut out = ModelAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("replicated") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("sync_key") {
                    out.sync_key = Some(meta.value()?.parse()?);
                    Ok(())
                } else if meta.path.is_ident("hooks") {
                    out.hooks = true;
                    Ok(())
                } else if meta.path.is_ident("skip") {
                    Err(meta.error("`skip` goes on a field: `#[replicated(skip)] pub field: T`"))
                } else {
                    Err(meta.error(
                        "unknown `replicated` attribute; the struct takes `sync_key = \"column\"` and `hooks`",
                    ))
                }
            })?;
        }
    }
    Ok(out)
}

pub(crate) fn field(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs {
        skip: false,
        skip_span: None,
        not_a_column: false,
        column_name: None,
        enum_name: None,
    };
    for attr in attrs {
        if attr.path().is_ident("replicated") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    out.skip = true;
                    out.skip_span = Some(meta.path.span());
                    Ok(())
                } else if meta.path.is_ident("sync_key") {
                    Err(meta.error(
                        "`sync_key` goes on the struct: `#[replicated(sync_key = \"column\")]` above `pub struct Model`",
                    ))
                } else {
                    Err(meta.error("unknown `replicated` attribute; a field takes `skip`"))
                }
            })?;
        } else if attr.path().is_ident("sea_orm") {
            attr.parse_nested_meta(|meta| {
                let key = meta
                    .path
                    .get_ident()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                match key.as_str() {
                    "ignore" | "has_one" | "has_many" | "belongs_to" | "self_ref" => {
                        out.not_a_column = true;
                        skip_value(&meta)
                    }
                    "column_name" => {
                        out.column_name = Some(meta.value()?.parse::<LitStr>()?.value());
                        Ok(())
                    }
                    "enum_name" => {
                        out.enum_name = Some(meta.value()?.parse::<LitStr>()?.value());
                        Ok(())
                    }
                    _ => skip_value(&meta),
                }
            })?;
        }
    }
    Ok(out)
}

/// Whether `ty` is one of sea-orm's relation wrappers (`HasOne<_>`, `HasMany<_>`,
/// `BelongsTo<_>`). sea-orm decides by the last path segment alone: its attribute macros
/// move such fields out of `Model` into `ModelEx`, and its derives never treat them as
/// columns. Deciding the same way keeps the derive's columns equal to sea-orm's.
pub(crate) fn is_relation(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    path.path.segments.last().is_some_and(|segment| {
        matches!(
            segment.ident.to_string().as_str(),
            "HasOne" | "HasMany" | "BelongsTo"
        )
    })
}

/// Consumes whatever follows a key we do not read: `= value`, `(...)`, or nothing.
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

pub(crate) fn error(span: Span, message: &str) -> syn::Error {
    syn::Error::new(span, message)
}
