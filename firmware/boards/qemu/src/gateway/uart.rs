//! mps2-an386's CMSDK APB UART0 (which QEMU binds to `-serial`), polled.
#![allow(unsafe_code)]

use eyeflow_firmware::gateway::Port;

const UART0: usize = 0x4000_4000;
const DATA: usize = UART0;
const STATE: usize = UART0 + 0x04;
const CTRL: usize = UART0 + 0x08;
const BAUDDIV: usize = UART0 + 0x10;
const TX_FULL: u32 = 1;
const RX_FULL: u32 = 2;

fn read_reg(at: usize) -> u32 {
    // SAFETY: a register of the UART0 block, mapped by mps2-an386.
    unsafe { core::ptr::read_volatile(at as *const u32) }
}

fn write_reg(at: usize, value: u32) {
    // SAFETY: as `read_reg`.
    unsafe { core::ptr::write_volatile(at as *mut u32, value) }
}

/// Enables transmit and receive.
pub(crate) fn init() {
    write_reg(BAUDDIV, 16);
    write_reg(CTRL, 0b11);
}

/// UART0 as the gateway's port.
pub(crate) struct Uart0;

impl Port for Uart0 {
    fn write(&self, bytes: &[u8]) {
        for &b in bytes {
            while read_reg(STATE) & TX_FULL != 0 {}
            write_reg(DATA, u32::from(b));
        }
    }

    fn read(&self) -> Option<u8> {
        (read_reg(STATE) & RX_FULL != 0).then(|| read_reg(DATA) as u8)
    }
}
