//! The contextual detector (`kind: cad`): it learns a repeating pattern, flags a break in it
//! and a value beyond its grid, and its bounded memory survives save and restore.

use sluice_detectors::{CadParams, DetectorSpec};

fn cad(p: CadParams) -> DetectorSpec {
    DetectorSpec::Cad(p)
}

/// Scores of `values` at one-minute steps.
fn scores(spec: &DetectorSpec, values: &[f64]) -> Vec<f64> {
    let mut d = spec.build();
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| d.update(i as i64 * 60_000, v))
        .collect()
}

#[test]
fn a_learned_pattern_is_quiet_and_a_break_in_it_is_not() {
    // rest 0 shows every raw score.
    let spec = cad(CadParams {
        rest: 0,
        ..CadParams::default()
    });
    let pattern = [0.0, 2.0, 4.0, 6.0, 7.0, 5.0, 3.0, 1.0];
    let mut values: Vec<f64> = (0..800).map(|i| pattern[i % 8]).collect();
    // Same values, new order: no value is new, the sequence is.
    values.extend([0.0, 7.0, 0.0, 7.0]);
    let s = scores(&spec, &values);
    let learned = s[700..800].iter().cloned().fold(0.0, f64::max);
    // Broad contexts (one bit of the value) predict several successors, so some predictions
    // fail even on a learned pattern: the raw score settles low, not at 0.
    assert!(learned < 0.25, "a learned pattern still scores {learned}");
    let broken = s[800..].iter().cloned().fold(0.0, f64::max);
    assert!(broken > 0.7, "a broken pattern scores {broken}");
}

#[test]
fn a_value_beyond_the_grid_scores_one_and_starts_the_rest_period() {
    let spec = cad(CadParams::default());
    let mut values: Vec<f64> = (0..1000).map(|i| (i % 10) as f64).collect();
    values.push(1_000.0);
    values.extend((0..10).map(|i| i as f64));
    let s = scores(&spec, &values);
    assert_eq!(s[1000], 1.0);
    // The rest period withholds the scores right after the alarm.
    assert!(s[1001..].iter().all(|&x| x == 0.0), "{:?}", &s[1001..]);
    // Before the rest period had passed since the start, nothing was reported either.
    assert!(s[..150].iter().all(|&x| x == 0.0));
}

#[test]
fn a_small_memory_starts_afresh_and_restores_exactly() {
    let spec = cad(CadParams {
        max_contexts: 64,
        ..CadParams::default()
    });
    let mut seed = 7u64;
    let values: Vec<f64> = (0..5_000)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect();
    let mut a = spec.build();
    let mut largest = 0;
    for (i, &v) in values.iter().enumerate() {
        a.update(i as i64, v);
        let mut bytes = Vec::new();
        a.save(&mut bytes);
        largest = largest.max(bytes.len());
        if i % 1_000 == 999 {
            // The original (a clone of it) and the restored copy score the next points alike.
            let (mut c, mut b) = (a.clone(), spec.restore(&bytes).expect("restore"));
            for (j, &w) in values[i + 1..(i + 200).min(values.len())]
                .iter()
                .enumerate()
            {
                let t = (i + 1 + j) as i64;
                assert_eq!(
                    c.update(t, w).to_bits(),
                    b.update(t, w).to_bits(),
                    "at {i}+{j}"
                );
            }
        }
    }
    // 64 contexts plus one step's additions, each with two small semi-contexts.
    assert!(largest < 64 * 400, "state reached {largest} bytes");
}
