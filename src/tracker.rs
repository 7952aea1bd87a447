// SPDX-License-Identifier: MIT OR Apache-2.0
//! Face tracks across frames: greedy IoU (or centre-distance for small faces) assignment, constant-velocity
//! prediction between detections, a short memory for missed frames, and per-track fusion of age and emotion
//! over time (see [`Fuser`]).

use crate::face::{AgeEstimate, BBox, Detection, EmotionEstimate, NUM_EMOTIONS};

/// The most observations a track keeps for smoothing.
pub const MAX_WINDOW: usize = 32;
/// An emotion label only changes when another class leads it by this much (averaged probabilities).
pub const HYSTERESIS: f32 = 0.1;

/// Tracker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// Minimum IoU between a track's predicted box and a detection to match them.
    pub iou_threshold: f32,
    /// A track that was not detected for more than this many frames ends.
    pub timeout_frames: u64,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self { iou_threshold: 0.3, timeout_frames: 15 }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Obs {
    age: Option<AgeEstimate>,
    emotion: Option<[f32; NUM_EMOTIONS]>,
}

/// Fuses a track's classifications over its last `window` observations: age as a confidence-weighted median
/// (robust to outliers), emotion as averaged probabilities with hysteresis on the label. `window` 0 returns the
/// latest observation unchanged.
#[derive(Debug, Clone)]
pub struct Fuser {
    ring: [Obs; MAX_WINDOW],
    len: usize,
    head: usize,
    label: Option<usize>,
    /// Observations pushed over the track's life.
    pub total: u32,
}

impl Default for Fuser {
    fn default() -> Self {
        Self { ring: [Obs::default(); MAX_WINDOW], len: 0, head: 0, label: None, total: 0 }
    }
}

fn weighted_median(items: &mut [(f32, f32)]) -> f32 {
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f32 = items.iter().map(|x| x.1).sum();
    let mut acc = 0.0;
    for &(v, w) in items.iter() {
        acc += w;
        if acc >= total / 2.0 {
            return v;
        }
    }
    items.last().map_or(f32::NAN, |x| x.0)
}

impl Fuser {
    /// Adds one classification.
    pub fn push(&mut self, age: Option<AgeEstimate>, emotion: Option<EmotionEstimate>) {
        self.ring[self.head] = Obs { age, emotion: emotion.map(|e| e.probabilities) };
        self.head = (self.head + 1) % MAX_WINDOW;
        self.len = (self.len + 1).min(MAX_WINDOW);
        self.total += 1;
    }

    /// The last `n` observations, newest first.
    fn recent(&self, n: usize) -> impl Iterator<Item = &Obs> {
        let n = n.clamp(1, MAX_WINDOW).min(self.len);
        (0..n).map(move |i| &self.ring[(self.head + MAX_WINDOW - 1 - i) % MAX_WINDOW])
    }

    /// How many observations a result with this `window` fuses.
    pub fn fused_count(&self, window: usize) -> u32 {
        self.len.min(window.max(1)) as u32
    }

    /// The fused age.
    pub fn age(&self, window: usize) -> Option<AgeEstimate> {
        if window == 0 {
            return self.recent(1).next().and_then(|o| o.age);
        }
        let mut vals = [(0f32, 0f32); MAX_WINDOW];
        let mut lows = [(0f32, 0f32); MAX_WINDOW];
        let mut highs = [(0f32, 0f32); MAX_WINDOW];
        let (mut n, mut wsum, mut sd, mut conf) = (0, 0f32, 0f32, 0f32);
        // The last `window` observations that carry an age (settled tracks are classified for age less often than
        // for emotion, see `video`).
        for a in self.recent(MAX_WINDOW).filter_map(|o| o.age).take(window) {
            // Confident (narrow) estimates count more.
            let w = 1.0 / (a.stddev * a.stddev + 1.0);
            vals[n] = (a.value, w);
            lows[n] = (a.low, w);
            highs[n] = (a.high, w);
            wsum += w;
            sd += w * a.stddev;
            conf += w * a.confidence;
            n += 1;
        }
        if n == 0 || wsum <= 0.0 {
            return None;
        }
        let value = weighted_median(&mut vals[..n]);
        Some(AgeEstimate {
            value,
            stddev: sd / wsum,
            low: weighted_median(&mut lows[..n]).min(value),
            high: weighted_median(&mut highs[..n]).max(value),
            confidence: conf / wsum,
        })
    }

