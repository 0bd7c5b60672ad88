//! The gateway's flash slots (`eyeflow_firmware::slots`) on a simulated NOR flash that
//! programs only erased words (or clears a word to zero) and can lose power after any
//! number of writes: what runs after each cut is the old program or the new one.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::rc::Rc;

use eyeflow_firmware::gateway::Slots;
use eyeflow_firmware::slots::{FlashSlots, HEADER, Memory, SECTOR_BYTES};

/// Two sectors in leaked memory; writes stop (silently, as power would) once `budget`
/// runs out.
#[derive(Clone)]
struct Nor {
    sectors: [*mut u8; 2],
    budget: Rc<Cell<usize>>,
    erases: Rc<Cell<usize>>,
}

// SAFETY: each test uses its flash from one thread.
unsafe impl Send for Nor {}

impl Nor {
    fn new() -> Self {
        let sector = || Box::leak(vec![0u8; SECTOR_BYTES].into_boxed_slice()).as_mut_ptr();
        Self {
            sectors: [sector(), sector()],
            budget: Rc::new(Cell::new(usize::MAX)),
            erases: Rc::new(Cell::new(0)),
        }
    }

    fn powered(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }

    fn bytes(&self, index: usize) -> &'static mut [u8] {
        // SAFETY: a leaked sector of SECTOR_BYTES; the test holds no borrow of the bytes
        // the slots change while they change them (the contract `Memory` states).
        unsafe { std::slice::from_raw_parts_mut(self.sectors[index], SECTOR_BYTES) }
    }
}

impl Memory for Nor {
    fn sector(&self, index: usize) -> &'static [u8] {
        self.bytes(index)
    }

    fn erase(&mut self, index: usize) {
        if self.powered() {
            self.erases.set(self.erases.get() + 1);
            self.bytes(index).fill(0xFF);
        }
    }

    fn program(&mut self, index: usize, offset: usize, word: [u8; 4]) {
        assert_eq!(offset % 4, 0, "unaligned program at {offset}");
        let target = &mut self.bytes(index)[offset..offset + 4];
        assert!(
            target == [0xFF; 4] || word == [0; 4],
            "programmed over written bytes at {offset} of sector {index}: {target:?} ← {word:?}"
        );
        if self.powered() {
            for (t, w) in target.iter_mut().zip(word) {
                *t &= w;
            }
        }
    }

    fn event(&self) -> &'static [u8] {
        &[]
    }

    fn set_event(&mut self, _: &[u8]) {}

    fn restart(&self) -> ! {
        panic!("restart")
    }
}

/// The slots as a start finds them (the gateway's own order: `ready` after loading).
fn start(nor: &Nor) -> FlashSlots<Nor> {
    let slots = FlashSlots::new(nor.clone());
    slots.ready();
    slots
}

/// Stages `file` as a DEPLOY does; the staged bytes.
fn stage(slots: &FlashSlots<Nor>, file: &[u8]) -> &'static [u8] {
    for (at, &b) in file.iter().enumerate() {
        slots.stage_byte(at, b);
    }
    slots.staged(file.len())
}

fn file(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
fn a_committed_program_runs_from_the_next_start_and_says_loaded_once() {
    let nor = Nor::new();
    let slots = start(&nor);
    assert_eq!(slots.active(), None);
    assert!(!slots.take_loaded_flag());
    let first = file(1, 1001);
    assert_eq!(stage(&slots, &first), first);
    slots.commit();
    let slots = start(&nor);
    assert_eq!(slots.active(), Some(&first[..]));
    assert!(slots.take_loaded_flag());
    assert!(!slots.take_loaded_flag());
    assert!(!start(&nor).take_loaded_flag());

    // The next one goes to the other sector; until its commit, the first one runs.
    let second = file(7, 8192);
    assert_eq!(stage(&slots, &second), second);
    assert_eq!(slots.active(), Some(&first[..]));
    slots.commit();
    let slots = start(&nor);
    assert_eq!(slots.active(), Some(&second[..]));
    assert!(slots.take_loaded_flag());

    // And the one after into the first sector again, erased at the start for it.
    let third = file(9, 3);
    assert_eq!(stage(&slots, &third), third);
    slots.commit();
    assert_eq!(start(&nor).active(), Some(&third[..]));
}

#[test]
fn a_refused_or_cut_short_deploy_leaves_the_running_program_and_a_clean_slot() {
    let nor = Nor::new();
    let slots = start(&nor);
    let running = file(3, 500);
    stage(&slots, &running);
    slots.commit();
    let slots = start(&nor);

    // Refused: the gateway makes the slot ready again; the next DEPLOY stages cleanly.
    stage(&slots, &file(50, 700));
    slots.ready();
    let next = file(60, 650);
    assert_eq!(stage(&slots, &next), next);
    assert_eq!(slots.active(), Some(&running[..]));
    slots.ready();

    // Cut short (the line went quiet mid-DEPLOY): the next DEPLOY's first byte erases.
    let erases = nor.erases.get();
    for (at, &b) in file(70, 300).iter().enumerate() {
        slots.stage_byte(at, b);
    }
    let last = file(80, 257);
    assert_eq!(stage(&slots, &last), last);
    assert_eq!(nor.erases.get(), erases + 1);
    assert_eq!(slots.active(), Some(&running[..]));
}

#[test]
fn a_power_cut_at_any_write_of_a_deploy_leaves_the_old_program_or_the_new_one() {
    let old = file(11, 901);
    let new = file(22, 1203);
    let mut outcomes = [0usize; 2];
    for budget in 0.. {
        let nor = Nor::new();
        let slots = start(&nor);
        stage(&slots, &old);
        slots.commit();
        let slots = start(&nor);
        assert!(slots.take_loaded_flag());
        nor.budget.set(budget);
        stage(&slots, &new);
        slots.commit();
        let complete = nor.budget.get() > 0;
        nor.budget.set(usize::MAX);
        let after = start(&nor);
        let running = after.active();
        if running == Some(&old[..]) {
            assert!(
                !after.take_loaded_flag(),
                "budget {budget}: the old one again"
            );
            assert_eq!(
                outcomes[1], 0,
                "budget {budget}: the old one after the new one"
            );
            outcomes[0] += 1;
        } else {
            assert_eq!(running, Some(&new[..]), "budget {budget}");
            assert!(after.take_loaded_flag());
            outcomes[1] += 1;
        }
        if complete {
            break;
        }
    }
    // Every cut before the magic's write (the last) keeps the old program: one per word
    // of the file, the length and the generation.
    assert_eq!(outcomes[0], new.len().div_ceil(4) + 3, "{outcomes:?}");
}

#[test]
fn a_forgotten_program_does_not_run_nor_does_the_one_before_it() {
    let nor = Nor::new();
    let slots = start(&nor);
    for seed in [1, 2] {
        stage(&slots, &file(seed, 40));
        slots.commit();
    }
    let slots = start(&nor);
    assert_eq!(slots.active(), Some(&file(2, 40)[..]));
    slots.forget();
    let slots = start(&nor);
    assert_eq!(slots.active(), None);
    let again = file(5, 41);
    assert_eq!(stage(&slots, &again), again);
    slots.commit();
    assert_eq!(start(&nor).active(), Some(&again[..]));
    assert_eq!(
        nor.bytes(0)[HEADER..HEADER + 41],
        again[..],
        "staged into the first sector once none runs"
    );
}
