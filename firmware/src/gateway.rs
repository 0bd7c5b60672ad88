//! The device end of the serial gateway (`eyeflow_mcu::frame`, docs/firmware.md),
//! board-independent: a board gives its serial port ([`Port`]) and the place that keeps
//! programs and the RUN's event ([`Slots`]), puts a [`Gateway`] in a `static` and spawns
//! one task around each of [`Gateway::heartbeat`], [`Gateway::receive`] and
//! [`Gateway::run`] (Embassy tasks are not generic):
//!
//! - HELLO every heartbeat until a PONG answers, then PING; a PING left unanswered makes
//!   it say HELLO again (one that says it did not start: the node keeps waiting for what
//!   it asked);
//! - DEPLOY: the file is staged in the slot that is not running as it arrives
//!   ([`deploy`](crate::deploy)) and, between executions, loaded with every check of
//!   loading into the gateway's one [`Program`] (in place: a second program would not fit
//!   a device's stack); refused → the running program is loaded again from its slot, then
//!   REFUSED with the trace's reason; loaded → committed, and the board restarts on it
//!   (the restart says LOADED). A running program's file is thus never rewritten;
//! - RUN: its fields become the execution's event (kept by the slots, rewritten only
//!   between executions), its trace lines go out as TRACE frames;
//! - LLM_CALL and EMIT_EVENT, through [`Linked`] (the board's hardware with this link):
//!   LLM_REQUEST with the frozen context, then the LLM_ANSWER of that request id (the
//!   instruction's timeout bounds the wait; a late answer is dropped); EVENT.

use core::cell::Cell;
use core::fmt::{self, Write};

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::mutex::Mutex as AsyncMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Timer, with_timeout};
use eyeflow_mcu::Value;
use eyeflow_mcu::frame::Fields;
use eyeflow_mcu::frame::{
    Capabilities, Capability as Declared, Decoder, Frame, Message, ProgramRef, kind,
};
use eyeflow_mcu::trace::ErrorClass;

use crate::capability::Capability;
use crate::conductor;
use crate::deploy::DeployStream;
use crate::hardware::{Call, Emitted, Hardware, LlmCall};
use crate::owned::Owned;
use crate::program::{self, Program};
use crate::state::Event;
use crate::verify::KEYRING;

/// Silence after which a partial frame will not complete, in receive polls (1 ms each).
const IDLE_POLLS: u32 = 200;

/// A serial port, polled.
pub trait Port: Sync {
    /// Writes `bytes` (blocking until they are out).
    fn write(&self, bytes: &[u8]);
    /// The next received byte, if one is waiting.
    fn read(&self) -> Option<u8>;
}

/// Where a board keeps the running program, a staged one and the RUN's event, in memory
/// that a restart keeps: [`FlashSlots`](crate::slots::FlashSlots) on a board's flash. Every
/// borrow it hands out is `'static`: an implementation must never rewrite the running
/// program's file, and rewrites the staged file or the event only when [`Gateway`] asks
/// (while nothing borrows them).
pub trait Slots: Sync {
    /// The running program's file, if a DEPLOY left one.
    fn active(&self) -> Option<&'static [u8]>;
    /// Forgets the running program (it did not load again).
    fn forget(&self);
    /// Makes the slot that is not running ready for the next DEPLOY (a flash slot is
    /// erased): at the start, and after a DEPLOY was refused.
    fn ready(&self);
    /// Writes byte `at` (below [`MAX_PAYLOAD`](eyeflow_mcu::frame::MAX_PAYLOAD)) of a DEPLOY's file into the slot that is
    /// not running, as it arrives.
    fn stage_byte(&self, at: usize, byte: u8);
    /// The `len` bytes staged, for loading.
    fn staged(&self, len: usize) -> &'static [u8];
    /// Makes the staged file the running program from the next start, which says LOADED.
    fn commit(&self);
    /// Whether this start follows a commit (and forgets it).
    fn take_loaded_flag(&self) -> bool;
    /// The RUN payload of the execution.
    fn event(&self) -> &'static [u8];
    /// Keeps a RUN's payload for its execution.
    fn set_event(&self, payload: &[u8]);
    /// Restarts the core (on the committed program).
    fn restart(&self) -> !;
}

/// A PONG arrived.
static PONGED: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// A RUN's event is kept.
static RUN: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// No execution runs.
static IDLE: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// The running program: held by an execution, and by a DEPLOY's check between them. A
/// `static` of its own rather than a field of the [`Gateway`], whose other fields are not
/// zero bytes: an empty program is, so it lives in `.bss` instead of being copied from flash.
static PROGRAM: AsyncMutex<CriticalSectionRawMutex, Program> = AsyncMutex::new(Program::new());
/// An LLM_ANSWER arrived: its request id and result.
static ANSWER: Signal<CriticalSectionRawMutex, (u32, Result<Owned, ErrorClass>)> = Signal::new();

