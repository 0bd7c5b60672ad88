//! The eyeflow firmware for an STM32F405 board: embassy-stm32 for the clocks, the time
//! driver and the peripherals, behind [`Devices`]: `gpio` pin 0 = PA5 (output), pin 1 =
//! PC13 (input); `adc` channel 0 = PA0 on ADC1 (raw 12-bit); no I²C, SPI or UART
//! capability yet. The program is embedded at build time (`EYEFLOW_PROGRAM`,
//! build.rs); the trace goes out on USART2 TX (PA2, 115200 8N1).
#![no_std]
#![no_main]

// The byte-loop memory routines instead of compiler-builtins' larger ones.
use core::fmt::{self, Write};
use eyeflow_mem as _;

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
use eyeflow_firmware::hardware::{Absent, Devices, Gpio};
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

/// The board's pins: `gpio` pin 0 is PA5 (an output: the valve), pin 1 is PC13 (an
/// input: the button).
struct Pins {
    valve: Output<'static>,
    button: Input<'static>,
}

impl Gpio for Pins {
    fn write(&mut self, pin: u8, high: bool) -> Result<(), ErrorClass> {
        match pin {
            0 => {
                self.valve.set_level(Level::from(high));
                Ok(())
            }
            _ => Err(ErrorClass::InvalidInput),
        }
    }

    fn read(&mut self, pin: u8) -> Result<bool, ErrorClass> {
        match pin {
            0 => Ok(self.valve.is_set_high()),
            1 => Ok(self.button.is_high()),
            _ => Err(ErrorClass::InvalidInput),
        }
    }
}

/// ADC1; `adc` channel 0 is PA0.
struct Analog {
    adc: Adc<'static, ADC1>,
    sensor: Peri<'static, PA0>,
}

impl eyeflow_firmware::hardware::Adc for Analog {
    async fn read(&mut self, channel: u8) -> Result<u16, ErrorClass> {
        match channel {
            0 => Ok(self
                .adc
                .blocking_read(&mut self.sensor, SampleTime::CYCLES144)),
            _ => Err(ErrorClass::InvalidInput),
        }
    }
}

type Board = Devices<Pins, Analog, Absent, Absent, Absent>;

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
        gpio: Pins {
            valve: Output::new(p.PA5, Level::Low, Speed::Low),
            button: Input::new(p.PC13, Pull::None),
        },
        adc: Analog {
            adc: Adc::new(p.ADC1),
            sensor: p.PA0,
        },
        i2c: Absent,
        spi: Absent,
        uart: Absent,
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
