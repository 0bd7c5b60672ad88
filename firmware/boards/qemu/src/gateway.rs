//! The gateway mode of the QEMU image (mps2-an386, its CMSDK UART0 bound to a TCP socket):
//! the device end of the serial gateway (`eyeflow_mcu::frame`, docs/firmware.md). It says
//! HELLO until a PONG answers, then PINGs every heartbeat; loads a DEPLOY beside the
//! running program and swaps to it only once it loaded (a refused program leaves the
//! current one running); runs each RUN's event, its trace lines going out as TRACE frames.
//!
//! A swap restarts the core on the new program: the running program and the RUN's event
//! are borrowed for `'static` from RAM no Rust object occupies ([`slots`]), which keeps
//! the loaded program across the restart, so no program is ever rewritten while borrowed.

mod slots;
mod uart;

pub(crate) use slots::gateway_hz;

use core::cell::Cell;
use core::fmt::{self, Write};

use embassy_executor::Spawner;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Timer, with_timeout};
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::Value;
use eyeflow_firmware::eyeflow_mcu::frame::{
    Capabilities, Capability as Declared, Decoder, Frame, MAX_FRAME, Message, ProgramRef, kind,
};
use eyeflow_firmware::program::Program;
use eyeflow_firmware::state::Event;
use eyeflow_firmware::verify::KEYRING;
use eyeflow_firmware::{actors, conductor};
use static_cell::StaticCell;

/// The device id a HELLO says.
const DEVICE_ID: &str = "qemu-1";
/// The firmware version a HELLO says.
const FIRMWARE: &str = env!("CARGO_PKG_VERSION");
/// The heartbeat (the node's `heartbeat_ms` for this device).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// What the simulated board provides (as the conformance mode: every capability, 1.0.0).
const CAPABILITIES: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];
/// Silence after which a partial frame will not complete.
const IDLE_MS: u64 = 200;

static ACTIVE: StaticCell<Program> = StaticCell::new();
static STAGING: StaticCell<Program> = StaticCell::new();
static DECODER: StaticCell<[u8; MAX_FRAME]> = StaticCell::new();
/// A PONG arrived.
static PONGED: Signal<ThreadModeRawMutex, ()> = Signal::new();
/// A RUN's event is in the event area.
static RUN: Signal<ThreadModeRawMutex, ()> = Signal::new();
/// The runner finished its execution.
static IDLE: Signal<ThreadModeRawMutex, ()> = Signal::new();

/// The event of the RUN being executed, read from the event area.
struct RunEvent;

impl Event for RunEvent {
    fn field(&self, path: &str) -> Option<Value<'static>> {
        let frame = Frame {
            kind: kind::RUN,
            seq: 0,
            payload: slots::event(),
        };
        match Message::decode(&frame) {
            Ok(Message::Run { fields }) => fields.iter().find(|(p, _)| *p == path).map(|(_, v)| v),
            _ => None,
        }
    }
}

static RUN_EVENT: RunEvent = RunEvent;

/// Sends one message (frames are written whole: nothing else runs meanwhile).
fn send(message: &Message<'_>) {
    static SEQ: embassy_sync::blocking_mutex::Mutex<ThreadModeRawMutex, Cell<u8>> =
        embassy_sync::blocking_mutex::Mutex::new(Cell::new(0));
    let mut out = [0u8; 256];
    let seq = SEQ.lock(|s| {
        let seq = s.get();
        s.set(seq.wrapping_add(1));
        seq
    });
    if let Ok(len) = message.encode(seq, &mut out) {
        uart::write(&out[..len]);
    }
}

/// The running program's id and version, for HELLO and LOADED.
fn identity() -> Option<ProgramRef<'static>> {
    let (id, version) = eyeflow_firmware::program::identity(slots::active()?)?;
    Some(ProgramRef { id, version })
}

/// Starts the gateway: the program kept across the last restart, then the tasks.
pub(crate) fn start(spawner: Spawner) -> Result<(), embassy_executor::SpawnError> {
    let active = ACTIVE.init(Program::new());
    let loaded =
        slots::active().is_some_and(|file| active.load(file, KEYRING, CAPABILITIES).is_ok());
    let active: &'static Program = active;
    if !loaded {
        slots::forget();
    }
    uart::init();
    if slots::take_loaded_flag()
        && let Some(program) = identity()
    {
        send(&Message::Loaded(program));
    }
    conductor::spawn_actors(spawner)?;
    spawner.spawn(hardware()?);
    spawner.spawn(heartbeat()?);
    spawner.spawn(runner(active, loaded)?);
    spawner.spawn(receiver()?);
    Ok(())
}

