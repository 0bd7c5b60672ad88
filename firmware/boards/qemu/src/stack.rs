//! The stack's high-water mark: cortex-m-rt paints the stack with
//! [`cortex_m_rt::STACK_PAINT_VALUE`] at reset (feature `paint-stack`); the deepest word
//! no longer painted bounds what the run used.
#![allow(unsafe_code)]

unsafe extern "C" {
    static _stack_end: u32;
    static _stack_start: u32;
}

/// Bytes of stack used so far (from the top down to the deepest scrubbed word).
pub(crate) fn high_water() -> usize {
    // The linker defines both symbols (cortex-m-rt's link.x); only their addresses are
    // taken, never their values.
    let (bottom, top) = (
        core::ptr::addr_of!(_stack_end) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    );
    let mut at = bottom;
    while at < top {
        // SAFETY: `at` is a word-aligned address between the stack's two ends, RAM that the
        // reset handler painted; reading a word of it races with nothing (one core, and the
        // stack in use lies above the painted words read here).
        let word = unsafe { core::ptr::read_volatile(at as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        at += 4;
    }
    top - at
}
