// SPDX-License-Identifier: MIT OR Apache-2.0
//! Video-aware analysis on top of [`Analyzer`]: tracks with stable ids, detection every N frames with motion
//! prediction in between, classification only when a track is new, due, or clearly larger, results fused over
//! time, and a summary per track when it ends.

use std::sync::Arc;

use crate::analyzer::{AnalyzeParams, Analyzer, FrameStats};
use crate::engine::{BatchParams, Job, SharedAnalyzer};
use crate::face::{Detection, Face};
use crate::frame::FrameRef;
use crate::inference::Result;
use crate::tracker::{MAX_WINDOW, TrackSummary, Tracker, TrackerParams};

/// Video settings (the element's tracking properties) around the per-frame ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoParams {
    pub analyze: AnalyzeParams,
    pub tracker: TrackerParams,
    /// Run the detector every this many frames (>= 1); tracks are predicted in between.
    pub inference_interval: u64,
    /// Classify a track again after this many frames (>= 1).
    pub reclassify_interval: u64,
    /// At most this many faces are classified per frame, new tracks first (0 = no limit).
    pub max_classify_per_frame: usize,
    /// Observations fused per track (0 = none: each result is the latest classification, unchanged).
    pub smoothing: usize,
    /// Cross-stream batching when the engine is shared (see [`crate::engine`]).
    pub batch: BatchParams,
}

pub const DEFAULT_INFERENCE_INTERVAL: u64 = 1;
pub const DEFAULT_RECLASSIFY_INTERVAL: u64 = 5;
pub const DEFAULT_MAX_CLASSIFY_PER_FRAME: usize = 0;
pub const DEFAULT_SMOOTHING: usize = 8;
/// With smoothing on, a track whose fused age already holds `smoothing` observations is classified for age only
/// every this many reclassifications (emotion keeps every one); a face that grows clearly larger is redone at once.
pub const AGE_SETTLED_FACTOR: u64 = 6;

impl Default for VideoParams {
    fn default() -> Self {
        Self {
            analyze: AnalyzeParams::default(),
            tracker: TrackerParams::default(),
            inference_interval: DEFAULT_INFERENCE_INTERVAL,
            reclassify_interval: DEFAULT_RECLASSIFY_INTERVAL,
            max_classify_per_frame: DEFAULT_MAX_CLASSIFY_PER_FRAME,
            smoothing: DEFAULT_SMOOTHING,
            batch: BatchParams::default(),
        }
    }
}

impl VideoParams {
    /// Per-frame behaviour: detect and classify every face on every frame, no smoothing.
    pub fn per_frame(analyze: AnalyzeParams) -> Self {
        Self { analyze, inference_interval: 1, reclassify_interval: 1, smoothing: 0, ..Default::default() }
    }
}

/// What one frame did.
#[derive(Debug, Clone, Default)]
pub struct VideoStats {
    pub frame: FrameStats,
    /// The detector ran on this frame.
    pub detected: bool,
    /// Faces classified on this frame.
    pub classified: usize,
    /// Why classification failed on this frame (the faces are still reported, without new results).
    pub classify_error: Option<String>,
}

/// Analyzer plus tracker, for one stream.
#[derive(Debug)]
pub struct VideoAnalyzer {
    analyzer: SharedAnalyzer,
    has_age: bool,
    has_emotion: bool,
    tracker: Tracker,
    dets: Vec<Detection>,
    det_tracks: Vec<usize>,
    /// Tracks to classify now: (last classified frame, detection index, track index, age due).
    selected: Vec<(Option<u64>, usize, usize, bool)>,
    sel_dets: Vec<Detection>,
    classified: Vec<Face>,
    classified_rest: Vec<Face>,
    last_detect: Option<u64>,
    /// This stream's reusable request for cross-stream batches.
    job: Arc<Job>,
    /// Faces classified since start.
    pub total_classified: u64,
}

