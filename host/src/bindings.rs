//! Host bindings of `wit/skill.wit` (the one contract with guests).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "skill",
    imports: { default: async },
    exports: { default: async },
});