    /// The fused emotion; updates the hysteresis state.
    pub fn emotion(&mut self, window: usize) -> Option<EmotionEstimate> {
        if window == 0 {
            return self.recent(1).next().and_then(|o| o.emotion).map(EmotionEstimate::from_probabilities);
        }
        let mut mean = [0f32; NUM_EMOTIONS];
        let mut n = 0;
        for p in self.recent(window).filter_map(|o| o.emotion) {
            for (m, v) in mean.iter_mut().zip(p) {
                *m += v;
            }
            n += 1;
        }
        if n == 0 {
            return None;
        }
        mean.iter_mut().for_each(|m| *m /= n as f32);
        let best = EmotionEstimate::from_probabilities(mean).index;
        let label = match self.label {
            Some(cur) if mean[best] - mean[cur] <= HYSTERESIS => cur,
            _ => best,
        };
        self.label = Some(label);
        Some(EmotionEstimate { probabilities: mean, index: label })
    }
}

/// One tracked person.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    /// Box at the last detection.
    pub bbox: BBox,
    pub detection: Detection,
    /// Box change per frame (x, y, w, h), smoothed.
    pub velocity: [f32; 4],
    pub first_frame: u64,
    pub last_seen_frame: u64,
    pub first_pts: Option<u64>,
    pub last_pts: Option<u64>,
    /// Frames in which the track was reported (detected or predicted).
    pub frames_reported: u64,
    pub fuser: Fuser,
    pub last_classified_frame: Option<u64>,
    pub last_classified_area: f32,
    /// Frame of the last age classification and how many the track had.
    pub last_age_frame: Option<u64>,
    pub age_observations: u32,
    /// Frames per reported emotion label, for the summary.
    pub emotion_frames: [u64; NUM_EMOTIONS],
    /// Confidence-weighted age over the whole track: sum of weights, of weight·value, ·low, ·high.
    pub age_acc: [f64; 4],
    /// Quality (score · sqrt(area)) and timestamp of the best classified observation.
    pub best: Option<(f32, Option<u64>)>,
    /// Latest male probability (HSE age model).
    pub gender_male: Option<f32>,
}

impl Track {
    /// The box predicted for `frame` by constant velocity from the last detection.
    pub fn predicted(&self, frame: u64) -> BBox {
        let dt = frame.saturating_sub(self.last_seen_frame) as f32;
        let v = self.velocity;
        let b = self.bbox;
        BBox { x: b.x + v[0] * dt, y: b.y + v[1] * dt, w: (b.w + v[2] * dt).max(1.0), h: (b.h + v[3] * dt).max(1.0) }
    }
}

/// What is known of a track when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSummary {
    pub id: u64,
    pub first_pts: Option<u64>,
    pub last_pts: Option<u64>,
    pub frames: u64,
    /// Confidence-weighted mean age with mean 10th/90th percentiles, when the track was ever aged.
    pub age: Option<(f32, f32, f32)>,
    /// Share of reported frames per emotion (0..1), when the track ever had an emotion.
    pub emotions: Option<[f32; NUM_EMOTIONS]>,
    pub best_pts: Option<u64>,
}

impl TrackSummary {
    fn of(t: &Track) -> Self {
        let [w, wv, wl, wh] = t.age_acc;
        let labelled: u64 = t.emotion_frames.iter().sum();
        Self {
            id: t.id,
            first_pts: t.first_pts,
            last_pts: t.last_pts,
            frames: t.frames_reported,
            age: (w > 0.0).then(|| ((wv / w) as f32, (wl / w) as f32, (wh / w) as f32)),
            emotions: (labelled > 0).then(|| t.emotion_frames.map(|c| c as f32 / labelled as f32)),
            best_pts: t.best.and_then(|b| b.1),
        }
    }

    /// The summary as one JSON object (`"type": "track"`).
    pub fn to_json(&self) -> String {
        let mut o = serde_json::json!({
            "type": "track",
            "id": self.id,
            "first_pts": self.first_pts,
            "last_pts": self.last_pts,
            "duration_ns": match (self.first_pts, self.last_pts) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            "frames": self.frames,
            "best_pts": self.best_pts,
        });
        if let Some((v, lo, hi)) = self.age {
            o["age"] = serde_json::json!({ "value": (v * 10.0).round() / 10.0, "low": lo.round(), "high": hi.round() });
        }
        if let Some(e) = self.emotions {
            let m: serde_json::Map<String, serde_json::Value> = crate::face::EMOTIONS
                .iter()
                .zip(e)
                .map(|(n, s)| (n.to_string(), serde_json::json!((s * 1000.0).round() / 1000.0)))
                .collect();
            o["emotions"] = serde_json::Value::Object(m);
        }
        o.to_string()
    }
}

