//! The gateway's memory on QEMU ([`Memory`], under the firmware's [`FlashSlots`]): RAM above
//! the image's 64 KB (memory.x), which no Rust object occupies and which a core restart
//! keeps (QEMU resets the CPU, not the RAM). Its two "sectors" behave as NOR flash does —
//! erasing sets every byte to `FF`, programming only clears bits — so that the slots run
//! here as they do on a board's flash.
//!
//! ```text
//! 0x2001_0000  magic "EYFG", core clock (Hz)       written by QEMU's loader
//! 0x2001_0008  the event's length
//! 0x2001_1000  sector 0 (8 KB + 16)   0x2001_3100  sector 1   0x2001_5200  event (1 KB)
//! ```
//!
//! Soundness of the `'static` borrows handed out here: [`FlashSlots`] erases and programs
//! only bytes nothing borrows (module doc of `eyeflow_firmware::slots`); the event area is
//! written only between executions.
#![allow(unsafe_code)]

use eyeflow_firmware::slots::{FlashSlots, Memory, SECTOR_BYTES};

const BASE: usize = 0x2001_0000;
const EVENT_LENGTH: usize = BASE + 8;
const SECTORS: [usize; 2] = [0x2001_1000, 0x2001_3100];
const EVENT: usize = 0x2001_5200;
/// The event area's size: the largest RUN payload kept.
pub(crate) const EVENT_MAX: usize = 1024;

const _: () =
    assert!(SECTORS[0] + SECTOR_BYTES <= SECTORS[1] && SECTORS[1] + SECTOR_BYTES <= EVENT);

fn word(at: usize) -> u32 {
    // SAFETY: an aligned header word inside the area above the image's RAM (see above).
    unsafe { core::ptr::read_volatile(at as *const u32) }
}

fn set_word(at: usize, value: u32) {
    // SAFETY: as `word`; no reference to the header words exists.
    unsafe { core::ptr::write_volatile(at as *mut u32, value) }
}

fn view(at: usize, len: usize) -> &'static [u8] {
    // SAFETY: the range lies inside one sector or the event area (lengths are capped), is
    // initialized RAM, and is not written while this borrow is in use (module doc).
    unsafe { core::slice::from_raw_parts(at as *const u8, len) }
}

/// The core clock in Hz when QEMU loaded the gateway header, else `None`.
pub(crate) fn gateway_hz() -> Option<u32> {
    (word(BASE) == u32::from_le_bytes(*b"EYFG")).then(|| word(BASE + 4))
}

/// The RAM above the image, as two flash sectors and the event area.
pub(crate) struct RamMemory;

/// The gateway's slots on it.
pub(crate) type RamSlots = FlashSlots<RamMemory>;

impl Memory for RamMemory {
    fn sector(&self, index: usize) -> &'static [u8] {
        view(SECTORS[index & 1], SECTOR_BYTES)
    }

    fn erase(&mut self, index: usize) {
        let base = SECTORS[index & 1];
        for at in (base..base + SECTOR_BYTES).step_by(4) {
            set_word(at, u32::MAX);
        }
    }

    fn program(&mut self, index: usize, offset: usize, word_bytes: [u8; 4]) {
        if offset.is_multiple_of(4) && offset < SECTOR_BYTES {
            let at = SECTORS[index & 1] + offset;
            set_word(at, word(at) & u32::from_le_bytes(word_bytes));
        }
    }

    fn event(&self) -> &'static [u8] {
        view(EVENT, (word(EVENT_LENGTH) as usize).min(EVENT_MAX))
    }

    /// Keeps a RUN's payload (cut to the area: it then does not decode).
    fn set_event(&mut self, payload: &[u8]) {
        let len = payload.len().min(EVENT_MAX);
        // SAFETY: the destination is the event area, which nothing borrows between
        // executions (module doc).
        unsafe { core::ptr::copy_nonoverlapping(payload.as_ptr(), EVENT as *mut u8, len) }
        set_word(EVENT_LENGTH, len as u32);
    }

    fn restart(&self) -> ! {
        // The reset paints the stack again: its high-water so far goes out first.
        crate::report("stack=", crate::stack::high_water() as u64, "");
        cortex_m::peripheral::SCB::sys_reset()
    }
}
