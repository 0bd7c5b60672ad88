//! The memory and table limits of one call's store, and the typed error a call gets when it
//! asks for more memory than its limit (classified `resource-exhausted` by
//! [`super::call`], found by its type, not by its message).

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// A plugin asked to grow its memory past the call's limit.
#[derive(Debug)]
pub(crate) struct MemoryLimitReached {
    limit: usize,
    desired: usize,
}

impl std::fmt::Display for MemoryLimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit of {} bytes reached (asked for {})",
            self.limit, self.desired
        )
    }
}

impl std::error::Error for MemoryLimitReached {}

/// Memory and table limits of one call.
pub(crate) struct CallLimits {
    inner: StoreLimits,
    memory_limit: usize,
}

impl CallLimits {
    pub(crate) fn new(memory_limit: usize, table_elements: usize) -> Self {
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .table_elements(table_elements)
                .instances(64)
                .tables(64)
                .memories(8)
                .build(),
            memory_limit,
        }
    }
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // An error, not a refusal: the call stops here, with a cause that says why.
            return Err(MemoryLimitReached {
                limit: self.memory_limit,
                desired,
            }
            .into());
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
