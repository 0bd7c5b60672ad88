//! The eyeflow firmware for an STM32F405 board: embassy-stm32 for the clocks, the time
//! driver and the peripherals. Capabilities: `gpio` (action `write` with a boolean
//! param `value` drives PA5; action `read` reads PC13) and `adc` (action `read` samples
//! PA0 on ADC1, raw 12-bit). The program is embedded at build time (`EYEFLOW_PROGRAM`,
//! build.rs); the trace goes out on USART2 TX (PA2, 115200 8N1).
#![no_std]
#![no_main]

use core::fmt::{self, Write};

use embassy_executor::Spawner;
use embassy_stm32::Peri;
use embassy_stm32::adc::{Adc, SampleTime};
use embassy_stm32::gpio::{Input, Level, Output, Pull, Speed};
use embassy_stm32::mode::Blocking;
use embassy_stm32::peripherals::{ADC1, PA0};
use embassy_stm32::usart::{self, UartTx};
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::Value;
use eyeflow_firmware::eyeflow_mcu::trace::{self, ErrorClass};
use eyeflow_firmware::hardware::{Call, Hardware};
use eyeflow_firmware::owned::Owned;
use eyeflow_firmware::program::Program;
use eyeflow_firmware::state::Event;
use eyeflow_firmware::verify::KEYRING;
use eyeflow_firmware::{actors, conductor};
use static_cell::StaticCell;

const CAPABILITIES: &[Capability] = &[
    Capability {
        id: "gpio",
        version: (1, 0, 0),
    },
    Capability {
        id: "adc",
        version: (1, 0, 0),
    },
];

static PROGRAM_FILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/program.ir"));
static PROGRAM: StaticCell<Program> = StaticCell::new();

/// The board's peripherals behind its capabilities.
struct Board {
    valve: Output<'static>,
    button: Input<'static>,
    adc: Adc<'static, ADC1>,
    sensor: Peri<'static, PA0>,
}

impl Hardware for Board {
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass> {
        match (call.capability, call.action) {
            ("gpio", "write") => match call.param("value") {
                Some(Value::Bool(on)) => {
                    self.valve.set_level(Level::from(on));
                    Ok(Owned::Bool(on))
                }
                _ => Err(ErrorClass::InvalidInput),
            },
            ("gpio", "read") => Ok(Owned::Bool(self.button.is_high())),
            ("adc", "read") => {
                let raw = self
                    .adc
                    .blocking_read(&mut self.sensor, SampleTime::CYCLES144);
                Ok(Owned::Num(f64::from(raw)))
            }
            _ => Err(ErrorClass::Unavailable),
        }
    }
}

/// No event source yet (the serial gateway brings them): every field is missing.
struct NoEvent;

impl Event for NoEvent {
    fn field(&self, _: &str) -> Option<Value<'static>> {
        None
    }
}

static NO_EVENT: NoEvent = NoEvent;

struct Serial(UartTx<'static, Blocking>);

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.blocking_write(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

#[embassy_executor::task]
async fn hardware(board: Board) {
    actors::hardware::serve(board).await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(Default::default());
    let Ok(tx) = UartTx::new_blocking(p.USART2, p.PA2, usart::Config::default()) else {
        return;
    };
    let mut out = Serial(tx);
    let program = PROGRAM.init(Program::new());
    if let Err(reason) = program.load(PROGRAM_FILE, KEYRING, CAPABILITIES) {
        let _ = trace::write_refused(&mut out, reason);
        return;
    }
    let program: &'static Program = program;
    let board = Board {
        valve: Output::new(p.PA5, Level::Low, Speed::Low),
        button: Input::new(p.PC13, Pull::None),
        adc: Adc::new(p.ADC1),
        sensor: p.PA0,
    };
    if conductor::spawn_actors(spawner).is_err() {
        return;
    }
    if let Ok(token) = hardware(board) {
        spawner.spawn(token);
    }
    conductor::run(program, &NO_EVENT, &mut out).await;
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m::asm::udf()
}
