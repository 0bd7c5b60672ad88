//! The gateway's memory on the STM32F405 ([`Memory`], under the firmware's
//! [`FlashSlots`](eyeflow_firmware::slots::FlashSlots)): flash sectors 10 and 11 (128 KB
//! each, outside the image: memory.x) for the two program slots, the RUN's event in CCM
//! RAM (which no Rust object occupies), and the core's reset.
//!
//! Erasing a 128 KB sector takes 1–2 s, during which the core stalls (it runs from the same
//! flash): the slots erase only at the start and after a refused DEPLOY, before its
//! REFUSED goes out.
//!
//! Soundness of the `'static` borrows handed out here: the flash is mapped memory that
//! changes only through the flash controller, which [`FlashSlots`](eyeflow_firmware::slots::FlashSlots)
//! drives only over bytes nothing borrows; the event area is written only between
//! executions.
#![allow(unsafe_code)]

use embassy_stm32::flash::{Blocking, Flash};
use eyeflow_firmware::slots::{Memory, SECTOR_BYTES};

/// The flash's address.
const FLASH_BASE: usize = 0x0800_0000;
/// Sectors 10 and 11, as offsets from [`FLASH_BASE`].
const SECTORS: [u32; 2] = [0x000C_0000, 0x000E_0000];
/// Their size.
const SECTOR_SIZE: u32 = 128 * 1024;
/// The CCM RAM: the event's length, then the event.
const EVENT_LENGTH: usize = 0x1000_0000;
const EVENT: usize = 0x1000_0004;
/// The event area's size: the largest RUN payload kept.
pub(crate) const EVENT_MAX: usize = 1024;

const _: () = assert!(SECTOR_BYTES as u32 <= SECTOR_SIZE);

/// The board's flash and CCM RAM.
pub(crate) struct Stm32Memory {
    flash: Flash<'static, Blocking>,
}

impl Stm32Memory {
    pub(crate) fn new(flash: Flash<'static, Blocking>) -> Self {
        Self { flash }
    }
}

/// Drops what the flash's data cache holds: an erase or a write does not update it
/// (RM0090, 3.5.2), and the slots read back what they wrote (the blank check, the staged
/// file's signature check).
fn reset_data_cache() {
    let acr = embassy_stm32::pac::FLASH.acr();
    let enabled = acr.read().dcen();
    acr.modify(|w| w.set_dcen(false));
    acr.modify(|w| w.set_dcrst(true));
    acr.modify(|w| w.set_dcrst(false));
    acr.modify(|w| w.set_dcen(enabled));
}

fn view(at: usize, len: usize) -> &'static [u8] {
    // SAFETY: the range lies inside one program sector or the CCM event area (lengths are
    // capped), both always readable, and is not changed while this borrow is in use
    // (module doc).
    unsafe { core::slice::from_raw_parts(at as *const u8, len) }
}

impl Memory for Stm32Memory {
    fn sector(&self, index: usize) -> &'static [u8] {
        view(FLASH_BASE + SECTORS[index & 1] as usize, SECTOR_BYTES)
    }

    /// A failed erase leaves bytes that are not blank: the next DEPLOY staged there does
    /// not read back as sent, and is refused (`bad_signature`).
    fn erase(&mut self, index: usize) {
        let from = SECTORS[index & 1];
        let _ = self.flash.blocking_erase(from, from + SECTOR_SIZE);
        reset_data_cache();
    }

    fn program(&mut self, index: usize, offset: usize, word: [u8; 4]) {
        if let Ok(offset) = u32::try_from(offset) {
            let _ = self
                .flash
                .blocking_write(SECTORS[index & 1] + offset, &word);
            reset_data_cache();
        }
    }

    fn event(&self) -> &'static [u8] {
        // SAFETY: an aligned word of CCM RAM (module doc).
        let len = unsafe { core::ptr::read_volatile(EVENT_LENGTH as *const u32) };
        view(EVENT, (len as usize).min(EVENT_MAX))
    }

    /// Keeps a RUN's payload (cut to the area: it then does not decode).
    fn set_event(&mut self, payload: &[u8]) {
        let len = payload.len().min(EVENT_MAX);
        // SAFETY: the destination is the CCM event area, which nothing borrows between
        // executions (module doc); its length word follows.
        unsafe {
            core::ptr::copy_nonoverlapping(payload.as_ptr(), EVENT as *mut u8, len);
            core::ptr::write_volatile(EVENT_LENGTH as *mut u32, len as u32);
        }
    }

    fn restart(&self) -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }
}
