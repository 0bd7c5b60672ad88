//! The eyeflow firmware for QEMU (`-machine netduinoplus2` and `-machine mps2-an386`, one
//! image for both): reads the program and the conformance script that QEMU loaded into
//! RAM ([`inputs`]), runs the program with the script's event and hardware answers, writes
//! the canonical trace to the host's stdout through semihosting, reports the stack
//! high-water on stderr (`stack=BYTES`) and exits 0 once the trace is written.
#![no_std]
#![no_main]

mod gateway;
mod inputs;
mod scripted;
mod stack;
mod time;

use core::fmt::{self, Write};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use embassy_executor::Executor;
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::limits::MAX_PROGRAM_BYTES;
use eyeflow_firmware::eyeflow_mcu::script::Script;
use eyeflow_firmware::eyeflow_mcu::trace::{self, Refusal};
use eyeflow_firmware::program::Program;
use eyeflow_firmware::verify::{self, KEYRING};
use eyeflow_firmware::{actors, conductor, state};
use static_cell::{ConstStaticCell, StaticCell};

/// What the simulated board provides: every device its script answers for (the
/// conformance vectors name theirs: `valve`, `pump`, `sensor`, …), in version 1.0.0, so
/// version requirements are still checked.
const CAPABILITIES: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];

/// The running program, built in place (`StaticCell::init(Program::new())` built its 2 KB
/// on `main`'s stack first, under the signature check's frames).
static PROGRAM: ConstStaticCell<Program> = ConstStaticCell::new(Program::new());
static SCRIPT: StaticCell<Script<'static>> = StaticCell::new();

/// Semihosting stdout, a line at a time (one host call per line).
struct Out {
    line: heapless::String<160>,
    host: Option<hio::HostStream>,
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.line.push(c).is_err() {
                self.flush();
                self.line.push(c).map_err(|_| fmt::Error)?;
            }
            if c == '\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Out {
    fn flush(&mut self) {
        if let Some(host) = &mut self.host {
            let _ = host.write_str(&self.line);
        }
        self.line.clear();
    }
}

#[embassy_executor::task]
async fn hardware(script: Script<'static>) {
    actors::hardware::serve(scripted::Scripted::new(script)).await
}

/// The execution, as the executor's first task; exits QEMU when its trace is written.
#[embassy_executor::task]
async fn execution(
    program: &'static Program,
    script: &'static Script<'static>,
    mut out: Out,
    hz: u32,
) {
    let started = time::cycles(hz);
    // As `dyn Write`, as the gateway's: one copy of the conductor in the image.
    conductor::run(program, script, &mut (&mut out as &mut dyn Write)).await;
    report("cycles run=", time::cycles(hz) - started, "");
    finish(true);
}

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
        if gateway::start(spawner, PROGRAM.take()).is_err() {
            finish(false)
        }
    })
}

/// Loads the program before the executor starts (the signature check is the deepest
/// stack of a run: it runs here, on a stack nothing else uses yet), then runs it.
#[entry]
fn main() -> ! {
    // The gateway mode: no inputs in RAM, the program comes over UART0 (src/gateway.rs).
    if let Some(hz) = gateway::gateway_hz() {
        gateway_main(hz)
    }
    let Some(inputs) = inputs::read() else {
        if let Ok(mut err) = hio::hstderr() {
            let _ = err.write_str("no inputs in the input area (see scripts/firmware.sh)\n");
        }
        finish(false)
    };
    let Some(p) = cortex_m::Peripherals::take() else {
        finish(false)
    };
    let hz = inputs.cpu_hz;
    time::start(p.SYST, hz);
    let mut out = Out {
        line: heapless::String::new(),
        host: hio::hstdout().ok(),
    };
    if out.host.is_none() {
        finish(false)
    }
    // As the server: the script first, then the program, then the world the script
    // describes.
    let script: &'static Script<'static> = match Script::parse(inputs.script) {
        Ok(script) => SCRIPT.init(script),
        Err(_) => finish(trace::write_refused(&mut out, Refusal::Malformed).is_ok()),
    };
    let started = time::cycles(hz);
    let program = PROGRAM.take();
    let loaded = if inputs.program_len > MAX_PROGRAM_BYTES {
        Err(Refusal::Capacity)
    } else {
        // Timed alone for the figures; the load verifies again.
        let verified = verify::check(inputs.program, KEYRING).is_ok();
        let cycles = time::cycles(hz) - started;
        let ok = if verified { " ok=true" } else { " ok=false" };
        report("cycles verify=", cycles, ok);
        program.load(inputs.program, KEYRING, CAPABILITIES)
    };
    let refused = match loaded {
        Err(reason) => Some(reason),
        Ok(()) if !state::script_is_sound(script) => Some(Refusal::Malformed),
        Ok(()) => None,
    };
    if let Some(reason) = refused {
        finish(trace::write_refused(&mut out, reason).is_ok())
    }
    let program: &'static Program = program;
    EXECUTOR.init(Executor::new()).run(|spawner| {
        let spawned = conductor::spawn_actors(spawner).and_then(|()| {
            spawner.spawn(hardware(*script)?);
            spawner.spawn(execution(program, script, out, hz)?);
            Ok(())
        });
        if spawned.is_err() {
            finish(false)
        }
    })
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
