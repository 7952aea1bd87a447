// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the analysis finds: faces, their boxes and landmarks, and the age and emotion estimates.

/// An axis-aligned box in frame pixels (continuous coordinates, top-left origin, no "+1").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn from_corners(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x: x1, y: y1, w: x2 - x1, h: y2 - y1 }
    }
    pub fn x2(&self) -> f32 {
        self.x + self.w
    }
    pub fn y2(&self) -> f32 {
        self.y + self.h
    }
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }
    /// Intersection over union; 0 for empty or non-finite boxes.
    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2().min(o.x2()) - self.x.max(o.x)).max(0.0);
        let ih = (self.y2().min(o.y2()) - self.y.max(o.y)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union > 0.0 && inter.is_finite() { inter / union } else { 0.0 }
    }
    /// The box clipped to a `width` x `height` frame.
    pub fn clip(&self, width: f32, height: f32) -> BBox {
        let x1 = self.x.clamp(0.0, width);
        let y1 = self.y.clamp(0.0, height);
        let x2 = self.x2().clamp(0.0, width);
        let y2 = self.y2().clamp(0.0, height);
        BBox::from_corners(x1, y1, x2.max(x1), y2.max(y1))
    }
}

/// One detected face: box, detector confidence and the five landmarks in OpenCV/YuNet order
/// (right eye, left eye, nose tip, right mouth corner, left mouth corner), in frame pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

/// An age estimate from a distribution over years.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgeEstimate {
    /// Expected age in years.
    pub value: f32,
    /// Standard deviation of the distribution, in years.
    pub stddev: f32,
    /// 10th percentile, in years.
    pub low: f32,
    /// 90th percentile, in years.
    pub high: f32,
    /// Probability mass within ±5 years of `value` (how peaked the distribution is), in 0..1.
    pub confidence: f32,
}

/// The seven FER2013 classes, in the models' output order.
pub const EMOTIONS: [&str; 7] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
pub const NUM_EMOTIONS: usize = EMOTIONS.len();

/// An emotion estimate: the seven class probabilities and the winning class.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EmotionEstimate {
    pub probabilities: [f32; NUM_EMOTIONS],
    /// Index into [`EMOTIONS`].
    pub index: usize,
}

impl EmotionEstimate {
    pub fn from_probabilities(probabilities: [f32; NUM_EMOTIONS]) -> Self {
        let mut index = 0;
        for (i, p) in probabilities.iter().enumerate() {
            if p.total_cmp(&probabilities[index]).is_gt() {
                index = i;
            }
        }
        Self { probabilities, index }
    }
    pub fn label(&self) -> &'static str {
        EMOTIONS[self.index.min(NUM_EMOTIONS - 1)]
    }
    pub fn confidence(&self) -> f32 {
        self.probabilities[self.index.min(NUM_EMOTIONS - 1)]
    }
}

/// Everything known about one face in one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Face {
    pub detection: Detection,
    pub age: Option<AgeEstimate>,
    /// Probability that the face is male (only when gender analysis is on).
    pub gender_male: Option<f32>,
    pub emotion: Option<EmotionEstimate>,
    /// Track id, once tracking assigns one.
    pub track_id: Option<u64>,
    /// Whether age/emotion were computed on this frame (false: carried from an earlier frame of the track).
    pub fresh: bool,
    /// How many classifications the age/emotion result fuses (0: none yet).
    pub observations: u32,
}
