//! Host bindings of `wit/skill.wit` (the one contract with guests).

wasmtime::component::bindgen!({
    // `wit` is a symlink to the repository's `wit/`, the one source of the
    // contract: `cargo package` stores what it points to, so the published
    // crate carries it.
    path: "wit",
    world: "skill",
    imports: { default: async },
    exports: { default: async },
});
