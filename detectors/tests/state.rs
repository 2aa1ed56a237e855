//! Saved state: a restored detector scores exactly as the original would have, state stays
//! bounded, bad bytes are refused, and odd input never panics.

use sluice_detectors::{DetectorSpec, Error, OLDEST_READABLE_VERSION, STATE_FORMAT_VERSION};

/// 1-minute points with a daily cycle, noise, a level shift halfway, and the awkward
/// cases: NaN, infinities, wild finite values, a gap, repeated and backwards timestamps.
fn stream(n: usize) -> Vec<(i64, f64)> {
    stream_with(n, true)
}

fn stream_with(n: usize, awkward: bool) -> Vec<(i64, f64)> {
    let mut seed = 42u64;
    let mut t = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let noise = (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5;
            t += match i % 997 {
                0 => 3_600_000, // gap
                1 => 0,         // repeated timestamp
                2 => -120_000,  // backwards
                _ => 60_000,
            };
            let day = (t as f64 / 86_400_000.0 * std::f64::consts::TAU).sin();
            let mut v = 20.0 + 5.0 * day + noise + if i > n / 2 { 8.0 } else { 0.0 };
            match if awkward { i % 1013 } else { 0 } {
                5 => v = f64::NAN,
                6 => v = f64::INFINITY,
                7 => v = f64::NEG_INFINITY,
                8 => v = 1e300,
                9 => v = -0.0,
                _ => {}
            }
            (t, v)
        })
        .collect()
}

/// Bound on CAD's state at its default `max_contexts` (20,000): 13 bytes per context, and
/// at most two semi-contexts per context of at most 18 facts (3 value facts and 15 active
/// contexts) at 4 bytes each plus a 4-byte length, with slack for one step's additions.
const CAD_MAX_STATE: usize = 21_000 * (13 + 2 * (4 + 18 * 4)) + 1024;

fn specs() -> Vec<DetectorSpec> {
    let mut v = DetectorSpec::all();
    v.push(DetectorSpec::Null);
    v
}

#[test]
fn restored_detectors_score_exactly_like_the_original() {
    let pts = stream(20_000);
    for spec in specs() {
        for cut in [0, 1, 37, 5_000, 12_345] {
            let mut a = spec.build();
            for &(t, v) in &pts[..cut] {
                a.update(t, v);
            }
            let mut bytes = Vec::new();
            a.save(&mut bytes);
            let mut b = spec.restore(&bytes).expect("restore");
            for (i, &(t, v)) in pts[cut..].iter().enumerate() {
                let (sa, sb) = (a.update(t, v), b.update(t, v));
                assert_eq!(
                    sa.to_bits(),
                    sb.to_bits(),
                    "{} cut {cut} point {i}",
                    spec.name()
                );
            }
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            a.save(&mut ea);
            b.save(&mut eb);
            assert_eq!(ea, eb, "{} final state differs", spec.name());
        }
    }
}

#[test]
fn scores_stay_in_unit_interval_and_state_stays_bounded() {
    let pts = stream(60_000);
    for spec in specs() {
        let mut d = spec.build();
        let mut sizes = Vec::new();
        for (i, &(t, v)) in pts.iter().enumerate() {
            let s = d.update(t, v);
            assert!(
                (0.0..=1.0).contains(&s),
                "{} scored {s} at {i}",
                spec.name()
            );
            if !v.is_finite() {
                assert_eq!(s, 0.0, "{}: non-finite input must score 0", spec.name());
            }
            if i == 20_000 || i == 59_999 {
                let mut b = Vec::new();
                d.save(&mut b);
                sizes.push(b.len());
            }
        }
        if spec.name() == "cad" {
            // CAD's context memory grows until `max_contexts`, then starts afresh.
            assert!(sizes[1] <= CAD_MAX_STATE, "cad keeps {} bytes", sizes[1]);
        } else {
            assert_eq!(sizes[0], sizes[1], "{} state grows", spec.name());
            assert!(sizes[1] <= 4096, "{} keeps {} bytes", spec.name(), sizes[1]);
        }
    }
}

#[test]
fn detectors_flag_an_obvious_anomaly() {
    let pts = stream_with(6_000, false);
    for spec in DetectorSpec::all() {
        let mut d = spec.build();
        for &(t, v) in &pts[..5_000] {
            d.update(t, v);
        }
        let (t, _) = pts[5_000];
        let s = d.update(t + 60_000, 500.0);
        assert!(s > 0.5, "{} scored a 100-sigma jump {s}", spec.name());
    }
}

#[test]
fn bad_bytes_are_refused() {
    let spec = DetectorSpec::from_name("ewma").unwrap();
    let mut d = spec.build();
    d.update(0, 1.0);
    let mut bytes = Vec::new();
    d.save(&mut bytes);
    assert_eq!(bytes[0], STATE_FORMAT_VERSION);

    let mut wrong_version = bytes.clone();
    wrong_version[0] = 99;
    assert!(matches!(
        spec.restore(&wrong_version),
        Err(Error::Version(99))
    ));
    wrong_version[0] = OLDEST_READABLE_VERSION - 1;
    assert!(matches!(
        spec.restore(&wrong_version),
        Err(Error::Version(_))
    ));
    // Format 1 differs only in the ensemble, so an EWMA saved by it reads back unchanged.
    let mut v1 = bytes.clone();
    v1[0] = 1;
    let mut again = Vec::new();
    spec.restore(&v1).expect("format 1").save(&mut again);
    assert_eq!(again, bytes);
    let other = DetectorSpec::from_name("mad").unwrap();
    assert!(matches!(
        other.restore(&bytes),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        spec.restore(&bytes[..bytes.len() - 1]),
        Err(Error::Truncated { .. })
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        spec.restore(&longer),
        Err(Error::Trailing { extra: 1 })
    ));
    assert!(spec.restore(&[]).is_err());

    // A ring saved with one window size does not load into another.
    let z = DetectorSpec::from_name("zscore").unwrap();
    let mut zd = z.build();
    for i in 0..300 {
        zd.update(i, i as f64);
    }
    let mut zb = Vec::new();
    zd.save(&mut zb);
    let small: DetectorSpec = serde_yaml::from_str("{ kind: zscore, window: 16 }").unwrap();
    assert!(matches!(small.restore(&zb), Err(Error::Incompatible(_))));
}
