//! The retry policy's arithmetic, shared so that the server and a device wait alike
//! between attempts.

/// The wait in ms before retry number `retry` (from 1): `backoff_ms × multiplier^(retry-1)`,
/// capped at `max_backoff_ms` (0 = 10 × `backoff_ms`). A multiplier below 1 or not finite
/// counts as 1.
pub fn backoff_ms(backoff_ms: u32, multiplier: f32, max_backoff_ms: u32, retry: u32) -> u64 {
    let base = f64::from(backoff_ms);
    let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
        f64::from(multiplier)
    } else {
        1.0
    };
    let cap = if max_backoff_ms == 0 {
        base * 10.0
    } else {
        f64::from(max_backoff_ms)
    };
    let mut ms = base;
    for _ in 1..retry {
        if ms >= cap {
            break;
        }
        ms *= multiplier;
    }
    // `ms` is finite and at least 0: a product of finite non-negative factors, capped.
    ms.min(cap) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_the_multiplier_up_to_the_cap() {
        let waits: [u64; 5] = core::array::from_fn(|n| backoff_ms(100, 2.0, 500, n as u32 + 1));
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        // No cap given: ten times the first wait.
        assert_eq!(backoff_ms(10, 3.0, 0, 4), 100);
        // A multiplier below 1 or not finite keeps the wait constant.
        assert_eq!(backoff_ms(50, 0.5, 0, 3), 50);
        assert_eq!(backoff_ms(50, f32::NAN, 0, 3), 50);
        // Many retries stop at the cap without overflowing.
        assert_eq!(
            backoff_ms(u32::MAX, 10.0, u32::MAX, u32::MAX),
            u64::from(u32::MAX)
        );
    }
}
