//! Which windows an event time belongs to. Times are milliseconds since the epoch (`i64`,
//! negative before 1970); a window is `[start, end)`, end exclusive. Arithmetic saturates at
//! the ends of `i64` instead of wrapping.

/// A window's extent: `start <= ts < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The tumbling window of `ts`: `[k·size, (k+1)·size)` with `k = ⌊ts / size⌋` (floor, also
/// for negative times). `size > 0`.
pub fn tumbling(ts: i64, size: i64) -> Window {
    let start = i128::from(ts).div_euclid(i128::from(size)) * i128::from(size);
    Window {
        start: clamp(start),
        end: clamp(start + i128::from(size)),
    }
}

/// The hopping windows of `ts`, by increasing start: every `[k·advance, k·advance + size)`
/// that contains `ts`. `0 < advance <= size`; their number is ⌊size/advance⌋ or
/// ⌈size/advance⌉.
pub fn hopping(ts: i64, size: i64, advance: i64) -> impl Iterator<Item = Window> {
    let (t, s, a) = (i128::from(ts), i128::from(size), i128::from(advance));
    // First k with k·a + s > t, last k with k·a <= t.
    let first = (t - s).div_euclid(a) + 1;
    let last = t.div_euclid(a);
    (first..=last).map(move |k| Window {
        start: clamp(k * a),
        end: clamp(k * a + s),
    })
}

/// The sliding window that ends with a record at `ts` (its "left" window in Kafka Streams'
/// terms): event times `[ts − size, ts]`, both inclusive, so `end = ts + 1`.
pub fn sliding_left(ts: i64, size: i64) -> Window {
    Window {
        start: ts.saturating_sub(size),
        end: ts.saturating_add(1),
    }
}

/// The sliding window that starts just after a record at `ts` (its "right" window): event
/// times `[ts + 1, ts + 1 + size]`, the records that remain once `ts` left.
pub fn sliding_right(ts: i64, size: i64) -> Window {
    Window {
        start: ts.saturating_add(1),
        end: ts.saturating_add(size).saturating_add(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn tumbling_at_the_boundaries() {
        assert_eq!(tumbling(0, 10), w(0, 10));
        assert_eq!(tumbling(9, 10), w(0, 10));
        // The end is exclusive: a record at exactly the end opens the next window.
        assert_eq!(tumbling(10, 10), w(10, 20));
        assert_eq!(tumbling(-1, 10), w(-10, 0));
        assert_eq!(tumbling(-10, 10), w(-10, 0));
        assert_eq!(tumbling(-11, 10), w(-20, -10));
        assert_eq!(tumbling(i64::MAX, 10).end, i64::MAX);
        assert!(tumbling(i64::MIN, 10).start <= i64::MIN + 10);
    }

    #[test]
    fn hopping_overlaps() {
        let ws = |ts| hopping(ts, 10, 5).collect::<Vec<_>>();
        assert_eq!(ws(7), [w(0, 10), w(5, 15)]);
        assert_eq!(ws(10), [w(5, 15), w(10, 20)]);
        assert_eq!(ws(-1), [w(-10, 0), w(-5, 5)]);
        // A record is in size/advance windows when advance divides size...
        for ts in -50..50 {
            let all: Vec<_> = hopping(ts, 60, 15).collect();
            assert_eq!(all.len(), 4, "ts={ts}");
            assert!(all.iter().all(|x| x.start <= ts && ts < x.end));
            assert!(all.windows(2).all(|p| p[1].start - p[0].start == 15));
        }
        // ...else in the floor or the ceiling of it.
        for ts in -50..50 {
            let n = hopping(ts, 10, 4).count();
            assert!(n == 2 || n == 3, "ts={ts}: {n}");
            assert!(hopping(ts, 10, 4).all(|x| x.start <= ts && ts < x.end && x.start % 4 == 0));
        }
        // advance = size is tumbling.
        for ts in -30..30 {
            assert_eq!(hopping(ts, 10, 10).collect::<Vec<_>>(), [tumbling(ts, 10)]);
        }
        assert_eq!(hopping(i64::MAX, 10, 5).count(), 2);
    }

    #[test]
    fn sliding_windows_are_inclusive_at_both_ends() {
        assert_eq!(sliding_left(100, 10), w(90, 101));
        assert_eq!(sliding_right(100, 10), w(101, 112));
        assert_eq!(sliding_left(-5, 10), w(-15, -4));
    }
}
