//! The code `#[derive(Replicated)]` generates.

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Field, Fields, Token};

use crate::attributes::{self, error};

struct Column {
    /// The SQL column name.
    name: String,
    /// The variant of the entity's `Column` enum.
    variant: syn::Ident,
    skip: bool,
    ty: syn::Type,
}

/// Where the derive goes, the opening of every refusal of a struct it cannot take.
const WHERE: &str = "#[derive(Replicated)] goes on the `Model` struct of a sea-orm entity, \
                     beside #[derive(DeriveEntityModel)] (or #[derive(DeriveModel)] in the expanded format)";

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let fields = named_fields(&input)?;
    if input.ident == "ModelEx" {
        return model_ex(fields);
    }
    if input.ident != "Model" {
        return Err(error(
            input.ident.span(),
            &format!("{WHERE}; this struct is `{}`", input.ident),
        ));
    }
    let model = attributes::model(&input.attrs)?;
    let columns = columns(fields)?;
    let sync_key = sync_key(model.sync_key.as_ref(), &columns)?;
    Ok(tokens(&model, &columns, &sync_key))
}

/// The named fields of the struct the derive is on, or why it cannot take it.
fn named_fields(input: &DeriveInput) -> syn::Result<&Punctuated<Field, Token![,]>> {
    match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Ok(&named.named),
            _ => Err(error(
                input.ident.span(),
                &format!("{WHERE}; `{}` has no named fields", input.ident),
            )),
        },
        Data::Enum(_) => Err(error(
            input.ident.span(),
            &format!("{WHERE}; `{}` is an enum", input.ident),
        )),
        Data::Union(_) => Err(error(
            input.ident.span(),
            &format!("{WHERE}; `{}` is a union", input.ident),
        )),
    }
}

/// The entity's columns, in field order: relation fields and fields sea-orm does not treat
/// as columns left out, with a refusal of `#[replicated(skip)]` on either.
fn columns(fields: &Punctuated<Field, Token![,]>) -> syn::Result<Vec<Column>> {
    let mut columns = Vec::new();
    for field in fields {
        let attrs = attributes::field(&field.attrs)?;
        let Some(ident) = &field.ident else { continue };
        if attributes::is_relation(&field.ty) {
            refuse_skip_on_relation(ident, &attrs)?;
            continue;
        }
        if attrs.not_a_column {
            if let Some(span) = attrs.skip_span {
                return Err(error(
                    span,
                    &format!(
                        "`#[replicated(skip)]` on `{ident}`, which sea-orm does not treat as a column \
                         (`#[sea_orm(ignore)]` or a relation key), so nothing of it is captured and \
                         there is nothing to skip: remove `#[replicated(skip)]`"
                    ),
                ));
            }
            continue;
        }
        let field_name = ident.to_string().trim_start_matches("r#").to_string();
        let variant_name = attrs.enum_name.clone().unwrap_or_else(|| {
            // sea-orm's own naming of the `Column` variant, `Self` escaped included.
            let name = field_name.to_upper_camel_case();
            if name == "Self" {
                "Self_".to_string()
            } else {
                name
            }
        });
        columns.push(Column {
            name: attrs.column_name.unwrap_or(field_name),
            variant: format_ident!("{}", variant_name, span = ident.span()),
            skip: attrs.skip,
            ty: field.ty.clone(),
        });
    }
    Ok(columns)
}

