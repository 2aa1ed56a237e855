//! Points per second of every detector on a synthetic daily signal with noise and spikes,
//! and the bytes of state each keeps per series (printed once, from `save()`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_detectors::{DetectorSpec, MultivariateSpec};
use std::hint::black_box;

fn signal(n: usize) -> Vec<(i64, f64)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let t = i as i64 * 60_000;
            let day = (t as f64 / 86_400_000.0 * std::f64::consts::TAU).sin();
            let spike = if i % 5000 == 4999 { 20.0 } else { 0.0 };
            (t, 50.0 + 10.0 * day + noise + spike)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let points = signal(100_000);
    let mut g = c.benchmark_group("detectors");
    g.throughput(Throughput::Elements(points.len() as u64));
    for spec in DetectorSpec::all() {
        let mut d = spec.build();
        for &(t, v) in &points {
            d.update(t, v);
        }
        let mut state = Vec::new();
        d.save(&mut state);
        eprintln!("state_bytes {} {}", spec.name(), state.len());
        g.bench_with_input(
            BenchmarkId::from_parameter(spec.name()),
            &points,
            |b, pts| {
                b.iter(|| {
                    let mut d = spec.build();
                    let mut acc = 0.0;
                    for &(t, v) in pts {
                        acc += d.update(t, v);
                    }
                    black_box(acc)
                })
            },
        );
    }
    // Four metrics of one device: the first three are the signal shifted, the last its sum.
    let spec = MultivariateSpec::new(4);
    let vectors: Vec<(i64, [f64; 4])> = points
        .iter()
        .map(|&(t, v)| (t, [v, v * 0.5 + 1.0, -v, 2.5 * v]))
        .collect();
    let mut d = spec.build().expect("valid spec");
    for (t, v) in &vectors {
        d.update(*t, v);
    }
    let mut state = Vec::new();
    d.save(&mut state);
    eprintln!("state_bytes multivariate4 {}", state.len());
    g.bench_function("multivariate4", |b| {
        b.iter(|| {
            let mut d = spec.build().expect("valid spec");
            let mut acc = 0.0;
            for (t, v) in &vectors {
                acc += d.update(*t, v);
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
