//! The memory routines the compiler calls (`memcpy`, `memmove`, `memset`, `memcmp` and their
//! ARM EABI names), as plain loops — word by word when everything is aligned, else byte by
//! byte: compiler-builtins' versions, unrolled for speed, take 3.3 KB of the device image's
//! flash; these take a few hundred bytes. The exported names exist only on the device
//! (`target_os = "none"`: on a host they would replace the C library's); its definitions are
//! strong and compiler-builtins' weak, so the linker takes these. The loops themselves are
//! tested on the host.
//!
//! `no_builtins` keeps the compiler from turning these loops back into calls to
//! themselves.
#![no_std]
#![no_builtins]
#![allow(unsafe_code)]
// On a host only the tests call the loops.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

/// Copies `n` bytes from `src` to `dest`, first to last.
///
/// # Safety
/// Both ranges valid for `n` bytes; `dest` not after `src` when they overlap.
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    if (dest as usize | src as usize | n) & 3 == 0 {
        // Word by word when everything is aligned (field elements, hashes, buffers).
        while i < n {
            // SAFETY: `i + 4 <= n` (`n` a multiple of 4), aligned, inside both ranges; a
            // word is read whole before it is written, and forward overlap reads ahead.
            unsafe { *dest.add(i).cast::<u32>() = *src.add(i).cast::<u32>() };
            i += 4;
        }
        return;
    }
    while i < n {
        // SAFETY: `i < n`, inside both ranges (the caller's contract).
        unsafe { *dest.add(i) = *src.add(i) };
        i += 1;
    }
}

/// Copies `n` bytes from `src` to `dest`, last to first.
///
/// # Safety
/// Both ranges valid for `n` bytes.
unsafe fn copy_backward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: `i < n`, inside both ranges; each byte is read before a write reaches it.
        unsafe { *dest.add(i) = *src.add(i) };
    }
}

/// Copies `n` bytes from `src` to `dest`, which may overlap.
///
/// # Safety
/// Both ranges valid for `n` bytes.
unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: `dest` before `src`, or past its end: forward never overwrites unread bytes.
        unsafe { copy_forward(dest, src, n) }
    } else {
        // SAFETY: `dest` inside the source range: backward.
        unsafe { copy_backward(dest, src, n) }
    }
}

/// Sets `n` bytes at `dest` to `byte`.
///
/// # Safety
/// The range valid for `n` bytes.
unsafe fn fill(dest: *mut u8, byte: u8, n: usize) {
    let mut i = 0;
    if (dest as usize | n) & 3 == 0 {
        let word = u32::from(byte) * 0x0101_0101;
        while i < n {
            // SAFETY: `i + 4 <= n` (`n` a multiple of 4), aligned, inside the range.
            unsafe { *dest.add(i).cast::<u32>() = word };
            i += 4;
        }
        return;
    }
    while i < n {
        // SAFETY: `i < n`, inside the range.
        unsafe { *dest.add(i) = byte };
        i += 1;
    }
}

