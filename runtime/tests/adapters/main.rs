//! The embedded adapters against real things: the fjall store in temp directories
//! (reopened to prove durability), and a local HTTP server on 127.0.0.1 for the HTTP and LLM
//! adapters.

mod audit;
mod events;
mod http;
mod journal;
mod llm;
mod memory;
mod support;
