//! The conformance mode (feature `conformance`, a test harness rather than a device's
//! firmware): the program and the conformance script that QEMU loaded into RAM
//! ([`inputs`](crate::inputs)), run with the script's event and hardware answers, the
//! trace on the host's stdout.

use core::fmt::{self, Write};

use cortex_m_semihosting::hio;
use embassy_executor::Executor;
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::limits::MAX_PROGRAM_BYTES;
use eyeflow_firmware::eyeflow_mcu::script::Script;
use eyeflow_firmware::eyeflow_mcu::trace::{self, Refusal};
use eyeflow_firmware::program::Program;
use eyeflow_firmware::verify::{self, KEYRING};
use eyeflow_firmware::{actors, conductor, state};
use static_cell::StaticCell;

use crate::{EXECUTOR, PROGRAM, finish, inputs, report, scripted, time};

/// What the simulated board provides: every device its script answers for (the
/// conformance vectors name theirs: `valve`, `pump`, `sensor`, …), in version 1.0.0, so
/// version requirements are still checked.
const CAPABILITIES: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];

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

/// Loads the program before the executor starts (the signature check is the deepest
/// stack of a run: it runs here, on a stack nothing else uses yet), then runs it.
pub(crate) fn main() -> ! {
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
