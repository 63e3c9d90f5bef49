//! Compile tests of `#[derive(Replicated)]`: what it accepts, and what it says when it refuses.
//!
//! `TRYBUILD=overwrite cargo test --test ui` regenerates the `.stderr` files; read them after.
//!
//! trybuild's test crates get this crate's dependencies and dev-dependencies, so the cases
//! use `sea_orm` and `async_trait` the way an application does.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
