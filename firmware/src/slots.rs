//! The gateway's program slots on two sectors of NOR flash (A/B), board-independent: a
//! board gives its [`Memory`] and puts a [`FlashSlots`] in its [`Gateway`](crate::gateway::Gateway).
//! A DEPLOY is programmed, as it arrives, into the sector that does not hold the running
//! program (kept erased for it); a commit writes that sector's header last, so that a
//! power cut at any point leaves the old program or the new one, never a torn one.
//!
//! Each sector holds a 16-byte header, then the file:
//!
//! ```text
//! "EYFP"  generation (u32le)  file length (u32le)  announced (FF FF FF FF until LOADED said)
//! ```
//!
//! The running program is the sector with the magic and the highest generation. Writes that
//! fail show in what the sector reads back: a file that does not read back as sent fails
//! its signature check (the gateway checks the mapped bytes), a header that does not makes
//! the next start run the program before it.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use eyeflow_mcu::limits::MAX_PROGRAM_BYTES;

use crate::gateway::Slots;

/// A sector's header bytes.
pub const HEADER: usize = 16;
/// The bytes of a sector the slots use: a header and the largest file.
pub const SECTOR_BYTES: usize = HEADER + MAX_PROGRAM_BYTES;
const MAGIC: [u8; 4] = *b"EYFP";
const ERASED: [u8; 4] = [0xFF; 4];

/// What a board keeps for its gateway: two sectors of memory-mapped NOR flash (erased
/// bytes read `FF`; programming only clears bits), a RAM area for the RUN's event, and
/// its reset.
pub trait Memory: Send {
    /// Sector `index` (0 or 1) as mapped, at least [`SECTOR_BYTES`] long. It changes only
    /// through [`erase`](Memory::erase) and [`program`](Memory::program), which the slots
    /// call only while no borrow of the bytes they change is in use.
    fn sector(&self, index: usize) -> &'static [u8];
    /// Erases sector `index`.
    fn erase(&mut self, index: usize);
    /// Programs `word` at `offset` (a multiple of 4, below [`SECTOR_BYTES`]) of sector
    /// `index`.
    fn program(&mut self, index: usize, offset: usize, word: [u8; 4]);
    /// The RUN payload of the execution.
    fn event(&self) -> &'static [u8];
    /// Keeps a RUN's payload for its execution.
    fn set_event(&mut self, payload: &[u8]);
    /// Restarts the core.
    fn restart(&self) -> !;
}

/// A sector's header, when it has the magic.
#[derive(Debug, Clone, Copy)]
struct Header {
    generation: u32,
    len: usize,
    announced: bool,
}

fn word(bytes: &[u8], at: usize) -> [u8; 4] {
    let mut w = ERASED;
    if let Some(src) = bytes.get(at..at + 4) {
        w.copy_from_slice(src);
    }
    w
}

fn header(sector: &[u8]) -> Option<Header> {
    let len = u32::from_le_bytes(word(sector, 8)) as usize;
    (word(sector, 0) == MAGIC && len <= MAX_PROGRAM_BYTES).then(|| Header {
        generation: u32::from_le_bytes(word(sector, 4)),
        len,
        announced: word(sector, 12) != ERASED,
    })
}

struct Inner<M> {
    memory: M,
    /// The staged file's length, once a DEPLOY is complete.
    staged: usize,
    /// Whether bytes were staged since the staging sector was last made ready.
    dirty: bool,
    /// The bytes of the word being staged.
    pending: [u8; 4],
}

impl<M: Memory> Inner<M> {
    /// The running program's sector and header.
    fn active(&self) -> Option<(usize, Header)> {
        let headers = [0, 1].map(|i| header(self.memory.sector(i)));
        match headers {
            [Some(a), Some(b)] if b.generation > a.generation => Some((1, b)),
            [Some(a), _] => Some((0, a)),
            [None, Some(b)] => Some((1, b)),
            [None, None] => None,
        }
    }

