//! no_std, heap-free interpreter of the LLM-IR subset that makes sense on a microcontroller,
//! with actors as Embassy tasks; built in a later issue.
#![no_std]