/// `Replicated::sync_key`'s body: the column `sync_key = "…"` names, which must exist and
/// be shipped.
fn sync_key(named: Option<&syn::LitStr>, columns: &[Column]) -> syn::Result<TokenStream> {
    let Some(lit) = named else {
        return Ok(quote!(::std::option::Option::None));
    };
    let wanted = lit.value();
    let column = columns
        .iter()
        .find(|c| c.name == wanted || c.variant == wanted.to_upper_camel_case())
        .ok_or_else(|| {
            let known: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            error(
                lit.span(),
                &format!(
                    "`sync_key = \"{wanted}\"` names no column of this Model; name one of: {}",
                    known.join(", ")
                ),
            )
        })?;
    if column.skip {
        return Err(error(
            lit.span(),
            &format!(
                "the sync key `{wanted}` is marked `#[replicated(skip)]`, but a sync key must be \
                 shipped: remove `#[replicated(skip)]` from it or name another column"
            ),
        ));
    }
    let v = &column.variant;
    Ok(quote!(::std::option::Option::Some(Column::#v)))
}

/// The `Replicated` impl and the entity's `ActiveModelBehavior`, whose hooks capture.
fn tokens(
    model: &attributes::ModelAttrs,
    columns: &[Column],
    sync_key: &TokenStream,
) -> TokenStream {
    let skipped: Vec<&syn::Ident> = columns
        .iter()
        .filter(|c| c.skip)
        .map(|c| &c.variant)
        .collect();

    let orm = quote!(::ormsync::__private::sea_orm);
    let typed: Vec<TokenStream> = columns
        .iter()
        .map(|c| {
            let (v, ty) = (&c.variant, &c.ty);
            quote!((Column::#v, <#ty as #orm::sea_query::ValueType>::array_type()))
        })
        .collect();
    // With `#[replicated(hooks)]` the hooks are called by name, so a missing
    // `impl ReplicatedHooks` is a compile error; without it they run when implemented.
    let (hooks, probe) = if model.hooks {
        (
            quote!(<ActiveModel as ::ormsync::ReplicatedHooks>),
            TokenStream::new(),
        )
    } else {
        (
            quote!((&HooksOf::<ActiveModel>(::std::marker::PhantomData))),
            hooks_probe(&orm),
        )
    };
    let (new_hook, before_save, after_save, before_delete, after_delete) = if model.hooks {
        (
            quote!(#hooks::new()),
            quote!(#hooks::before_save(self, db, insert)),
            quote!(#hooks::after_save(model, db, insert)),
            quote!(#hooks::before_delete(self, db)),
            quote!(#hooks::after_delete(self, db)),
        )
    } else {
        (
            quote!(#hooks.new_active()),
            quote!(#hooks.before_save(self, db, insert)),
            quote!(#hooks.after_save(model, db, insert)),
            quote!(#hooks.before_delete(self, db)),
            quote!(#hooks.after_delete(self, db)),
        )
    };

    quote! {
        #[automatically_derived]
        impl ::ormsync::Replicated for Entity {
            fn skipped_columns() -> ::std::vec::Vec<Column> {
                ::std::vec![#(Column::#skipped),*]
            }

            fn sync_key() -> ::std::option::Option<Column> {
                #sync_key
            }

            fn column_types() -> ::std::vec::Vec<(Column, #orm::sea_query::ArrayType)> {
                ::std::vec![#(#typed),*]
            }
        }

        const _: () = {
        #probe

        #[automatically_derived]
        #[::ormsync::__private::async_trait]
        impl #orm::ActiveModelBehavior for ActiveModel {
            fn new() -> Self {
                #new_hook
            }

            async fn before_save<C>(self, db: &C, insert: bool) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                ::ormsync::capture::require_transaction::<Entity, C>(db)?;
                let this = #before_save.await?;
                ::ormsync::capture::lock_unchanged::<Entity, C>(db, &this, insert).await?;
                ::std::result::Result::Ok(this)
            }

            async fn after_save<C>(
                model: Model,
                db: &C,
                insert: bool,
            ) -> ::std::result::Result<Model, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                let model = ::ormsync::capture::current::<Entity, C>(db, model, insert).await?;
                let model = #after_save.await?;
                ::ormsync::capture::save::<Entity, C>(db, &model, insert).await?;
                ::std::result::Result::Ok(model)
            }

            async fn before_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                ::ormsync::capture::require_transaction::<Entity, C>(db)?;
                let this = #before_delete.await?;
                ::ormsync::capture::complete::<Entity, C>(db, this).await
            }

            async fn after_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                // Judged before the entity's own hook can touch the model or the database.
                ::ormsync::capture::check_unfound_delete::<Entity, C>(db, &self).await?;
                let deleted = ::ormsync::capture::deletes_a_row::<Entity>(&self);
                let this = #after_delete.await?;
                if deleted {
                    ::ormsync::capture::delete::<Entity, C>(db, &this).await?;
                }
                ::std::result::Result::Ok(this)
            }
        }
        };
    }
}

/// The derive as sea-orm's `#[sea_orm::model]` and `#[sea_orm::compact_model]` copy it onto
/// the `ModelEx` they generate: the `Model` beside it carries the same derive and writes
/// everything, so this one writes nothing. It only reads the relation fields, which those
/// macros leave out of `Model`: an attribute there would otherwise go unread.
fn model_ex(fields: &Punctuated<Field, Token![,]>) -> syn::Result<TokenStream> {
    for field in fields {
        let Some(ident) = &field.ident else { continue };
        if attributes::is_relation(&field.ty) {
            refuse_skip_on_relation(ident, &attributes::field(&field.attrs)?)?;
        }
    }
    Ok(TokenStream::new())
}

/// A relation field is never captured: skipping it would promise something that is
/// already so, and hide that the attribute means nothing there.
fn refuse_skip_on_relation(ident: &syn::Ident, attrs: &attributes::FieldAttrs) -> syn::Result<()> {
    match attrs.skip_span {
        Some(span) => Err(error(
            span,
            &format!(
                "`#[replicated(skip)]` on `{ident}`, a relation field: relations are not columns \
                 and are never captured (the foreign key column is, unless it is skipped), so \
                 there is nothing to skip: remove `#[replicated(skip)]`"
            ),
        )),
        None => Ok(()),
    }
}

/// Finds the entity's `ReplicatedHooks` without being told: method lookup takes the impl
/// on `HooksOf<A>`, bounded by `A: ReplicatedHooks`, before the one on `&HooksOf<A>`, and
/// falls back to the latter (hooks that change nothing) only when that bound does not hold.
/// This works because `A` is the entity's concrete `ActiveModel` at the call.
fn hooks_probe(orm: &TokenStream) -> TokenStream {
    let result = quote!(::std::result::Result);
    quote! {
        struct HooksOf<A>(::std::marker::PhantomData<A>);

        type HookFuture<'a, T> = ::std::pin::Pin<::std::boxed::Box<
            dyn ::std::future::Future<Output = #result<T, #orm::DbErr>> + ::std::marker::Send + 'a,
        >>;

        trait RunHooks {
            type Active;
            type Model;
            fn new_active(&self) -> Self::Active;
            fn before_save<'a, C: #orm::ConnectionTrait>(&self, this: Self::Active, db: &'a C, insert: bool) -> HookFuture<'a, Self::Active>;
            fn after_save<'a, C: #orm::ConnectionTrait>(&self, model: Self::Model, db: &'a C, insert: bool) -> HookFuture<'a, Self::Model>;
            fn before_delete<'a, C: #orm::ConnectionTrait>(&self, this: Self::Active, db: &'a C) -> HookFuture<'a, Self::Active>;
            fn after_delete<'a, C: #orm::ConnectionTrait>(&self, this: Self::Active, db: &'a C) -> HookFuture<'a, Self::Active>;
        }

        impl<A: ::ormsync::ReplicatedHooks + 'static> RunHooks for HooksOf<A> {
            type Active = A;
            type Model = <A::Entity as #orm::EntityTrait>::Model;
            fn new_active(&self) -> A {
                <A as ::ormsync::ReplicatedHooks>::new()
            }
            fn before_save<'a, C: #orm::ConnectionTrait>(&self, this: A, db: &'a C, insert: bool) -> HookFuture<'a, A> {
                <A as ::ormsync::ReplicatedHooks>::before_save(this, db, insert)
            }
            fn after_save<'a, C: #orm::ConnectionTrait>(&self, model: Self::Model, db: &'a C, insert: bool) -> HookFuture<'a, Self::Model> {
                <A as ::ormsync::ReplicatedHooks>::after_save(model, db, insert)
            }
            fn before_delete<'a, C: #orm::ConnectionTrait>(&self, this: A, db: &'a C) -> HookFuture<'a, A> {
                <A as ::ormsync::ReplicatedHooks>::before_delete(this, db)
            }
            fn after_delete<'a, C: #orm::ConnectionTrait>(&self, this: A, db: &'a C) -> HookFuture<'a, A> {
                <A as ::ormsync::ReplicatedHooks>::after_delete(this, db)
            }
        }

        impl<A> RunHooks for &HooksOf<A>
        where
            A: #orm::ActiveModelTrait + ::std::marker::Send + 'static,
            <A::Entity as #orm::EntityTrait>::Model: ::std::marker::Send + 'static,
        {
            type Active = A;
            type Model = <A::Entity as #orm::EntityTrait>::Model;
            fn new_active(&self) -> A {
                <A as #orm::ActiveModelTrait>::default()
            }
            fn before_save<'a, C: #orm::ConnectionTrait>(&self, this: A, _: &'a C, _: bool) -> HookFuture<'a, A> {
                ::std::boxed::Box::pin(::std::future::ready(#result::Ok(this)))
            }
            fn after_save<'a, C: #orm::ConnectionTrait>(&self, model: Self::Model, _: &'a C, _: bool) -> HookFuture<'a, Self::Model> {
                ::std::boxed::Box::pin(::std::future::ready(#result::Ok(model)))
            }
            fn before_delete<'a, C: #orm::ConnectionTrait>(&self, this: A, _: &'a C) -> HookFuture<'a, A> {
                ::std::boxed::Box::pin(::std::future::ready(#result::Ok(this)))
            }
            fn after_delete<'a, C: #orm::ConnectionTrait>(&self, this: A, _: &'a C) -> HookFuture<'a, A> {
                ::std::boxed::Box::pin(::std::future::ready(#result::Ok(this)))
            }
        }
    }
}