    /// The sector a DEPLOY is staged into.
    fn staging(&self) -> usize {
        self.active().map_or(0, |(i, _)| 1 - i)
    }

    /// Erases the staging sector unless it is blank.
    fn ready(&mut self) {
        let staging = self.staging();
        let sector = self.memory.sector(staging);
        if sector.iter().take(SECTOR_BYTES).any(|&b| b != 0xFF) {
            self.memory.erase(staging);
        }
        self.dirty = false;
    }
}

/// Program slots on a board's two flash sectors ([`Memory`]).
pub struct FlashSlots<M> {
    inner: Mutex<CriticalSectionRawMutex, RefCell<Inner<M>>>,
}

impl<M: Memory> FlashSlots<M> {
    /// The slots on `memory`.
    pub const fn new(memory: M) -> Self {
        Self {
            inner: Mutex::new(RefCell::new(Inner {
                memory,
                staged: 0,
                dirty: false,
                pending: ERASED,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<M>) -> R) -> R {
        self.inner.lock(|inner| f(&mut inner.borrow_mut()))
    }
}

impl<M: Memory> Slots for FlashSlots<M> {
    fn active(&self) -> Option<&'static [u8]> {
        self.with(|inner| {
            let (i, header) = inner.active()?;
            inner.memory.sector(i).get(HEADER..HEADER + header.len)
        })
    }

    /// Clears the magic of both sectors: no program runs at the next start (an older one
    /// would not be what an operator deployed last).
    fn forget(&self) {
        self.with(|inner| {
            for i in [0, 1] {
                if header(inner.memory.sector(i)).is_some() {
                    inner.memory.program(i, 0, [0; 4]);
                }
            }
        })
    }

    fn ready(&self) {
        self.with(Inner::ready)
    }

    fn stage_byte(&self, at: usize, byte: u8) {
        if at >= MAX_PROGRAM_BYTES {
            return;
        }
        self.with(|inner| {
            if at == 0 && inner.dirty {
                // A DEPLOY staged before this one (cut short) was not followed by `ready`.
                inner.ready();
            }
            inner.dirty = true;
            if at.is_multiple_of(4) {
                inner.pending = ERASED;
            }
            inner.pending[at % 4] = byte;
            if at % 4 == 3 {
                let staging = inner.staging();
                let word = inner.pending;
                inner.memory.program(staging, HEADER + at - 3, word);
            }
        })
    }

    fn staged(&self, len: usize) -> &'static [u8] {
        let len = len.min(MAX_PROGRAM_BYTES);
        self.with(|inner| {
            let staging = inner.staging();
            if !len.is_multiple_of(4) {
                let word = inner.pending;
                inner.memory.program(staging, HEADER + len - len % 4, word);
            }
            inner.staged = len;
            inner
                .memory
                .sector(staging)
                .get(HEADER..HEADER + len)
                .unwrap_or_default()
        })
    }

    /// Writes the staged sector's header (generation above the running one's), last.
    fn commit(&self) {
        self.with(|inner| {
            let staging = inner.staging();
            let generation = inner
                .active()
                .map_or(1, |(_, h)| h.generation.wrapping_add(1));
            let len = u32::try_from(inner.staged).unwrap_or(0);
            inner.memory.program(staging, 8, len.to_le_bytes());
            inner.memory.program(staging, 4, generation.to_le_bytes());
            inner.memory.program(staging, 0, MAGIC);
        })
    }

    /// Whether the running program was not announced yet (and marks it announced).
    fn take_loaded_flag(&self) -> bool {
        self.with(|inner| match inner.active() {
            Some((i, header)) if !header.announced => {
                inner.memory.program(i, 12, [0; 4]);
                true
            }
            _ => false,
        })
    }

    fn event(&self) -> &'static [u8] {
        self.with(|inner| inner.memory.event())
    }

    fn set_event(&self, payload: &[u8]) {
        self.with(|inner| inner.memory.set_event(payload))
    }

    fn restart(&self) -> ! {
        self.with(|inner| inner.memory.restart())
    }
}
