//! The gateway mode of the QEMU image (mps2-an386, its CMSDK UART0 bound to a TCP socket):
//! the firmware's [`Gateway`] over [`uart`] and its flash slots on [`slots`], the RAM
//! above the image, which a core restart keeps. Device `qemu-1`, every capability (1.0.0), every hardware
//! call answered `true`; LLM_CALLs and EMIT_EVENTs go to the node.

mod slots;
mod uart;

use embassy_executor::Spawner;
use embassy_time::Duration;
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::Value;
use eyeflow_firmware::eyeflow_mcu::frame::{Capability as Declared, HEADER, TRAILER};
use eyeflow_firmware::eyeflow_mcu::trace::ErrorClass;
use eyeflow_firmware::gateway::Gateway;
use eyeflow_firmware::hardware::{Call, Hardware};
use eyeflow_firmware::owned::Owned;
use eyeflow_firmware::{actors, conductor};
use static_cell::ConstStaticCell;

pub(crate) use slots::gateway_hz;

/// What the simulated board provides (as the conformance mode: every capability, 1.0.0).
const CAPABILITIES: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];

static GATEWAY: Gateway<uart::Uart0, slots::RamSlots> = Gateway::new(
    uart::Uart0,
    slots::RamSlots::new(slots::RamMemory),
    "qemu-1",
    env!("CARGO_PKG_VERSION"),
    CAPABILITIES,
    &[Declared {
        id: "*",
        version: "1.0.0",
    }],
    Duration::from_millis(500),
);

/// The largest frame the receiver buffers: a RUN whose event fills the event area (a
/// DEPLOY goes straight to the staging slot, `eyeflow_firmware::gateway`).
const FRAME: usize = HEADER + slots::EVENT_MAX + TRAILER;

/// The frame buffer, zeroed in `.bss`.
static BUFFER: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);

/// Starts the gateway: the program kept across the last restart, then the tasks. Not
/// inlined: its frame stays out of `main`'s in the conformance mode.
#[inline(never)]
pub(crate) fn start(spawner: Spawner) -> Result<(), embassy_executor::SpawnError> {
    uart::init();
    let loaded = GATEWAY.start();
    conductor::spawn_actors(spawner)?;
    spawner.spawn(hardware()?);
    spawner.spawn(heartbeat()?);
    spawner.spawn(runner(loaded)?);
    spawner.spawn(receiver()?);
    spawner.spawn(stack_watch()?);
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
async fn runner(loaded: bool) {
    GATEWAY.run(loaded).await
}

/// Reports the stack high-water on the host's stderr (`stack=BYTES`) whenever it grows, for
/// `scripts/firmware.sh size` (a restart reports it too: the reset paints the stack again).
#[embassy_executor::task]
async fn stack_watch() {
    let mut reported = 0;
    loop {
        let used = crate::stack::high_water();
        if used > reported {
            reported = used;
            crate::report("stack=", used as u64, "");
        }
        embassy_time::Timer::after_millis(20).await;
    }
}

#[embassy_executor::task]
async fn receiver() {
    GATEWAY.receive(&mut BUFFER.take()[..]).await
}
