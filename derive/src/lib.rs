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
    expand::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
