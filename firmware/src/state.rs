//! What one execution has computed so far — each instruction's result and the execution
//! memory (L1) — shared by the actors, and the [`Env`] expressions read it through.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use eyeflow_mcu::code::{self, Env};
use eyeflow_mcu::limits::{MAX_INSTRUCTIONS, MAX_L1_KEYS};
use eyeflow_mcu::trace::ErrorClass;
use eyeflow_mcu::{Error, Value};
use heapless::Vec;

use crate::owned::Owned;
use crate::program::Program;

/// The event that started the execution: its fields by dotted path (without `event.`).
pub trait Event: Sync {
    /// The field at `path`, if the event has it.
    fn field(&self, path: &str) -> Option<Value<'static>>;
}

impl Event for eyeflow_mcu::script::Script<'static> {
    fn field(&self, path: &str) -> Option<Value<'static>> {
        self.event_field(path)
    }
}

/// Whether `script` describes a world the server runs too: no event field inside another
/// field's value (`a` and `a.b`), every number finite. A script that is not is refused
/// `malformed`, as the server refuses it.
pub fn script_is_sound(script: &eyeflow_mcu::script::Script<'_>) -> bool {
    let finite = |v: &Value<'_>| !matches!(v, Value::Num(n) if !n.is_finite());
    let nested = script.fields().any(|(outer, _)| {
        script.fields().any(|(inner, _)| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    });
    !nested
        && script.fields().all(|(_, v)| finite(&v))
        && script
            .answers()
            .all(|a| a.result.as_ref().map_or(true, finite))
}

/// The execution's state.
pub(crate) struct State {
    /// The name each instruction's result is read under (its `output`), copied from the
    /// program at the start: the state then borrows no program, which a gateway reloads in
    /// place between executions (`None` rather than `""`, whose pointer is not zero: the
    /// state stays in `.bss`).
    names: [Option<&'static str>; MAX_INSTRUCTIONS],
    event: Option<&'static dyn Event>,
    /// Each instruction's result, visible when its bit of `bound` is set (a bit mask
    /// rather than `Option`s: `None`'s tag is not zero, which put the whole state in
    /// `.data`, its initial bytes copied from flash).
    outputs: [Owned; MAX_INSTRUCTIONS],
    bound: u32,
    /// Results that are lists on the server (a LOOP's per-round objects): an expression
    /// cannot read them (`NotScalar`), though the trace shows their round count.
    lists: u32,
    l1: Vec<(&'static str, Owned), MAX_L1_KEYS>,
}

pub(crate) static STATE: Mutex<CriticalSectionRawMutex, RefCell<State>> =
    Mutex::new(RefCell::new(State {
        names: [None; MAX_INSTRUCTIONS],
        event: None,
        outputs: [const { Owned::Null }; MAX_INSTRUCTIONS],
        bound: 0,
        lists: 0,
        l1: Vec::new(),
    }));

/// Starts a new execution of `program` for `event`.
pub(crate) fn begin(program: &Program, event: &'static dyn Event) {
    STATE.lock(|s| {
        let mut s = s.borrow_mut();
        s.names = [None; MAX_INSTRUCTIONS];
        for (name, node) in s.names.iter_mut().zip(&program.nodes) {
            *name = Some(node.output);
        }
        s.event = Some(event);
        s.outputs = [const { Owned::Null }; MAX_INSTRUCTIONS];
        s.bound = 0;
        s.lists = 0;
        s.l1.clear();
    });
}

/// Makes instruction `index`'s result visible (`None`: no longer visible).
pub(crate) fn bind(index: usize, value: Option<Owned>) {
    STATE.lock(|s| {
        let s = &mut *s.borrow_mut();
        let bit = 1 << index;
        s.lists &= !bit;
        if let Some(slot) = s.outputs.get_mut(index) {
            match value {
                Some(value) => {
                    *slot = value;
                    s.bound |= bit;
                }
                None => {
                    *slot = Owned::Null;
                    s.bound &= !bit;
                }
            }
        }
    });
}

/// Makes instruction `index`'s result visible as a list (a LOOP that ran to its end).
pub(crate) fn bind_list(index: usize) {
    bind(index, Some(Owned::Null));
    STATE.lock(|s| s.borrow_mut().lists |= 1 << index);
}

/// Evaluates `code` against the execution's state; an empty code gives `null`.
pub(crate) fn evaluate(code: &[u8]) -> Result<Owned, ErrorClass> {
    if code.is_empty() {
        return Ok(Owned::Null);
    }
    STATE.lock(|s| {
        let s = s.borrow();
        let value = code::eval(code, &*s).map_err(|_| ErrorClass::InvalidInput)?;
        Owned::of(value).ok_or(ErrorClass::InvalidInput)
    })
}

/// Stores `value` under L1 `key` (the program's keys fit: checked when it loaded).
pub(crate) fn store(key: &'static str, value: Owned) -> Result<(), ErrorClass> {
    STATE.lock(|s| {
        let mut s = s.borrow_mut();
        if let Some(slot) = s.l1.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
            return Ok(());
        }
        s.l1.push((key, value))
            .map_err(|_| ErrorClass::ResourceExhausted)
    })
}

/// The L1 value under `key`, if stored.
pub(crate) fn load(key: &str) -> Option<Owned> {
    STATE.lock(|s| {
        s.borrow()
            .l1
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    })
}

impl Env for State {
    fn get(&self, path: &str) -> Result<Value<'_>, Error> {
        let (head, rest) = match path.split_once('.') {
            Some((head, rest)) => (head, Some(rest)),
            None => (path, None),
        };
        if head == "event" {
            let event = self.event.ok_or(Error::MissingField)?;
            return match rest {
                None => Err(Error::NotScalar),
                Some(rest) => event.field(rest).ok_or(Error::MissingField),
            };
        }
        let bound =
            self.names
                .iter()
                .zip(&self.outputs)
                .enumerate()
                .find_map(|(i, (name, out))| {
                    (self.bound & (1 << i) != 0 && *name == Some(head)).then_some((i, out))
                });
        match (bound, rest) {
            (None, _) => Err(Error::MissingField),
            (Some((i, _)), _) if self.lists & (1 << i) != 0 => Err(Error::NotScalar),
            // A scalar has no fields.
            (Some(_), Some(_)) => Err(Error::MissingField),
            (Some((_, value)), None) => Ok(value.get()),
        }
    }
}