impl VideoAnalyzer {
    /// A video analyzer with models of its own.
    pub fn new(analyzer: Analyzer) -> Self {
        Self::shared(SharedAnalyzer::private(analyzer))
    }

    /// A video analyzer on models that other streams may share (see [`crate::engine`]).
    pub fn shared(analyzer: SharedAnalyzer) -> Self {
        let (has_age, has_emotion) = analyzer.with(|a| (a.age_kind().is_some(), a.has_emotion()));
        Self {
            analyzer,
            has_age,
            has_emotion,
            tracker: Tracker::new(),
            dets: Vec::new(),
            det_tracks: Vec::new(),
            selected: Vec::new(),
            sel_dets: Vec::new(),
            classified: Vec::new(),
            classified_rest: Vec::new(),
            last_detect: None,
            job: Arc::default(),
            total_classified: 0,
        }
    }

    pub fn analyzer(&self) -> &SharedAnalyzer {
        &self.analyzer
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Analyses frame number `frame_no` (consecutive per stream) into `faces`; ended tracks go to `ended`.
    pub fn process(
        &mut self,
        frame: &FrameRef,
        frame_no: u64,
        pts: Option<u64>,
        p: &VideoParams,
        faces: &mut Vec<Face>,
        ended: &mut Vec<TrackSummary>,
    ) -> Result<VideoStats> {
        faces.clear();
        let interval = p.inference_interval.max(1);
        let mut tp = p.tracker;
        // A track must survive at least two detection rounds.
        tp.timeout_frames = tp.timeout_frames.max(2 * interval);
        let window = p.smoothing.min(MAX_WINDOW);
        let mut stats = VideoStats::default();
        let detect_now = self.last_detect.is_none_or(|l| frame_no < l || frame_no - l >= interval);
        if !detect_now {
            self.predict(frame, frame_no, pts, window, &p.analyze, &tp, faces, ended);
            return Ok(stats);
        }
        stats.detected = true;
        let t = std::time::Instant::now();
        let dets = &mut self.dets;
        stats.frame.detect = self.analyzer.with(|a| a.detect(frame, &p.analyze.detector, dets))?;
        self.last_detect = Some(frame_no);
        stats.frame.t_detect = t.elapsed();
        self.det_tracks.clear();
        let idx = self.tracker.update(&self.dets, frame_no, pts, &tp, ended);
        self.det_tracks.extend_from_slice(idx);

        // Which tracks to classify now.
        self.selected.clear();
        let tracks = self.tracker.tracks();
        // Only models loaded at start can run (turning analyze-* on later has no model to run).
        let want = (p.analyze.analyze_age && self.has_age) || (p.analyze.analyze_emotion && self.has_emotion);
        for (di, &ti) in self.det_tracks.iter().enumerate() {
            let t = &tracks[ti];
            let due = match t.last_classified_frame {
                None => true,
                Some(l) => {
                    frame_no.saturating_sub(l) >= p.reclassify_interval.max(1)
                        || self.dets[di].bbox.area() > 1.5 * t.last_classified_area
                }
            };
            if want && due {
                self.selected.push((t.last_classified_frame, di, ti, false));
            }
        }
        let budget = if p.max_classify_per_frame == 0 { usize::MAX } else { p.max_classify_per_frame };
        if self.selected.len() > budget {
            // New tracks first, then the longest-waiting ones.
            self.selected.sort_by_key(|&(last, di, _, _)| (last.is_some(), last, di));
            self.selected.truncate(budget);
        }
        // Age does not change within a video: once a track's fused age is settled, its age is classified only
        // every AGE_SETTLED_FACTOR reclassifications (emotion keeps the full rate). Age-due faces go first.
        let age_on = p.analyze.analyze_age && self.has_age;
        let emotion_on = p.analyze.analyze_emotion && self.has_emotion;
        let age_period = AGE_SETTLED_FACTOR * p.reclassify_interval.max(1);
        let age_due = |t: &crate::tracker::Track, det: &Detection| {
            age_on
                && (window == 0
                    || t.age_observations < window as u32
                    || t.last_age_frame.is_none_or(|l| frame_no < l || frame_no - l >= age_period)
                    || det.bbox.area() > 1.5 * t.last_classified_area)
        };
        let (tracks, dets) = (self.tracker.tracks(), &self.dets);
        for s in &mut self.selected {
            s.3 = age_due(&tracks[s.2], &dets[s.1]);
        }
        if !emotion_on {
            self.selected.retain(|s| s.3);
        }
        // Age-due faces first, each group in detection order.
        self.selected.sort_by_key(|&(_, di, _, due)| (!due, di));
        let n_age = self.selected.iter().take_while(|s| s.3).count();
        if !self.selected.is_empty() {
            self.sel_dets.clear();
            self.sel_dets.extend(self.selected.iter().map(|&(_, di, _, _)| self.dets[di]));
            // A failing classifier must not blind the detector: report the faces without new results (the tracks
            // stay due and are retried on the next detection frame).
            let (sel, out, fs) = (&self.sel_dets, &mut self.classified, &mut stats.frame);
            let (with_age, emotion_only) = sel.split_at(n_age);
            let mut classified = self.analyzer.classify(frame, with_age, &p.analyze, out, fs, &p.batch, &self.job);
            if classified.is_ok() && !emotion_only.is_empty() {
                let pe = AnalyzeParams { analyze_age: false, ..p.analyze };
                let rest = &mut self.classified_rest;
                classified = self.analyzer.classify(frame, emotion_only, &pe, rest, fs, &p.batch, &self.job);
                out.extend_from_slice(rest);
            }
            match classified {
                Ok(()) => {
                    stats.classified = self.selected.len();
                    self.total_classified += self.selected.len() as u64;
                }
                Err(e) => {
                    stats.classify_error = Some(e.to_string());
                    self.classified.clear();
                }
            }
            let tracks = self.tracker.tracks_mut();
            for (k, (&(_, di, ti, _), c)) in self.selected.iter().zip(&self.classified).enumerate() {
                let t = &mut tracks[ti];
                t.fuser.push(c.age, c.emotion);
                if k < n_age {
                    t.last_age_frame = Some(frame_no);
                    t.age_observations += 1;
                }
                t.last_classified_frame = Some(frame_no);
                t.last_classified_area = self.dets[di].bbox.area();
                if c.gender_male.is_some() {
                    t.gender_male = c.gender_male;
                }
                if let Some(a) = c.age {
                    let w = 1.0 / (a.stddev as f64 * a.stddev as f64 + 1.0);
                    t.age_acc[0] += w;
                    t.age_acc[1] += w * a.value as f64;
                    t.age_acc[2] += w * a.low as f64;
                    t.age_acc[3] += w * a.high as f64;
                }
                let q = c.detection.score * c.detection.bbox.area().max(0.0).sqrt();
                if t.best.is_none_or(|b| q > b.0) {
                    t.best = Some((q, pts));
                }
            }
        }

        let tracks = self.tracker.tracks_mut();
        for (di, &ti) in self.det_tracks.iter().enumerate() {
            let t = &mut tracks[ti];
            let fresh = t.last_classified_frame == Some(frame_no);
            let face = Face {
                detection: self.dets[di],
                age: if p.analyze.analyze_age { t.fuser.age(window) } else { None },
                gender_male: if p.analyze.analyze_gender { t.gender_male } else { None },
                emotion: if p.analyze.analyze_emotion { t.fuser.emotion(window) } else { None },
                track_id: Some(t.id),
                fresh,
                observations: t.fuser.fused_count(window),
            };
            report(t, &face, pts);
            faces.push(face);
        }
        Ok(stats)
    }

    /// A frame without detection: tracks seen at the last detection move on by their velocity.
    #[allow(clippy::too_many_arguments)]
    fn predict(
        &mut self,
        frame: &FrameRef,
        frame_no: u64,
        pts: Option<u64>,
        window: usize,
        ap: &AnalyzeParams,
        tp: &TrackerParams,
        faces: &mut Vec<Face>,
        ended: &mut Vec<TrackSummary>,
    ) {
        self.tracker.expire(frame_no, tp.timeout_frames, ended);
        let last = self.last_detect;
        let (w, h) = (frame.width as f32, frame.height as f32);
        for t in self.tracker.tracks_mut() {
            if Some(t.last_seen_frame) != last {
                continue;
            }
            let b = t.predicted(frame_no).clip(w, h);
            if b.area() <= 0.0 {
                continue;
            }
            let (dx, dy) = (b.x - t.bbox.x, b.y - t.bbox.y);
            let mut detection = t.detection;
            detection.bbox = b;
            for p in &mut detection.landmarks {
                *p = [(p[0] + dx).clamp(0.0, w), (p[1] + dy).clamp(0.0, h)];
            }
            let face = Face {
                detection,
                age: if ap.analyze_age { t.fuser.age(window) } else { None },
                gender_male: if ap.analyze_gender { t.gender_male } else { None },
                emotion: if ap.analyze_emotion { t.fuser.emotion(window) } else { None },
                track_id: Some(t.id),
                fresh: false,
                observations: t.fuser.fused_count(window),
            };
            report(t, &face, pts);
            faces.push(face);
        }
    }

    /// Ends every track (end of stream).
    pub fn finish(&mut self, ended: &mut Vec<TrackSummary>) {
        self.tracker.finish(ended);
    }

    /// Ends every track and starts counting afresh (a flush or a new stream); ids keep increasing.
    pub fn flush(&mut self, ended: &mut Vec<TrackSummary>) {
        self.tracker.finish(ended);
        self.last_detect = None;
    }
}

fn report(t: &mut crate::tracker::Track, face: &Face, pts: Option<u64>) {
    t.frames_reported += 1;
    if pts.is_some() {
        t.last_pts = pts;
    }
    if let Some(e) = face.emotion {
        t.emotion_frames[e.index] += 1;
    }
}

/// Measures how stable per-track results are over a run: emotion label flips per track-second and mean absolute
/// frame-to-frame age change.
#[derive(Debug, Default, Clone)]
pub struct StabilityMeter {
    last: std::collections::HashMap<u64, (Option<usize>, Option<f32>)>,
    flips: u64,
    track_frames: u64,
    age_steps: u64,
    age_change: f64,
}

impl StabilityMeter {
    /// Adds one frame's faces (faces without a track id are ignored).
    pub fn add(&mut self, faces: &[Face]) {
        for f in faces {
            let Some(id) = f.track_id else { continue };
            self.track_frames += 1;
            let label = f.emotion.map(|e| e.index);
            let age = f.age.map(|a| a.value);
            if let Some((pl, pa)) = self.last.get(&id) {
                if let (Some(a), Some(b)) = (pl, label)
                    && *a != b
                {
                    self.flips += 1;
                }
                if let (Some(a), Some(b)) = (pa, age) {
                    self.age_steps += 1;
                    self.age_change += (b - a).abs() as f64;
                }
            }
            self.last.insert(id, (label, age));
        }
    }

    /// Emotion label changes per second of track time at `fps`.
    pub fn flips_per_track_second(&self, fps: f64) -> f64 {
        if self.track_frames == 0 { 0.0 } else { self.flips as f64 / (self.track_frames as f64 / fps) }
    }

    /// Mean absolute age change between consecutive frames of a track, in years.
    pub fn age_jitter(&self) -> f64 {
        if self.age_steps == 0 { 0.0 } else { self.age_change / self.age_steps as f64 }
    }

    pub fn tracks(&self) -> usize {
        self.last.len()
    }
}
