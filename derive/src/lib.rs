//! `#[derive(Replicated)]` for ormsync. Use it through `ormsync::Replicated`.

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod attributes;
mod expand;

/// Makes a sea-orm entity replicated: implements `ormsync::Replicated` for its `Entity`
/// and writes its `impl ActiveModelBehavior for ActiveModel`, which captures every
/// `insert`, `update`, `save` and `delete` into the outbox.
///
/// Put it on the entity's `Model`. Every entity format of sea-orm 2.0 works:
/// - `#[derive(DeriveEntityModel)]` (the compact format);
/// - `#[sea_orm::compact_model]` and `#[sea_orm::model]` above it: relation fields
///   (`HasOne`, `HasMany`, `BelongsTo`, with or without `#[sea_orm(has_one)]`,
///   `#[sea_orm(has_many)]`, `#[sea_orm(belongs_to, from = …, to = …)]`, `self_ref`, `via`)
///   are not columns and are never captured. Those macros copy the derive onto the
///   `ModelEx` they generate, where it writes nothing;
/// - the expanded format (`#[derive(DeriveModel, DeriveActiveModel)]` with `Column`,
///   `PrimaryKey` and `EntityName` written by hand).
///
/// # The entity's own `ActiveModelBehavior`
///
/// Rust allows one `impl ActiveModelBehavior for ActiveModel`, and this derive writes it,
/// so an entity that has one gets `error[E0119]: conflicting implementations of trait
/// ActiveModelBehavior`. The fix is to rename the trait in that impl and keep its body:
///
/// ```text
/// impl ActiveModelBehavior for ActiveModel { … }           // before
/// impl ormsync::ReplicatedHooks for ActiveModel { … }      // after
/// ```
///
/// `ReplicatedHooks` has the same methods with the same signatures (keep the
/// `#[async_trait]` on the impl). The derived impl runs them before it captures the change;
/// it finds them by itself.
///
/// Attributes:
/// - `#[replicated(skip)]` on a field: never captured or shipped.
/// - `#[replicated(sync_key = "column")]` on the struct: a globally unique column
///   present on both sides, used to match rows whose primary keys differ.
/// - `#[replicated(hooks)]` on the struct: requires an `impl ReplicatedHooks`, so that
///   removing it is a compile error rather than hooks that silently stop running.
#[proc_macro_derive(Replicated, attributes(replicated))]
pub fn derive_replicated(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let is_model = matches!(input.data, syn::Data::Struct(_)) && input.ident == "Model";
    match expand::expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let mut tokens = e.into_compile_error();
            if is_model {
                // Keep sea-orm's derives compiling, so the one error shown is ours.
                tokens.extend(quote::quote! {
                    impl ::ormsync::__private::sea_orm::ActiveModelBehavior for ActiveModel {}
                });
            }
            tokens.into()
        }
    }
}
