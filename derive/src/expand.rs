//! The code `#[derive(Replicated)]` generates.

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields};

use crate::attributes::{self, error};

struct Column {
    /// The SQL column name.
    name: String,
    /// The variant of the entity's `Column` enum.
    variant: syn::Ident,
    skip: bool,
    ty: syn::Type,
}

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    const WHERE: &str = "#[derive(Replicated)] goes on the `Model` struct of a sea-orm entity, \
                         beside #[derive(DeriveEntityModel)] and #[sea_orm(table_name = \"...\")]";
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                return Err(error(
                    input.ident.span(),
                    &format!("{WHERE}; `{}` has no named fields", input.ident),
                ));
            }
        },
        Data::Enum(_) => {
            return Err(error(
                input.ident.span(),
                &format!("{WHERE}; `{}` is an enum", input.ident),
            ));
        }
        Data::Union(_) => {
            return Err(error(
                input.ident.span(),
                &format!("{WHERE}; `{}` is a union", input.ident),
            ));
        }
    };
    if input.ident != "Model" {
        return Err(error(
            input.ident.span(),
            &format!("{WHERE}; this struct is `{}`", input.ident),
        ));
    }
    let model = attributes::model(&input.attrs)?;
    if !model.has_table_name {
        return Err(error(input.ident.span(), WHERE));
    }

    let mut columns = Vec::new();
    for field in fields {
        let attrs = attributes::field(&field.attrs)?;
        let Some(ident) = &field.ident else { continue };
        if attrs.not_a_column {
            if attrs.skip {
                return Err(error(
                    field.span(),
                    "this field is not a column (sea-orm ignores it), so `#[replicated(skip)]` has nothing to skip",
                ));
            }
            continue;
        }
        let field_name = ident.to_string().trim_start_matches("r#").to_string();
        let variant_name = attrs
            .enum_name
            .clone()
            .unwrap_or_else(|| field_name.to_upper_camel_case());
        columns.push(Column {
            name: attrs.column_name.unwrap_or(field_name),
            variant: format_ident!("{}", variant_name, span = ident.span()),
            skip: attrs.skip,
            ty: field.ty.clone(),
        });
    }

    let sync_key = match &model.sync_key {
        None => quote!(::std::option::Option::None),
        Some(lit) => {
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
            quote!(::std::option::Option::Some(Column::#v))
        }
    };
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
    let hooks = model.hooks;
    let new_fn = hooks.then(|| {
        quote! {
            fn new() -> Self {
                <Self as ::ormsync::ReplicatedHooks>::new()
            }
        }
    });
    let before_save = if hooks {
        quote!(<Self as ::ormsync::ReplicatedHooks>::before_save(self, db, insert).await?)
    } else {
        quote!(self)
    };
    let after_save = if hooks {
        quote!(<Self as ::ormsync::ReplicatedHooks>::after_save(model, db, insert).await?)
    } else {
        quote!(model)
    };
    let before_delete = if hooks {
        quote!(<Self as ::ormsync::ReplicatedHooks>::before_delete(self, db).await?)
    } else {
        quote!(self)
    };
    let after_delete = if hooks {
        quote!(<Self as ::ormsync::ReplicatedHooks>::after_delete(self, db).await?)
    } else {
        quote!(self)
    };

    Ok(quote! {
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

        #[automatically_derived]
        #[::ormsync::__private::async_trait]
        impl #orm::ActiveModelBehavior for ActiveModel {
            #new_fn

            async fn before_save<C>(self, db: &C, insert: bool) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                ::ormsync::capture::guard::<Entity, C>(db)?;
                let this = #before_save;
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
                let model = #after_save;
                ::ormsync::capture::save::<Entity, C>(db, &model, insert).await?;
                ::std::result::Result::Ok(model)
            }

            async fn before_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                ::ormsync::capture::guard::<Entity, C>(db)?;
                let this = #before_delete;
                ::ormsync::capture::complete::<Entity, C>(db, this).await
            }

            async fn after_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
            where
                C: #orm::ConnectionTrait,
            {
                // Judged before the entity's own hook can touch the model or the database.
                ::ormsync::capture::check_unfound_delete::<Entity, C>(db, &self).await?;
                let deleted = ::ormsync::capture::deletes_a_row::<Entity>(&self);
                let this = #after_delete;
                if deleted {
                    ::ormsync::capture::delete::<Entity, C>(db, &this).await?;
                }
                ::std::result::Result::Ok(this)
            }
        }
    })
}