/// Assigns detections to tracks frame by frame.
#[derive(Debug, Default)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
    pairs: Vec<(f32, usize, usize)>,
    det_track: Vec<usize>,
    track_taken: Vec<bool>,
}

/// How well a detection fits a track's prediction: IoU, or for faces that do not overlap enough (small or fast),
/// a score from the centre distance relative to the face size. 0 = no match.
fn affinity(pred: &BBox, det: &BBox, iou_threshold: f32) -> f32 {
    let iou = pred.iou(det);
    if iou >= iou_threshold {
        return 1.0 + iou;
    }
    let size = pred.w.max(pred.h).max(det.w.max(det.h));
    let (dx, dy) = ((pred.x + pred.w / 2.0) - (det.x + det.w / 2.0), (pred.y + pred.h / 2.0) - (det.y + det.h / 2.0));
    let dist = (dx * dx + dy * dy).sqrt() / size.max(1.0);
    let scale = (det.area() / pred.area().max(1e-3)).max(pred.area() / det.area().max(1e-3));
    if dist < 0.5 && scale < 2.0 { 1.0 - dist } else { 0.0 }
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn tracks_mut(&mut self) -> &mut [Track] {
        &mut self.tracks
    }

    /// Matches `dets` (frame `frame`, timestamp `pts`) to tracks; returns for each detection the index of its track
    /// in [`Self::tracks`] (new tracks are created for unmatched detections). Tracks not seen for longer than the
    /// timeout end and are appended to `ended`.
    pub fn update(
        &mut self,
        dets: &[Detection],
        frame: u64,
        pts: Option<u64>,
        p: &TrackerParams,
        ended: &mut Vec<TrackSummary>,
    ) -> &[usize] {
        self.expire(frame, p.timeout_frames, ended);
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            let pred = t.predicted(frame);
            for (di, d) in dets.iter().enumerate() {
                let a = affinity(&pred, &d.bbox, p.iou_threshold);
                if a > 0.0 {
                    self.pairs.push((a, ti, di));
                }
            }
        }
        // Greedy, deterministic: best affinity first, ties by track then detection index.
        self.pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        self.det_track.clear();
        self.det_track.resize(dets.len(), usize::MAX);
        self.track_taken.clear();
        self.track_taken.resize(self.tracks.len(), false);
        for &(_, ti, di) in &self.pairs {
            if self.track_taken[ti] || self.det_track[di] != usize::MAX {
                continue;
            }
            self.track_taken[ti] = true;
            self.det_track[di] = ti;
        }
        for (di, d) in dets.iter().enumerate() {
            let ti = self.det_track[di];
            if ti == usize::MAX {
                self.next_id += 1;
                self.tracks.push(Track {
                    id: self.next_id,
                    bbox: d.bbox,
                    detection: *d,
                    velocity: [0.0; 4],
                    first_frame: frame,
                    last_seen_frame: frame,
                    first_pts: pts,
                    last_pts: pts,
                    frames_reported: 0,
                    fuser: Fuser::default(),
                    last_classified_frame: None,
                    last_classified_area: 0.0,
                    last_age_frame: None,
                    age_observations: 0,
                    emotion_frames: [0; NUM_EMOTIONS],
                    age_acc: [0.0; 4],
                    best: None,
                    gender_male: None,
                });
                self.det_track[di] = self.tracks.len() - 1;
            } else {
                let t = &mut self.tracks[ti];
                let dt = frame.saturating_sub(t.last_seen_frame).max(1) as f32;
                let nb = d.bbox;
                let v =
                    [(nb.x - t.bbox.x) / dt, (nb.y - t.bbox.y) / dt, (nb.w - t.bbox.w) / dt, (nb.h - t.bbox.h) / dt];
                // The first match sets the velocity; later ones smooth it.
                let first = t.first_frame == t.last_seen_frame;
                for (tv, nv) in t.velocity.iter_mut().zip(v) {
                    *tv = if !nv.is_finite() {
                        0.0
                    } else if first {
                        nv
                    } else {
                        0.5 * *tv + 0.5 * nv
                    };
                }
                t.bbox = nb;
                t.detection = *d;
                t.last_seen_frame = frame;
                t.last_pts = pts.or(t.last_pts);
            }
        }
        &self.det_track
    }

    /// Ends tracks not seen within `timeout` frames of `frame`.
    pub fn expire(&mut self, frame: u64, timeout: u64, ended: &mut Vec<TrackSummary>) {
        let mut i = 0;
        while i < self.tracks.len() {
            if frame.saturating_sub(self.tracks[i].last_seen_frame) > timeout {
                ended.push(TrackSummary::of(&self.tracks[i]));
                self.tracks.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Ends every track (end of stream, flush).
    pub fn finish(&mut self, ended: &mut Vec<TrackSummary>) {
        ended.extend(self.tracks.iter().map(TrackSummary::of));
        self.tracks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, s: f32) -> Detection {
        Detection { bbox: BBox { x, y, w: s, h: s }, score: 0.9, landmarks: [[0.0; 2]; 5] }
    }

    #[test]
    fn ids_follow_moving_faces_and_survive_a_short_miss() {
        let mut t = Tracker::new();
        let p = TrackerParams::default();
        let mut ended = vec![];
        let mut ids = vec![];
        for f in 0..30u64 {
            // Face A moves right 4 px/frame; face B is still; A is missed on frames 10..13.
            let mut dets = vec![det(200.0, 100.0, 40.0)];
            if !(10..13).contains(&f) {
                dets.insert(0, det(10.0 + 4.0 * f as f32, 20.0, 40.0));
            }
            let idx = t.update(&dets, f, Some(f), &p, &mut ended).to_vec();
            ids.push(idx.iter().map(|&i| t.tracks()[i].id).collect::<Vec<_>>());
        }
        assert!(ended.is_empty());
        assert_eq!(ids[0], vec![1, 2]);
        assert_eq!(ids[29], vec![1, 2], "{ids:?}");
        assert_eq!(ids[11], vec![2]);
        // A face that stays away longer than the timeout ends; a new one gets a new id.
        for f in 30..50u64 {
            t.update(&[], f, Some(f), &p, &mut ended);
        }
        assert_eq!(ended.len(), 2);
        let idx = t.update(&[det(10.0, 20.0, 40.0)], 50, None, &p, &mut ended).to_vec();
        assert_eq!(t.tracks()[idx[0]].id, 3);
    }

    #[test]
    fn crossing_faces_keep_their_ids() {
        let mut t = Tracker::new();
        let p = TrackerParams::default();
        let mut ended = vec![];
        for f in 0..40u64 {
            // A moves right, B moves left, on rows 60 px apart: they pass each other without overlapping much.
            let a = det(10.0 + 8.0 * f as f32, 100.0, 50.0);
            let b = det(330.0 - 8.0 * f as f32, 160.0, 50.0);
            let idx = t.update(&[a, b], f, None, &p, &mut ended).to_vec();
            assert_eq!((t.tracks()[idx[0]].id, t.tracks()[idx[1]].id), (1, 2), "frame {f}");
        }
    }

    #[test]
    fn fuser_none_is_latest_and_window_is_robust() {
        let age = |v: f32| AgeEstimate { value: v, stddev: 3.0, low: v - 4.0, high: v + 4.0, confidence: 0.5 };
        let emo = |i: usize, p: f32| {
            let mut probs = [(1.0 - p) / 6.0; NUM_EMOTIONS];
            probs[i] = p;
            EmotionEstimate::from_probabilities(probs)
        };
        let mut f = Fuser::default();
        for (v, e) in [(30.0, emo(3, 0.6)), (31.0, emo(3, 0.6)), (70.0, emo(6, 0.5)), (32.0, emo(3, 0.55))] {
            f.push(Some(age(v)), Some(e));
        }
        assert_eq!(f.age(0).unwrap().value, 32.0);
        assert_eq!(f.emotion(0).unwrap().index, 3);
        // The 70-year outlier does not move the weighted median.
        assert_eq!(f.age(8).unwrap().value, 31.0);
        assert_eq!(f.fused_count(8), 4);
        // Hysteresis: one neutral frame does not flip a happy label.
        let mut g = Fuser::default();
        g.push(None, Some(emo(3, 0.5)));
        assert_eq!(g.emotion(4).unwrap().label(), "happy");
        g.push(None, Some(emo(6, 0.6)));
        assert_eq!(g.emotion(4).unwrap().label(), "happy");
        g.push(None, Some(emo(6, 0.9)));
        g.push(None, Some(emo(6, 0.9)));
        assert_eq!(g.emotion(4).unwrap().label(), "neutral");
    }
}
