//! Where the gateway keeps programs and the RUN's event: RAM above the image's 64 KB
//! (memory.x), which no Rust object occupies and which a core restart keeps (QEMU resets
//! the CPU, not the RAM). The header words say which slot holds the running program.
//!
//! ```text
//! 0x2001_0000  magic "EYFG", core clock (Hz)       written by QEMU's loader
//! 0x2001_0008  active slot (0 none, 1 or 2), its length, flags (bit 0: say LOADED)
//! 0x2001_1000  slot 1 (8 KB)    0x2001_3000  slot 2 (8 KB)    0x2001_5000  event (1 KB)
//! ```
//!
//! Soundness of the `'static` borrows handed out here: the active slot is never written
//! (a DEPLOY writes the other slot, and a swap restarts the core); the staging slot is
//! written only by a DEPLOY as it arrives, and borrowed only while the gateway checks a
//! complete one (no byte is staged meanwhile); the event area is written only between
//! executions.
#![allow(unsafe_code)]

use eyeflow_firmware::eyeflow_mcu::limits::MAX_PROGRAM_BYTES;
use eyeflow_firmware::gateway::Slots;

const BASE: usize = 0x2001_0000;
const ACTIVE: usize = BASE + 8;
const LENGTH: usize = BASE + 12;
const FLAGS: usize = BASE + 16;
const SLOTS: [usize; 2] = [0x2001_1000, 0x2001_3000];
const EVENT: usize = 0x2001_5000;
/// The event area's size: the largest RUN payload kept.
pub(crate) const EVENT_MAX: usize = 1024;
const EVENT_LENGTH: usize = BASE + 20;
const SAY_LOADED: u32 = 1;

fn word(at: usize) -> u32 {
    // SAFETY: an aligned header word inside the area above the image's RAM (see above).
    unsafe { core::ptr::read_volatile(at as *const u32) }
}

fn set_word(at: usize, value: u32) {
    // SAFETY: as `word`; no reference to the header words exists.
    unsafe { core::ptr::write_volatile(at as *mut u32, value) }
}

fn view(at: usize, len: usize) -> &'static [u8] {
    // SAFETY: the range lies inside one slot or the event area (lengths are capped), is
    // initialized RAM, and is not written while this borrow is in use (module doc).
    unsafe { core::slice::from_raw_parts(at as *const u8, len) }
}

fn write(at: usize, bytes: &[u8]) {
    // SAFETY: the destination lies inside one slot or the event area (lengths are capped
    // by the callers), and nothing borrows it now (module doc).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) }
}

/// The core clock in Hz when QEMU loaded the gateway header, else `None`.
pub(crate) fn gateway_hz() -> Option<u32> {
    (word(BASE) == u32::from_le_bytes(*b"EYFG")).then(|| word(BASE + 4))
}

fn active_index() -> Option<usize> {
    match word(ACTIVE) {
        1 => Some(0),
        2 => Some(1),
        _ => None,
    }
}

/// The slots in the RAM above the image.
pub(crate) struct RamSlots;

impl Slots for RamSlots {
    /// The running program's file, if a DEPLOY left one.
    fn active(&self) -> Option<&'static [u8]> {
        let len = (word(LENGTH) as usize).min(MAX_PROGRAM_BYTES);
        active_index().map(|i| view(SLOTS[i], len))
    }

    /// Forgets the running program (it did not load again).
    fn forget(&self) {
        set_word(ACTIVE, 0);
    }

    /// Writes byte `at` of a DEPLOY's file into the slot that is not running.
    fn stage_byte(&self, at: usize, byte: u8) {
        if at < MAX_PROGRAM_BYTES {
            write(SLOTS[1 - active_index().unwrap_or(1)] + at, &[byte]);
        }
    }

    /// The `len` bytes staged (noted for the commit).
    fn staged(&self, len: usize) -> &'static [u8] {
        let len = len.min(MAX_PROGRAM_BYTES);
        set_word(BASE + 24, len as u32);
        view(SLOTS[1 - active_index().unwrap_or(1)], len)
    }

    /// Makes the staged file the running program from the next start, which says LOADED.
    fn commit(&self) {
        let staged = 1 - active_index().unwrap_or(1);
        set_word(LENGTH, word(BASE + 24));
        set_word(FLAGS, word(FLAGS) | SAY_LOADED);
        set_word(ACTIVE, staged as u32 + 1);
    }

    /// Whether this start follows a swap (and clears it).
    fn take_loaded_flag(&self) -> bool {
        let flags = word(FLAGS);
        set_word(FLAGS, flags & !SAY_LOADED);
        flags & SAY_LOADED != 0
    }

    /// The RUN payload of the execution (empty fields when none).
    fn event(&self) -> &'static [u8] {
        view(EVENT, (word(EVENT_LENGTH) as usize).min(EVENT_MAX))
    }

    /// Keeps a RUN's payload for its execution (cut to the area: it then does not decode).
    fn set_event(&self, payload: &[u8]) {
        let len = payload.len().min(EVENT_MAX);
        write(EVENT, &payload[..len]);
        set_word(EVENT_LENGTH, len as u32);
    }

    fn restart(&self) -> ! {
        // The reset paints the stack again: its high-water so far goes out first.
        crate::report("stack=", crate::stack::high_water() as u64, "");
        cortex_m::peripheral::SCB::sys_reset()
    }
}
