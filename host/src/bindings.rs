//! Host bindings of `wit/skill.wit` (the one contract with guests).

wasmtime::component::bindgen!({
    // `wit` is a symlink to the repository's `wit/`, the one source of the
    // contract: `cargo package` stores what it points to, so the published
    // crate carries it.
    path: "wit",
    world: "skill",
    imports: {
        // Table lookups of a resource the guest holds cannot fail unless
        // the host is wrong; they trap rather than answer.
        "skillbox:skill/digest": async | trappable,
        default: async,
    },
    exports: { default: async },
    with: {
        "skillbox:skill/digest.sha256": crate::caps::digest::Sha256,
    },
});
