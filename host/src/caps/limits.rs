//! `limits`: memory, tables and instances of one store. Growth past a limit
//! traps at once, and the limiter remembers why, so the run reports
//! "memory limit reached" rather than a generic crash.

use wasmtime::ResourceLimiter;

/// Most table elements per table.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Most instances, tables and memories per store.
const MAX_OBJECTS: usize = 1000;

crate::units::string_enum!(
    /// Which resource limit stopped a run.
    Limit {
        /// Linear memory (all memories together).
        Memory = "memory",
        /// Table elements.
        Table = "table",
        /// Fuel (wasm instructions), when metered.
        Fuel = "fuel",
        /// The guest's stack.
        Stack = "stack",
        /// The output cap (here: the summary).
        Output = "output",
    }
);

/// The store's limiter.
#[derive(Debug)]
pub struct Limiter {
    memory_cap: usize,
    memory_used: usize,
    /// Set when a limit refused growth: which, and what happened.
    pub exceeded: Option<(Limit, String)>,
}

impl Limiter {
    /// Caps all linear memories together at `memory_cap` bytes.
    pub fn new(memory_cap: u64) -> Self {
        Limiter {
            memory_cap: usize::try_from(memory_cap).unwrap_or(usize::MAX),
            memory_used: 0,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_cap {
            let msg = format!(
                "memory limit reached: the guest asked for {} bytes of linear memory, the limit is {} \
                 (raise it with --memory)",
                total, self.memory_cap
            );
            self.exceeded = Some((Limit::Memory, msg.clone()));
            return Err(wasmtime::format_err!(msg));
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let msg =
                format!("table limit reached: {desired} elements (limit {MAX_TABLE_ELEMENTS})");
            self.exceeded = Some((Limit::Table, msg.clone()));
            return Err(wasmtime::format_err!(msg));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_OBJECTS
    }

    fn tables(&self) -> usize {
        MAX_OBJECTS
    }

    fn memories(&self) -> usize {
        MAX_OBJECTS
    }
}
