//! `sluice nab`: runs every NAB series through one detector as a stream, writes result
//! files in NAB's own layout and scores them with [`scorer`].

mod data;
pub mod scorer;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{DetectorSpec, Error};
pub use scorer::{Profile, ProfileScore, Scorer, PROFILES};

/// Where the corpus is, where results go, and which detector runs.
#[derive(Debug, Clone)]
pub struct NabOptions {
    /// The corpus `data/` folder (category subfolders of `timestamp,value` CSVs).
    pub data_dir: PathBuf,
    /// `combined_windows.json`.
    pub labels: PathBuf,
    /// Result files go to `<out_dir>/<detector>/<category>/<detector>_<file>.csv`.
    pub out_dir: PathBuf,
    pub spec: DetectorSpec,
}

impl NabOptions {
    /// Options for the corpus folder `nab` (holding `data/` and `labels/`).
    pub fn for_corpus(nab: &Path, out_dir: PathBuf, spec: DetectorSpec) -> Self {
        Self {
            data_dir: nab.join("data"),
            labels: nab.join("labels").join("combined_windows.json"),
            out_dir,
            spec,
        }
    }
}

/// Normalised scores and what the run cost.
#[derive(Debug, Clone)]
pub struct NabReport {
    pub detector: &'static str,
    pub standard: f64,
    pub low_fp: f64,
    pub low_fn: f64,
    /// Per profile: threshold, raw and normalised score.
    pub profiles: Vec<ProfileScore>,
    pub files: usize,
    pub windows: usize,
    pub points: usize,
    /// Time spent inside `update` only (not I/O).
    pub detect_time: Duration,
    /// Largest `save()` output seen at the end of a file, in bytes.
    pub max_state_bytes: usize,
    /// Raw standard-profile score per file at the standard threshold.
    pub per_file: Vec<(String, f64)>,
}

impl NabReport {
    pub fn points_per_sec(&self) -> f64 {
        self.points as f64 / self.detect_time.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for NabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standard={:.1} low_fp={:.1} low_fn={:.1}",
            self.standard, self.low_fp, self.low_fn
        )
    }
}

/// Runs the corpus; `progress(files_done, files_total)` is called after each file.
pub fn run(opts: &NabOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<NabReport, Error> {
    let windows = data::read_windows(&opts.labels)?;
    let files = data::list_files(&opts.data_dir)?;
    let name = opts.spec.name();
    let mut scorer = Scorer::new();
    let mut points = 0;
    let mut detect_time = Duration::ZERO;
    let mut max_state_bytes = 0;
    let mut state = Vec::new();
    for (k, file) in files.iter().enumerate() {
        let series = data::read_series(&opts.data_dir, file)?;
        let mut det = opts.spec.build();
        let started = Instant::now();
        let scores: Vec<f64> = series
            .ts_ms
            .iter()
            .zip(&series.values)
            .map(|(&t, &v)| det.update(t, v))
            .collect();
        detect_time += started.elapsed();
        points += scores.len();
        state.clear();
        det.save(&mut state);
        max_state_bytes = max_state_bytes.max(state.len());
        let wins = windows.get(file.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let rows = scorer::window_rows(&series.ts_ms, wins);
        write_result(&opts.out_dir, name, &series, &scores, &rows)?;
        scorer.add_file(&scores, &rows);
        tracing::debug!(file = %file, points = scores.len(), "Scored NAB file.");
        progress(k + 1, files.len());
    }
    let profiles: Vec<ProfileScore> = PROFILES.iter().map(|&p| scorer.best(p)).collect();
    let per_file = scorer.per_file(profiles[0].profile, profiles[0].threshold);
    Ok(NabReport {
        detector: name,
        standard: profiles[0].normalised,
        low_fp: profiles[1].normalised,
        low_fn: profiles[2].normalised,
        profiles,
        files: files.len(),
        windows: scorer.window_count(),
        points,
        detect_time,
        max_state_bytes,
        per_file: files.into_iter().zip(per_file).collect(),
    })
}

/// Scores result files in NAB's layout, as written by [`run`] or by NAB's own detectors:
/// `results` is `<out>/<detector>`, holding `<category>/<detector>_<file>.csv` with columns
/// `timestamp,value,anomaly_score[,...]`. Every file of the label set must be present.
pub fn score_results(results: &Path, labels: &Path) -> Result<Vec<ProfileScore>, Error> {
    let windows = data::read_windows(labels)?;
    let detector = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut scorer = Scorer::new();
    for (file, wins) in &windows {
        let (category, base) = file.rsplit_once('/').unwrap_or(("", file));
        let path = results.join(category).join(format!("{detector}_{base}"));
        let (ts, scores) = data::read_result(&path)?;
        scorer.add_file(&scores, &scorer::window_rows(&ts, wins));
    }
    Ok(PROFILES.iter().map(|&p| scorer.best(p)).collect())
}

fn write_result(
    out_dir: &Path,
    detector: &str,
    series: &data::Series,
    scores: &[f64],
    windows: &[(usize, usize)],
) -> Result<(), Error> {
    let (category, file) = series.name.rsplit_once('/').unwrap_or(("", &series.name));
    let dir = out_dir.join(detector).join(category);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(format!("{detector}_{file}"));
    let mut label = vec![0u8; scores.len()];
    for &(l, r) in windows {
        label[l..=r].iter_mut().for_each(|x| *x = 1);
    }
    let mut buf = String::with_capacity(scores.len() * 48);
    buf.push_str("timestamp,value,anomaly_score,label\n");
    for i in 0..scores.len() {
        use fmt::Write as _;
        let _ = writeln!(
            buf,
            "{},{},{},{}",
            series.raw_ts[i], series.values[i], scores[i], label[i]
        );
    }
    let mut f = std::fs::File::create(&path).map_err(io(&path))?;
    f.write_all(buf.as_bytes()).map_err(io(&path))
}
