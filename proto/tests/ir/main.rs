//! Integration tests of the IR crate: golden signing vectors, tamper refusal, keyring,
//! structural refusals, limits, and the encode/decode round trip.

mod golden;
mod refusals;
mod roundtrip;
mod tamper;
