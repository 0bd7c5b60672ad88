//! embassy-time's driver on the Cortex-M SysTick: a 1 kHz tick counted in the SysTick
//! exception, which also wakes the timers that expired (embassy-stm32's driver needs the
//! clock controller, which QEMU does not emulate).
#![allow(unsafe_code)]

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            queue.schedule_wake(at, waker);
            // A deadline already past is woken now rather than at the next tick.
            queue.next_expiration(self.ticks.borrow(cs).get());
        });
    }
}

// SAFETY: the macro defines the two `#[no_mangle]` functions embassy-time links against;
// nothing else in the image defines them (the QEMU board has no other time driver).
embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Core clock cycles since the tick started: whole ticks plus the SysTick counter's
/// progress in the current one (for the `-icount` figures).
#[cfg(feature = "conformance")]
pub(crate) fn cycles(cpu_hz: u32) -> u64 {
    let per_tick = u64::from(reload(cpu_hz)) + 1;
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs).get();
        let into = per_tick.saturating_sub(u64::from(SYST::get_current()) + 1);
        ticks * per_tick + into
    })
}

fn reload(cpu_hz: u32) -> u32 {
    (cpu_hz / 1_000).saturating_sub(1).clamp(1, 0x00ff_ffff)
}

/// Starts the 1 kHz tick for a core clocked at `cpu_hz`.
pub(crate) fn start(mut syst: SYST, cpu_hz: u32) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(reload(cpu_hz));
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        ticks.set(ticks.get() + 1);
        DRIVER
            .queue
            .borrow(cs)
            .borrow_mut()
            .next_expiration(ticks.get());
    });
}
