//! A skill's input schema, generated from its Rust input type.
//!
//! The manifest's `input-schema` file is what MCP clients see as the tool's
//! `inputSchema`, and what the host checks a call's arguments against. Keep
//! it generated from the type the skill deserializes, with a native test
//! that fails when the two drift apart (enable this module with the SDK's
//! `schema` feature, and add `schemars` 1.x, in the skill's
//! `[dev-dependencies]`):
//!
//! ```ignore
//! #[derive(serde::Deserialize)]
//! #[cfg_attr(test, derive(schemars::JsonSchema))]
//! #[serde(deny_unknown_fields)]
//! struct Input {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! #[test]
//! fn input_schema_is_current() {
//!     skillbox_sdk::schema::check::<Input>(concat!(env!("CARGO_MANIFEST_DIR"), "/input.schema.json"));
//! }
//! ```
//!
//! `SKILLBOX_BLESS=1 cargo test -p SKILL` writes the file.

use std::path::Path;

pub use schemars;

/// The JSON Schema of `T`, as the `input-schema` file holds it.
pub fn input_schema<T: schemars::JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Panics unless the file at `path` holds `T`'s schema; with the
/// environment variable `SKILLBOX_BLESS=1`, writes it instead.
pub fn check<T: schemars::JsonSchema>(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let want = input_schema::<T>();
    if std::env::var_os("SKILLBOX_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(path, &want)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{} is not the schema of the input type; regenerate it with SKILLBOX_BLESS=1 cargo test.\nexpected:\n{want}",
        path.display()
    );
}
