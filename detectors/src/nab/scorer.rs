//! NAB scoring as `shared/bench/nab/SCORING.md` specifies it: probationary rows, sigmoid
//! weighting inside and after windows, one threshold per profile swept over every distinct
//! score, and normalisation between the null and the perfect detector.

/// Weights of one NAB profile (A_TN is unused by NAB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const STANDARD: Profile = Profile {
    name: "standard",
    tp: 1.0,
    fp: 0.11,
    fn_: 1.0,
};
pub const LOW_FP: Profile = Profile {
    name: "reward_low_FP_rate",
    tp: 1.0,
    fp: 0.22,
    fn_: 1.0,
};
pub const LOW_FN: Profile = Profile {
    name: "reward_low_FN_rate",
    tp: 1.0,
    fp: 0.11,
    fn_: 2.0,
};
pub const PROFILES: [Profile; 3] = [STANDARD, LOW_FP, LOW_FN];

/// NAB's scaled sigmoid: `2 / (1 + e^(5y)) - 1`, and -1 beyond three widths after a window.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Rows NAB never scores at the start of a file of `n` rows.
pub fn probation_rows(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

/// Window `[start, end]` timestamps as inclusive row ranges (first row at or after start,
/// last row at or before end); windows that hold no row are dropped.
pub fn window_rows(ts: &[i64], windows: &[(i64, i64)]) -> Vec<(usize, usize)> {
    windows
        .iter()
        .filter_map(|&(a, b)| {
            let left = ts.partition_point(|&t| t < a);
            let right = ts.partition_point(|&t| t <= b);
            (right > left).then(|| (left, right - 1))
        })
        .collect()
}

/// What a detection at one scored row is worth, before the profile's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Worth {
    /// Inside window `id` (corpus-wide): `sigma(y) / sigma(-1)`, 1 at the window's first row.
    Tp { window: usize, value: f64 },
    /// Outside windows: the unweighted sigmoid, negative, multiplied by `A_FP`.
    Fp { value: f64 },
}

#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f64,
    file: usize,
    worth: Worth,
}

/// Collects the scored rows of a corpus and finds each profile's best threshold.
#[derive(Debug, Default)]
pub struct Scorer {
    rows: Vec<Scored>,
    windows: usize,
    files: usize,
}

/// The outcome for one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileScore {
    pub profile: Profile,
    /// Rows scoring at or above this are detections; `f64::INFINITY` means "none".
    pub threshold: f64,
    pub raw: f64,
    pub normalised: f64,
}

impl Scorer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one file: its anomaly scores (one per row) and its windows as row ranges.
    pub fn add_file(&mut self, scores: &[f64], windows: &[(usize, usize)]) {
        let n = scores.len();
        let file = self.files;
        self.files += 1;
        let first_window = self.windows;
        self.windows += windows.len();
        let mut sorted: Vec<(usize, usize)> = windows.to_vec();
        sorted.sort_unstable();
        let mut next = 0; // index into `sorted` of the first window not yet passed
        for (i, &score) in scores.iter().enumerate().skip(probation_rows(n)) {
            while next < sorted.len() && sorted[next].1 < i {
                next += 1;
            }
            let worth = match sorted.get(next) {
                Some(&(l, r)) if l <= i => {
                    let width = (r - l + 1) as f64;
                    let y = -((r - i + 1) as f64) / width;
                    Worth::Tp {
                        window: first_window + next,
                        value: scaled_sigmoid(y) / scaled_sigmoid(-1.0),
                    }
                }
                _ => match next.checked_sub(1).map(|p| sorted[p]) {
                    None => Worth::Fp { value: -1.0 },
                    Some((l, r)) => {
                        let y = (i - r) as f64 / (r - l) as f64;
                        let y = if y.is_nan() { f64::INFINITY } else { y };
                        Worth::Fp {
                            value: scaled_sigmoid(y),
                        }
                    }
                },
            };
            self.rows.push(Scored { score, file, worth });
        }
    }

    pub fn window_count(&self) -> usize {
        self.windows
    }

    /// Sweeps every distinct score from high to low and keeps the threshold with the
    /// highest summed raw score (ties keep the higher threshold).
    pub fn best(&mut self, p: Profile) -> ProfileScore {
        self.rows
            .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.file.cmp(&b.file)));
        let null = -p.fn_ * self.windows as f64;
        let perfect = p.tp * self.windows as f64;
        let mut best_in_window: Vec<Option<f64>> = vec![None; self.windows];
        let mut total = null;
        let (mut best_t, mut best_raw) = (f64::INFINITY, null);
        let mut i = 0;
        while i < self.rows.len() {
            let s = self.rows[i].score;
            while i < self.rows.len() && self.rows[i].score == s {
                match self.rows[i].worth {
                    Worth::Fp { value } => total += p.fp * value,
                    Worth::Tp { window, value } => {
                        let old = best_in_window[window];
                        let old_c = old.map_or(-p.fn_, |v| p.tp * v);
                        let new = old.map_or(value, |v| v.max(value));
                        best_in_window[window] = Some(new);
                        total += p.tp * new - old_c;
                    }
                }
                i += 1;
            }
            if total > best_raw + 1e-12 {
                best_raw = total;
                best_t = s;
            }
        }
        ProfileScore {
            profile: p,
            threshold: best_t,
            raw: best_raw,
            normalised: normalise(best_raw, null, perfect),
        }
    }

    /// Raw score per file at a fixed threshold (for diagnostics).
    pub fn per_file(&self, p: Profile, threshold: f64) -> Vec<f64> {
        let mut raw = vec![0.0; self.files];
        let mut best: Vec<Option<(usize, f64)>> = vec![None; self.windows];
        let mut window_file = vec![usize::MAX; self.windows];
        for r in &self.rows {
            match r.worth {
                Worth::Tp { window, value } => {
                    window_file[window] = r.file;
                    if r.score >= threshold {
                        let v = best[window].map_or(value, |(_, b)| b.max(value));
                        best[window] = Some((r.file, v));
                    }
                }
                Worth::Fp { value } if r.score >= threshold => raw[r.file] += p.fp * value,
                Worth::Fp { .. } => {}
            }
        }
        for (w, b) in best.iter().enumerate() {
            match b {
                Some((f, v)) => raw[*f] += p.tp * v,
                None if window_file[w] != usize::MAX => raw[window_file[w]] -= p.fn_,
                None => {}
            }
        }
        raw
    }
}