/// The largest message the device sends: an LLM_REQUEST or EVENT with `MAX_PARAMS`
/// fields of the longest names and strings, ids and a topic.
const MAX_SENT: usize = 512;

/// The gateway of a board with port `P` and slots `S`.
pub struct Gateway<P, S> {
    port: P,
    slots: S,
    device: &'static str,
    firmware: &'static str,
    capabilities: &'static [Capability],
    declared: &'static [Declared<'static>],
    heartbeat: Duration,
    seq: Mutex<CriticalSectionRawMutex, Cell<u8>>,
    request: Mutex<CriticalSectionRawMutex, Cell<u32>>,
}

impl<P: Port, S: Slots> Gateway<P, S> {
    /// The gateway of device `device` (as its HELLO says), firmware version `firmware`,
    /// providing `capabilities` (declared in HELLO as `declared`), with a PING every
    /// `heartbeat`.
    pub const fn new(
        port: P,
        slots: S,
        device: &'static str,
        firmware: &'static str,
        capabilities: &'static [Capability],
        declared: &'static [Declared<'static>],
        heartbeat: Duration,
    ) -> Self {
        Self {
            port,
            slots,
            device,
            firmware,
            capabilities,
            declared,
            heartbeat,
            seq: Mutex::new(Cell::new(0)),
            request: Mutex::new(Cell::new(0)),
        }
    }

    /// The board's `hardware` with this link to the node (LLM_CALL, EMIT_EVENT).
    pub const fn linked<H>(&'static self, hardware: H) -> Linked<P, S, H> {
        Linked {
            gateway: self,
            hardware,
        }
    }

    /// Sends one message (written whole: nothing else runs meanwhile).
    fn send(&self, message: &Message<'_>) {
        let mut out = [0u8; MAX_SENT];
        let seq = self.seq.lock(|s| {
            let seq = s.get();
            s.set(seq.wrapping_add(1));
            seq
        });
        if let Ok(len) = message.encode(seq, &mut out) {
            self.port.write(&out[..len]);
        }
    }

    /// The running program's id and version.
    fn identity(&self) -> Option<ProgramRef<'static>> {
        let (id, version) = program::identity(self.slots.active()?)?;
        Some(ProgramRef { id, version })
    }

    /// Loads the program the slots kept (says LOADED after a commit); whether there is
    /// one. Called before the gateway's tasks run.
    pub fn start(&self) -> bool {
        let loaded = PROGRAM
            .try_lock()
            .is_ok_and(|mut program| self.load_active(&mut program));
        if !loaded {
            self.slots.forget();
        }
        self.slots.ready();
        if self.slots.take_loaded_flag()
            && let Some(program) = self.identity()
        {
            self.send(&Message::Loaded(program));
        }
        loaded
    }

    /// The heartbeat: HELLO until a PONG answers, then PING. Its HELLOs say whether a PONG
    /// answered one since the start.
    pub async fn heartbeat(&self) -> ! {
        let mut greeted = false;
        let mut started = true;
        loop {
            PONGED.reset();
            if greeted {
                self.send(&Message::Ping);
            } else {
                self.send(&Message::Hello {
                    device: self.device,
                    firmware: self.firmware,
                    capabilities: Capabilities::List(self.declared),
                    program: self.identity(),
                    started,
                });
            }
            greeted = with_timeout(self.heartbeat, PONGED.wait()).await.is_ok();
            started &= !greeted;
            if greeted {
                Timer::after(self.heartbeat).await;
            }
        }
    }

    /// The running program the slots keep, loaded into `program`; whether it loaded.
    fn load_active(&self, program: &mut Program) -> bool {
        self.slots
            .active()
            .is_some_and(|file| program.load(file, KEYRING, self.capabilities).is_ok())
    }

    /// Runs each RUN's execution of the program (none when `loaded` is false).
    pub async fn run(&'static self, loaded: bool) -> ! {
        let mut execution = 0u32;
        IDLE.signal(());
        loop {
            RUN.wait().await;
            if loaded {
                execution = execution.wrapping_add(1);
                let mut out = TraceOut {
                    gateway: self,
                    execution,
                    line: heapless::String::new(),
                };
                let program = PROGRAM.lock().await;
                // As `dyn Write`: one copy of the conductor for every board's writers.
                conductor::run(&program, self, &mut (&mut out as &mut dyn Write)).await;
            }
            IDLE.signal(());
        }
    }

    /// Reads frames from the port into `buffer` (the largest frame other than a DEPLOY
    /// the board takes: a DEPLOY's file goes straight to the staging slot) and handles
    /// them.
    pub async fn receive(&self, buffer: &'static mut [u8]) -> ! {
        let mut decoder = Decoder::new(buffer);
        let mut deploys = DeployStream::new();
        let mut quiet = 0u32;
        loop {
            let mut got = false;
            let mut deployed = None;
            while let Some(byte) = self.port.read() {
                decoder.push(byte);
                got = true;
                deployed = deploys.push(byte, &self.slots);
                if deployed.is_some() {
                    // Checked before any later byte can be staged.
                    break;
                }
            }
            if got {
                quiet = 0;
            } else {
                quiet = quiet.saturating_add(1);
                if quiet == IDLE_POLLS {
                    decoder.idle();
                    deploys.idle();
                }
            }
            while let Some(frame) = decoder.next_frame() {
                let Ok(message) = Message::decode_for_device(&frame) else {
                    continue;
                };
                match message {
                    Message::Pong => PONGED.signal(()),
                    Message::LlmAnswer { request, result } => {
                        // A string the device cannot hold is an answer it cannot use.
                        let result =
                            result.and_then(|v| Owned::of(v).ok_or(ErrorClass::InvalidOutput));
                        ANSWER.signal((request, result));
                    }
                    Message::Run { .. } => {
                        IDLE.wait().await;
                        self.slots.set_event(frame.payload);
                        RUN.signal(());
                    }
                    // Staged by `deploys` as it arrived.
                    Message::Deploy { .. } => {}
                    _ => {}
                }
            }
            if let Some(len) = deployed {
                IDLE.wait().await;
                self.deploy(self.slots.staged(len)).await;
                IDLE.signal(());
            }
            if got {
                embassy_futures::yield_now().await;
            } else {
                Timer::after_millis(1).await;
            }
        }
    }

    /// Loads a staged DEPLOY in the running program's place: on success the board restarts
    /// on it; on a refusal the running program is loaded again from its slot (it loaded at
    /// the start; should it not, the board restarts without one), then REFUSED.
    async fn deploy(&self, staged: &'static [u8]) {
        let mut program = PROGRAM.lock().await;
        match program.load(staged, KEYRING, self.capabilities) {
            Ok(()) => {
                self.slots.commit();
                self.slots.restart()
            }
            Err(reason) => {
                if self.slots.active().is_some() && !self.load_active(&mut program) {
                    self.slots.forget();
                    self.slots.restart()
                }
                // Before the answer: the node may send the next DEPLOY right after it.
                self.slots.ready();
                self.send(&Message::Refused {
                    reason: reason.name(),
                })
            }
        }
    }
}

