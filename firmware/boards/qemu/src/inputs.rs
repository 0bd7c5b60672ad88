//! The inputs QEMU loads into RAM before the core starts (`-device loader`, see
//! scripts/firmware.sh): at [`BASE`] a header of four little-endian u32 — magic `EYFI`,
//! the core clock in Hz, the program's length, the script's length — then the program at
//! `BASE + 0x10` and the script at `BASE + 0x2010`.
#![allow(unsafe_code)]

/// Where the inputs start: right above the 64 KB of RAM the image uses (memory.x).
const BASE: usize = 0x2001_0000;
const MAGIC: u32 = u32::from_le_bytes(*b"EYFI");
const PROGRAM_AT: usize = BASE + 0x10;
const PROGRAM_MAX: usize = 0x2000;
const SCRIPT_AT: usize = PROGRAM_AT + PROGRAM_MAX;
const SCRIPT_MAX: usize = 0x4000;

/// What the runner loaded.
pub(crate) struct Inputs {
    /// The core clock (SysTick counts it): 168 MHz on netduinoplus2, 25 MHz on mps2-an386.
    pub(crate) cpu_hz: u32,
    /// The program's length as loaded (beyond the area: refused as over capacity).
    pub(crate) program_len: usize,
    /// The program file, as signed (cut to the area).
    pub(crate) program: &'static [u8],
    /// The conformance script (event and hardware answers).
    pub(crate) script: &'static [u8],
}

fn word(at: usize) -> u32 {
    // SAFETY: `at` is one of the four aligned header words inside the 64 KB input area,
    // which both machines map as RAM and which no Rust object occupies (memory.x ends the
    // image's RAM below it); a volatile read because QEMU, not Rust, wrote it.
    unsafe { core::ptr::read_volatile(at as *const u32) }
}

fn area(at: usize, len: usize) -> &'static [u8] {
    // SAFETY: the range lies inside the input area (lengths are capped by the caller), is
    // initialized RAM (zeroed or loaded by QEMU), and is never written after reset, so a
    // shared `'static` borrow of it is sound.
    unsafe { core::slice::from_raw_parts(at as *const u8, len) }
}

/// The loaded inputs, or `None` when the header is absent.
pub(crate) fn read() -> Option<Inputs> {
    if word(BASE) != MAGIC {
        return None;
    }
    let program_len = word(BASE + 8) as usize;
    let script_len = (word(BASE + 12) as usize).min(SCRIPT_MAX);
    Some(Inputs {
        cpu_hz: word(BASE + 4),
        program_len,
        program: area(PROGRAM_AT, program_len.min(PROGRAM_MAX)),
        script: area(SCRIPT_AT, script_len),
    })
}
