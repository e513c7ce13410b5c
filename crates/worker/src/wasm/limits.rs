//! Per-instance resource limits, and the record of whether they were hit.

/// Most table elements an instance may grow a table to.
const TABLE_ELEMENTS_MAX: usize = 1_000_000;

/// Enforces `MemorySize` on a guest's linear memory and notes peak use.
pub struct Limits {
    /// Bound on the total of the instance's linear memories, in bytes.
    memory_max_bytes: usize,
    /// Bytes currently allocated across the instance's memories.
    memory_bytes: usize,
    /// Highest `memory_bytes` seen, for `Max Memory Used`.
    pub peak_bytes: usize,
    /// Whether a growth was refused for exceeding the limit.
    pub out_of_memory: bool,
}

impl Limits {
    /// Limits for one instance.
    pub fn new(memory_max_bytes: usize) -> Limits {
        Limits {
            memory_max_bytes,
            memory_bytes: 0,
            peak_bytes: 0,
            out_of_memory: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.memory_max_bytes {
            // Refuse the growth as wasm defines it (memory.grow returns -1);
            // a guest that cannot cope will trap, and the flag says why.
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}