fn normalise(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<(usize, Vec<(usize, usize)>)> {
        vec![
            (400, vec![(100, 139), (300, 319)]),
            (1000, vec![(500, 599)]),
            (200, vec![]),
        ]
    }

    #[test]
    fn null_detector_scores_zero_and_perfect_scores_hundred_on_every_profile() {
        for p in PROFILES {
            let mut null = Scorer::new();
            let mut perfect = Scorer::new();
            for (n, wins) in corpus() {
                null.add_file(&vec![0.0; n], &wins);
                let mut s = vec![0.0; n];
                for &(l, _) in &wins {
                    s[l] = 1.0;
                }
                perfect.add_file(&s, &wins);
            }
            assert_eq!(null.best(p).normalised, 0.0, "{}", p.name);
            let best = perfect.best(p);
            assert!(
                (best.normalised - 100.0).abs() < 1e-9,
                "{}: {best:?}",
                p.name
            );
            assert_eq!(best.threshold, 1.0);
        }
    }

    #[test]
    fn a_hand_made_series_scores_the_hand_computed_value() {
        // 20 rows: probation = floor(0.15 * 20) = 3. Window rows 10..=13 (width 4).
        // Detections (score 0.9) at rows 1 (probation: ignored), 5 (FP, no previous window),
        // 11 (TP) and 12 (same window: only the earliest counts), 16 (FP after the window).
        let mut s = vec![0.1; 20];
        for i in [1, 5, 11, 12, 16] {
            s[i] = 0.9;
        }
        let mut sc = Scorer::new();
        sc.add_file(&s, &[(10, 13)]);
        let best = sc.best(STANDARD);
        // Row 11: y = -(13 - 11 + 1) / 4 = -0.75; sigma(-0.75) = 2 / (1 + e^-3.75) - 1
        //   = 0.954_045_3, sigma(-1) = 2 / (1 + e^-5) - 1 = 0.986_614_3, ratio 0.966_990_0.
        // Row 5: -A_FP = -0.11.
        // Row 16: y = (16 - 13) / (4 - 1) = 1; sigma(1) = 2 / (1 + e^5) - 1 = -0.986_614_3,
        //   times 0.11 = -0.108_527_6.
        // Total at threshold 0.9: 0.966_990_0 - 0.11 - 0.108_527_6 = 0.748_462_4.
        // At threshold 0.1 every scored row detects: worse (many FPs), so 0.9 is the best.
        let expected = 0.748_462_4;
        assert!((best.raw - expected).abs() < 1e-6, "{best:?} vs {expected}");
        assert_eq!(best.threshold, 0.9);
        // Normalised: 100 * (raw - (-1)) / (1 - (-1)).
        assert!((best.normalised - 87.423_08).abs() < 1e-4);
        assert!((sc.per_file(STANDARD, 0.9)[0] - expected).abs() < 1e-6);
    }

    #[test]
    fn window_rows_map_timestamps_to_inclusive_row_ranges() {
        let ts = [0, 10, 20, 30, 40];
        assert_eq!(window_rows(&ts, &[(10, 30)]), vec![(1, 3)]);
        assert_eq!(window_rows(&ts, &[(11, 29)]), vec![(2, 2)]);
        assert_eq!(window_rows(&ts, &[(41, 50)]), vec![]);
    }
}
