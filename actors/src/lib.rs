//! The SVM core as supervised actors (scheduler, arbiter, fallback engine, audit chain) and the ports every effect goes through; built in a later issue.
