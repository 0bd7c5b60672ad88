//! The production backends behind the same ports as the embedded defaults, each switched on
//! in the node's configuration.

pub mod kafka;
pub mod redis;
pub mod vault;
