//! Support for the end-to-end tests in `tests/`: real servers (Redis, Mosquitto, OpenBao, a
//! Kafka-protocol broker) started on 127.0.0.1 for one test and stopped when it ends, and a
//! real `eyeflow node` process.

pub mod node;
pub mod servers;
