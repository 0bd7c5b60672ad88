//! Runtime adapters.
