//! `#[derive(Replicated)]` for ormsync. Use it through `ormsync::Replicated`.

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod attributes;
mod expand;

/// Makes a sea-orm entity replicated: implements `ormsync::Replicated` for its `Entity`
/// and writes its `impl ActiveModelBehavior for ActiveModel`, which captures every
/// `insert`, `update`, `save` and `delete` into the outbox.
///
/// Put it on the entity's `Model`, next to `DeriveEntityModel`. The entity must not have
/// an `impl ActiveModelBehavior` of its own: move such logic into
/// `impl ormsync::ReplicatedHooks for ActiveModel` and add `#[replicated(hooks)]`.
///
/// Attributes:
/// - `#[replicated(skip)]` on a field: never captured or shipped.
/// - `#[replicated(sync_key = "column")]` on the struct: a globally unique column
///   present on both sides, used to match rows whose primary keys differ.
/// - `#[replicated(hooks)]` on the struct: run the entity's `ReplicatedHooks` first.
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
