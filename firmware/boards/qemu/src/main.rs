//! The eyeflow firmware for QEMU (`-machine netduinoplus2` and `-machine mps2-an386`, one
//! image for both). Two modes, chosen by the header QEMU's loader puts in RAM: the
//! [`gateway`] (a device on UART0) and, with the default feature `conformance`, the
//! conformance runs: it reads the program and the conformance script that QEMU loaded into
//! RAM (`inputs`), runs the program with the script's event and hardware answers, writes
//! the canonical trace to the host's stdout through semihosting, reports the stack
//! high-water on stderr (`stack=BYTES`) and exits 0 once the trace is written. Without
//! `conformance` the image is the gateway alone: what a field device runs.
#![no_std]
#![no_main]

#[cfg(feature = "conformance")]
mod conformance;
mod gateway;
#[cfg(feature = "conformance")]
mod inputs;
#[cfg(feature = "conformance")]
mod scripted;
mod stack;
mod time;

// The byte-loop memory routines instead of compiler-builtins' larger ones.
use core::fmt::Write;
use eyeflow_mem as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use embassy_executor::Executor;
#[cfg(feature = "conformance")]
use eyeflow_firmware::program::Program;
#[cfg(feature = "conformance")]
use static_cell::ConstStaticCell;
use static_cell::StaticCell;

/// The conformance mode's program, built in place (`StaticCell::init(Program::new())`
/// built its 2 KB on `main`'s stack first, under the signature check's frames); the
/// gateway mode's is the gateway's own.
#[cfg(feature = "conformance")]
static PROGRAM: ConstStaticCell<Program> = ConstStaticCell::new(Program::new());

/// Writes `label`, `number` in decimal and `tail` as a line on the host's stderr
/// (hand-written rather than with `core::fmt`, which the image would carry for these
/// lines alone).
fn report(label: &str, number: u64, tail: &str) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = number;
    loop {
        let (q, r) = div10(n);
        at -= 1;
        digits[at] = b'0' + r;
        n = q;
        if n == 0 {
            break;
        }
    }
    if let Ok(mut err) = hio::hstderr() {
        let _ = err.write_str(label);
        let _ = err.write_str(core::str::from_utf8(&digits[at..]).unwrap_or(""));
        let _ = err.write_str(tail);
        let _ = err.write_str("\n");
    }
}

/// `n / 10` and `n % 10` by 16-bit limbs: 32-bit divisions only (a `u64` division links
/// compiler-builtins' 64-bit divider).
fn div10(n: u64) -> (u64, u8) {
    let (mut quotient, mut remainder) = (0u64, 0u32);
    for shift in [48, 32, 16, 0] {
        let limb = (remainder << 16) | ((n >> shift) as u32 & 0xffff);
        quotient |= u64::from(limb / 10) << shift;
        remainder = limb % 10;
    }
    (quotient, remainder as u8)
}

/// Reports the stack high-water and exits QEMU: 0 once the trace (or refusal) is written.
fn finish(written: bool) -> ! {
    report("stack=", stack::high_water() as u64, "");
    debug::exit(if written {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfe();
    }
}

static EXECUTOR: StaticCell<Executor> = StaticCell::new();

/// The gateway mode's main (not inlined: its frame stays out of the conformance mode's).
#[inline(never)]
fn gateway_main(hz: u32) -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        finish(false)
    };
    time::start(p.SYST, hz);
    EXECUTOR.init(Executor::new()).run(|spawner| {
        if gateway::start(spawner).is_err() {
            finish(false)
        }
    })
}

/// The gateway mode when QEMU loaded its header, else the conformance mode (when built in).
#[entry]
fn main() -> ! {
    // The gateway mode: no inputs in RAM, the program comes over UART0 (src/gateway.rs).
    if let Some(hz) = gateway::gateway_hz() {
        gateway_main(hz)
    }
    #[cfg(feature = "conformance")]
    conformance::main();
    #[cfg(not(feature = "conformance"))]
    finish(false)
}

#[allow(unsafe_code)]
unsafe extern "C" {
    /// cortex-m-rt's default handler.
    fn DefaultHandler();
}

/// The interrupt part of the vector table: one entry (cortex-m-rt requires one), since the
/// image enables no interrupt — rather than cortex-m-rt's generic 240 (960 B of flash).
#[allow(unsafe_code)]
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [DefaultHandler];

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfe();
    }
}