/// A board's hardware with the gateway's link to the node: hardware calls go to the
/// board, LLM_CALLs and EMIT_EVENTs to the node.
pub struct Linked<P: 'static, S: 'static, H> {
    gateway: &'static Gateway<P, S>,
    hardware: H,
}

impl<P: Port, S: Slots, H: Hardware> Hardware for Linked<P, S, H> {
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass> {
        self.hardware.call(call).await
    }

    async fn llm(&mut self, call: &LlmCall<'_>) -> Result<Owned, ErrorClass> {
        let gateway = self.gateway;
        let program = gateway.identity().ok_or(ErrorClass::InvalidInput)?;
        let request = gateway.request.lock(|r| {
            let next = r.get().wrapping_add(1);
            r.set(next);
            next
        });
        ANSWER.reset();
        gateway.send(&Message::LlmRequest {
            request,
            program,
            instruction: call.instruction,
            context: Fields::List(call.context),
        });
        loop {
            let (answered, result) = ANSWER.wait().await;
            if answered == request {
                return result;
            }
        }
    }

    async fn emit(&mut self, event: &Emitted<'_>) -> Result<(), ErrorClass> {
        self.gateway.send(&Message::Event {
            topic: event.topic,
            key: event.key,
            fields: Fields::List(event.fields),
        });
        Ok(())
    }
}

/// The RUN's fields are the execution's event.
impl<P: Port, S: Slots> Event for Gateway<P, S> {
    fn field(&self, path: &str) -> Option<Value<'static>> {
        let frame = Frame {
            kind: kind::RUN,
            seq: 0,
            payload: self.slots.event(),
        };
        match Message::decode_for_device(&frame) {
            Ok(Message::Run { fields }) => fields.iter().find(|(p, _)| *p == path).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One TRACE frame per line of an execution's trace.
struct TraceOut<'g, P, S> {
    gateway: &'g Gateway<P, S>,
    execution: u32,
    line: heapless::String<160>,
}

impl<P: Port, S: Slots> Write for TraceOut<'_, P, S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                self.gateway.send(&Message::Trace {
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
