//! The gateway mode of the QEMU image (mps2-an386, its CMSDK UART0 bound to a TCP socket):
//! the firmware's [`Gateway`] over [`uart`] and [`slots`] in the RAM above the image,
//! which a core restart keeps. Device `qemu-1`, every capability (1.0.0), every hardware
//! call answered `true`; LLM_CALLs and EMIT_EVENTs go to the node.

mod slots;
mod uart;

use embassy_executor::Spawner;
use embassy_time::Duration;
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::Value;
use eyeflow_firmware::eyeflow_mcu::frame::{Capability as Declared, MAX_FRAME};
use eyeflow_firmware::eyeflow_mcu::trace::ErrorClass;
use eyeflow_firmware::gateway::Gateway;
use eyeflow_firmware::hardware::{Call, Hardware};
use eyeflow_firmware::owned::Owned;
use eyeflow_firmware::program::Program;
use eyeflow_firmware::{actors, conductor};
use static_cell::StaticCell;

pub(crate) use slots::gateway_hz;

/// What the simulated board provides (as the conformance mode: every capability, 1.0.0).
const CAPABILITIES: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];

static GATEWAY: Gateway<uart::Uart0, slots::RamSlots> = Gateway::new(
    uart::Uart0,
    slots::RamSlots,
    "qemu-1",
    env!("CARGO_PKG_VERSION"),
    CAPABILITIES,
    &[Declared {
        id: "*",
        version: "1.0.0",
    }],
    Duration::from_millis(500),
);

static STAGING: StaticCell<Program> = StaticCell::new();
static BUFFER: StaticCell<[u8; MAX_FRAME]> = StaticCell::new();

/// Starts the gateway: the program kept across the last restart (loaded into `active`),
/// then the tasks. Not inlined: its frame stays out of `main`'s in the conformance mode.
#[inline(never)]
pub(crate) fn start(
    spawner: Spawner,
    active: &'static mut Program,
) -> Result<(), embassy_executor::SpawnError> {
    uart::init();
    let loaded = GATEWAY.start(active);
    conductor::spawn_actors(spawner)?;
    spawner.spawn(hardware()?);
    spawner.spawn(heartbeat()?);
    spawner.spawn(runner(active, loaded)?);
    spawner.spawn(receiver()?);
    Ok(())
}

/// The simulated board's hardware: every call succeeds with `true`.
struct Simulated;

impl Hardware for Simulated {
    async fn call(&mut self, _call: &Call<'_>) -> Result<Owned, ErrorClass> {
        Ok(Owned::of(Value::Bool(true)).unwrap_or_default())
    }
}

#[embassy_executor::task]
async fn hardware() {
    actors::hardware::serve(GATEWAY.linked(Simulated)).await
}

#[embassy_executor::task]
async fn heartbeat() {
    GATEWAY.heartbeat().await
}

#[embassy_executor::task]
async fn runner(program: &'static Program, loaded: bool) {
    GATEWAY.run(program, loaded).await
}

#[embassy_executor::task]
async fn receiver() {
    let staging = STAGING.init(Program::new());
    GATEWAY
        .receive(&mut BUFFER.init([0; MAX_FRAME])[..], staging)
        .await
}