/// The difference of the first differing bytes of `a` and `b` over `n` bytes, or 0.
///
/// # Safety
/// Both ranges valid for `n` bytes.
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`, inside both ranges.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(target_os = "none")]
mod exported {
    //! The C and ARM EABI names. The EABI's `memset` takes the length before the value, its
    //! `memclr` no value; its aligned variants may copy byte by byte as well.
    // Reached by the linker, by name.
    #![allow(missing_docs, unreachable_pub, clippy::missing_safety_doc)]

    use super::{compare, copy, copy_forward, fill};

    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: C's contract: both ranges valid and disjoint.
        unsafe { copy_forward(dest, src, n) };
        dest
    }

    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: C's contract: both ranges valid.
        unsafe { copy(dest, src, n) };
        dest
    }

    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: C's contract: the range valid; the value's low byte is stored.
        unsafe { fill(dest, c as u8, n) };
        dest
    }

    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: C's contract: both ranges valid.
        unsafe { compare(a, b, n) }
    }

    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: as `memcmp`.
        unsafe { compare(a, b, n) }
    }

    /// The EABI's names, each calling one of the loops with the same contract.
    macro_rules! eabi {
        ($($name:ident($($arg:ident: $ty:ty),*) => $loop:ident($($call:expr),*);)*) => {$(
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) {
                // SAFETY: the same contract as the C routine it stands for.
                unsafe { $loop($($call),*) }
            }
        )*};
    }

    eabi! {
        __aeabi_memcpy(dest: *mut u8, src: *const u8, n: usize) => copy_forward(dest, src, n);
        __aeabi_memcpy4(dest: *mut u8, src: *const u8, n: usize) => copy_forward(dest, src, n);
        __aeabi_memcpy8(dest: *mut u8, src: *const u8, n: usize) => copy_forward(dest, src, n);
        __aeabi_memmove(dest: *mut u8, src: *const u8, n: usize) => copy(dest, src, n);
        __aeabi_memmove4(dest: *mut u8, src: *const u8, n: usize) => copy(dest, src, n);
        __aeabi_memmove8(dest: *mut u8, src: *const u8, n: usize) => copy(dest, src, n);
        __aeabi_memset(dest: *mut u8, n: usize, c: i32) => fill(dest, c as u8, n);
        __aeabi_memset4(dest: *mut u8, n: usize, c: i32) => fill(dest, c as u8, n);
        __aeabi_memset8(dest: *mut u8, n: usize, c: i32) => fill(dest, c as u8, n);
        __aeabi_memclr(dest: *mut u8, n: usize) => fill(dest, 0, n);
        __aeabi_memclr4(dest: *mut u8, n: usize) => fill(dest, 0, n);
        __aeabi_memclr8(dest: *mut u8, n: usize) => fill(dest, 0, n);
    }
}

#[cfg(test)]
mod tests {
    use super::{compare, copy, copy_forward, fill};

    /// Bytes 1, 2, 3… in a word-aligned buffer.
    #[repr(align(4))]
    struct Buffer([u8; 64]);

    fn buffer() -> Buffer {
        let mut b = Buffer([0; 64]);
        for (i, byte) in b.0.iter_mut().enumerate() {
            *byte = i as u8 + 1;
        }
        b
    }

    #[test]
    fn copies_match_the_slice_copies_at_every_offset_and_length() {
        for from in 0..12 {
            for to in 0..12 {
                for n in 0..40 {
                    // Disjoint: forward copy, aligned or not.
                    let (src, mut dest, mut want) = (buffer(), Buffer([0; 64]), [0u8; 64]);
                    want[to..to + n].copy_from_slice(&src.0[from..from + n]);
                    // SAFETY: both ranges inside their buffers, which are distinct.
                    unsafe {
                        copy_forward(dest.0.as_mut_ptr().add(to), src.0.as_ptr().add(from), n)
                    };
                    assert_eq!(dest.0, want, "copy {n} from {from} to {to}");
                    // Overlapping, either way: as `copy_within`.
                    let mut moved = buffer();
                    let mut want = buffer();
                    want.0.copy_within(from..from + n, to);
                    let base = moved.0.as_mut_ptr();
                    // SAFETY: both ranges inside the one buffer.
                    unsafe { copy(base.add(to), base.add(from), n) };
                    assert_eq!(moved.0, want.0, "move {n} from {from} to {to}");
                }
            }
        }
    }

    #[test]
    fn fills_and_comparisons_match_the_slices() {
        for at in 0..8 {
            for n in 0..40 {
                let mut b = buffer();
                let mut want = buffer();
                want.0[at..at + n].fill(0xA5);
                // SAFETY: inside the buffer.
                unsafe { fill(b.0.as_mut_ptr().add(at), 0xA5, n) };
                assert_eq!(b.0, want.0, "fill {n} at {at}");
            }
        }
        let (a, mut b) = (buffer(), buffer());
        // SAFETY: 64 bytes each.
        assert_eq!(unsafe { compare(a.0.as_ptr(), b.0.as_ptr(), 64) }, 0);
        b.0[40] = 0;
        // SAFETY: as above.
        let (ab, ba) = unsafe {
            (
                compare(a.0.as_ptr(), b.0.as_ptr(), 64),
                compare(b.0.as_ptr(), a.0.as_ptr(), 64),
            )
        };
        assert_eq!((ab, ba), (41, -41));
        // Only the first `n` bytes count.
        // SAFETY: as above.
        assert_eq!(unsafe { compare(a.0.as_ptr(), b.0.as_ptr(), 40) }, 0);
    }
}