/// The simulated board's hardware: every call succeeds with `true`.
struct Simulated;

impl eyeflow_firmware::hardware::Hardware for Simulated {
    async fn call(
        &mut self,
        _call: &eyeflow_firmware::hardware::Call<'_>,
    ) -> Result<eyeflow_firmware::owned::Owned, eyeflow_firmware::eyeflow_mcu::trace::ErrorClass>
    {
        Ok(eyeflow_firmware::owned::Owned::of(Value::Bool(true)).unwrap_or_default())
    }
}

#[embassy_executor::task]
async fn hardware() {
    actors::hardware::serve(Simulated).await
}

#[embassy_executor::task]
async fn heartbeat() {
    let mut greeted = false;
    loop {
        PONGED.reset();
        if greeted {
            send(&Message::Ping);
        } else {
            send(&Message::Hello {
                device: DEVICE_ID,
                firmware: FIRMWARE,
                capabilities: Capabilities::List(&[Declared {
                    id: "*",
                    version: "1.0.0",
                }]),
                program: identity(),
            });
        }
        greeted = with_timeout(HEARTBEAT, PONGED.wait()).await.is_ok();
        if greeted {
            Timer::after(HEARTBEAT).await;
        }
    }
}

/// One TRACE frame per line of the execution's trace.
struct TraceOut {
    execution: u32,
    line: heapless::String<160>,
}

impl Write for TraceOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                send(&Message::Trace {
                    execution: self.execution,
                    line: &self.line,
                });
                self.line.clear();
            } else {
                self.line.push(c).map_err(|_| fmt::Error)?;
            }
        }
        Ok(())
    }
}

#[embassy_executor::task]
async fn runner(program: &'static Program, loaded: bool) {
    let mut execution = 0u32;
    IDLE.signal(());
    loop {
        RUN.wait().await;
        if loaded {
            execution = execution.wrapping_add(1);
            let mut out = TraceOut {
                execution,
                line: heapless::String::new(),
            };
            conductor::run(program, &RUN_EVENT, &mut out).await;
        }
        IDLE.signal(());
    }
}

#[embassy_executor::task]
async fn receiver() {
    let mut decoder = Decoder::new(&mut DECODER.init([0; MAX_FRAME])[..]);
    let staging = STAGING.init(Program::new());
    let mut quiet_ms = 0u64;
    loop {
        let mut got = false;
        while let Some(byte) = uart::read() {
            decoder.push(byte);
            got = true;
        }
        if got {
            quiet_ms = 0;
        } else {
            quiet_ms += 1;
            if quiet_ms == IDLE_MS {
                decoder.idle();
            }
        }
        while let Some(frame) = decoder.next_frame() {
            let Ok(message) = Message::decode(&frame) else {
                continue;
            };
            match message {
                Message::Pong => PONGED.signal(()),
                Message::Run { .. } => {
                    // The event area is rewritten only between executions.
                    IDLE.wait().await;
                    slots::set_event(frame.payload);
                    RUN.signal(());
                }
                Message::Deploy { program } => {
                    IDLE.wait().await;
                    deploy(staging, program);
                    IDLE.signal(());
                }
                _ => {}
            }
        }
        if got {
            embassy_futures::yield_now().await;
        } else {
            Timer::after_millis(1).await;
        }
    }
}

/// Verifies and loads `file` beside the running program; once it loaded, keeps it and
/// restarts on it (the restart says LOADED), else answers REFUSED and changes nothing.
fn deploy(staging: &mut Program, file: &[u8]) {
    let Some(staged) = slots::stage(file) else {
        send(&Message::Refused {
            reason: eyeflow_firmware::eyeflow_mcu::trace::Refusal::Capacity.name(),
        });
        return;
    };
    match staging.load(staged, KEYRING, CAPABILITIES) {
        Ok(()) => {
            slots::commit();
            cortex_m::peripheral::SCB::sys_reset();
        }
        Err(reason) => send(&Message::Refused {
            reason: reason.name(),
        }),
    }
}
