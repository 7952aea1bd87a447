// SPDX-License-Identifier: MIT OR Apache-2.0
//! Sharing inference sessions between elements of a process (the `model-instance-id` property): elements whose
//! configuration and instance id are equal get the same [`SharedAnalyzer`], so sixteen cameras do not load sixteen
//! copies of the models. A shared analyzer is a small pool: it grows only while every copy is busy, up to as many
//! copies as the CPU has room for (cores / intra-op threads), so streams still run in parallel on a CPU while
//! memory stays bounded by the core count instead of the stream count. A single stream always uses one copy and
//! never waits.
//!
//! Cross-stream batching: when several elements share an engine, the faces they ask to classify within
//! `batch-timeout` of each other run in one batch (up to `max-batch-size` faces). Each stream prepares its own
//! crops (from its own frame, in its own thread); the first stream to arrive becomes the batch's leader, waits at
//! most the timeout for others (or until the batch is full), runs the networks once on the concatenated inputs on
//! a free pooled copy and hands every stream its outputs. A stream alone on its engine never waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::analyzer::{AnalyzeParams, Analyzer, AnalyzerConfig, FrameStats, assemble};
use crate::face::{Detection, EmotionEstimate, Face};
use crate::frame::FrameRef;
use crate::inference::age::{self, AgeKind, AgeOutput};
use crate::inference::{InferenceError, Result, emotion};

#[derive(Debug)]
struct Pool {
    cfg: AnalyzerConfig,
    slots: Mutex<Vec<Arc<Mutex<Analyzer>>>>,
    max: usize,
    /// Set when loading another copy failed; the pool then stops trying to grow.
    grow_failed: AtomicBool,
    /// The age model's kind (for preparing inputs outside the pool), if one is loaded.
    age_kind: Option<AgeKind>,
    has_emotion: bool,
    queue: Mutex<BatchQueue>,
    wake: Condvar,
}

/// Cross-stream batching settings of one stream: how long it may wait for others as a batch's leader, and the
/// batch size at which it stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchParams {
    pub timeout: Duration,
    pub max_faces: usize,
}

/// `batch-timeout` default: 1 ms, small against a frame's 30-40 ms.
pub const DEFAULT_BATCH_TIMEOUT_US: u64 = 1000;
/// `max-batch-size` default (faces).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;

impl Default for BatchParams {
    fn default() -> Self {
        Self { timeout: Duration::from_micros(DEFAULT_BATCH_TIMEOUT_US), max_faces: DEFAULT_MAX_BATCH_SIZE }
    }
}

/// One stream's classification request, reused from frame to frame: its prepared inputs and, once served, its
/// outputs.
#[derive(Debug, Default)]
pub struct Job {
    data: Mutex<JobData>,
    done: AtomicBool,
}

#[derive(Debug, Default)]
struct JobData {
    n: usize,
    age: bool,
    emotion: bool,
    flip: bool,
    age_in: Vec<f32>,
    emotion_in: Vec<f32>,
    age_out: Vec<AgeOutput>,
    emotion_out: Vec<Option<EmotionEstimate>>,
    invalid: usize,
    /// Inference calls this job took part in, per model.
    age_runs: usize,
    emotion_runs: usize,
    /// Faces in the batches this job was served in.
    batch_faces: usize,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct BatchQueue {
    pending: Vec<Arc<Job>>,
    pending_faces: usize,
    /// A leader is collecting `pending`.
    collecting: bool,
    /// A spare list, swapped with `pending` by a leader so that neither allocates once warm.
    spare: Vec<Arc<Job>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An analyzer that several streams may use in turn.
#[derive(Debug, Clone)]
pub struct SharedAnalyzer(Arc<Pool>);

impl SharedAnalyzer {
    /// An analyzer of one's own (a pool of one).
    pub fn private(a: Analyzer) -> Self {
        Self::new_pool(AnalyzerConfig::default(), a, 1)
    }

    fn pooled(cfg: &AnalyzerConfig, first: Analyzer) -> Self {
        // threads=0 lets ONNX Runtime use every core per copy: one copy is all the CPU has room for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = cores.checked_div(cfg.session.threads).map_or(1, |m| m.max(1));
        Self::new_pool(cfg.clone(), first, max)
    }

    fn new_pool(cfg: AnalyzerConfig, first: Analyzer, max: usize) -> Self {
        Self(Arc::new(Pool {
            cfg,
            age_kind: first.age_kind(),
            has_emotion: first.has_emotion(),
            slots: Mutex::new(vec![Arc::new(Mutex::new(first))]),
            max,
            grow_failed: Default::default(),
            queue: Mutex::new(BatchQueue::default()),
            wake: Condvar::new(),
        }))
    }

    /// Runs `f` with exclusive use of one pooled analyzer: a free one, else a new one while the pool may grow
    /// (loaded once, on this first contention), else the first one when it becomes free.
    pub fn with<R>(&self, f: impl FnOnce(&mut Analyzer) -> R) -> R {
        use std::sync::atomic::Ordering;
        let slots = || self.0.slots.lock().unwrap_or_else(|e| e.into_inner());
        let n = slots().len();
        for i in 0..n {
            let slot = Arc::clone(&slots()[i]);
            match slot.try_lock() {
                Ok(mut g) => return f(&mut g),
                Err(std::sync::TryLockError::Poisoned(e)) => return f(&mut e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        if n < self.0.max && !self.0.grow_failed.load(Ordering::Relaxed) {
            match Analyzer::load(&self.0.cfg) {
                Ok(a) => {
                    let slot = Arc::new(Mutex::new(a));
                    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                    {
                        let mut s = slots();
                        if s.len() < self.0.max {
                            s.push(Arc::clone(&slot));
                        }
                    }
                    return f(&mut guard);
                }
                Err(_) => self.0.grow_failed.store(true, Ordering::Relaxed),
            }
        }
        let first = Arc::clone(&slots()[0]);
        let mut guard = first.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Classifies `dets` of `frame` into `faces` like [`Analyzer::classify`]. When other streams share this engine
    /// and `batch` allows waiting, the faces join a cross-stream batch (see the module docs); `job` is this stream's
    /// reusable request. Alone on the engine, this is [`Analyzer::classify`] on a pooled copy, without waiting.
    #[allow(clippy::too_many_arguments)]
    pub fn classify(
        &self,
        frame: &FrameRef,
        dets: &[Detection],
        p: &AnalyzeParams,
        faces: &mut Vec<Face>,
        stats: &mut FrameStats,
        batch: &BatchParams,
        job: &Arc<Job>,
    ) -> Result<()> {
        if batch.timeout.is_zero() || self.users() < 2 || dets.is_empty() {
            return self.with(|a| a.classify(frame, dets, p, faces, stats));
        }
        let t = Instant::now();
        let n = dets.len();
        {
            let mut d = lock(&job.data);
            d.n = n;
            d.age = p.analyze_age && self.0.age_kind.is_some();
            d.emotion = p.analyze_emotion && self.0.has_emotion;
            d.flip = p.emotion.flip;
            if let (true, Some(kind)) = (d.age, self.0.age_kind) {
                age::prepare_batch(kind, frame, dets, &p.age, &mut d.age_in);
            }
            if d.emotion {
                emotion::prepare_batch(frame, dets, &p.emotion, &mut d.emotion_in);
            }
            d.age_out.clear();
            d.emotion_out.clear();
            d.invalid = 0;
            d.age_runs = 0;
            d.emotion_runs = 0;
            d.error = None;
        }
        job.done.store(false, Ordering::Release);
        self.submit(job, n, batch);
        let mut d = lock(&job.data);
        if let Some(reason) = d.error.take() {
            return Err(InferenceError::Run { model: "classifier batch".into(), reason });
        }
        faces.clear();
        faces.extend(dets.iter().map(|&detection| Face { detection, ..Default::default() }));
        let age: &[AgeOutput] = if d.age { &d.age_out } else { &[] };
        let emo: &[Option<EmotionEstimate>] = if d.emotion { &d.emotion_out } else { &[] };
        assemble(faces, age, emo, p.analyze_gender);
        stats.invalid_outputs += d.invalid;
        stats.age_runs += d.age_runs;
        stats.emotion_runs += d.emotion_runs;
        stats.batch_faces = stats.batch_faces.max(d.batch_faces);
        // Waiting and inference are one span here; it is reported as classification time.
        let spent = t.elapsed();
        match (d.age, d.emotion) {
            (true, _) => stats.t_age += spent,
            (false, true) => stats.t_emotion += spent,
            _ => {}
        }
        Ok(())
    }

    /// Queues `job` and returns once it has been served: as a follower of a collecting leader, or as the leader.
    fn submit(&self, job: &Arc<Job>, n: usize, batch: &BatchParams) {
        let pool = &self.0;
        let mut q = lock(&pool.queue);
        q.pending.push(Arc::clone(job));
        q.pending_faces += n;
        pool.wake.notify_all();
        if q.collecting {
            while !job.done.load(Ordering::Acquire) {
                q = pool.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            return;
        }
        q.collecting = true;
        let deadline = Instant::now() + batch.timeout;
        while q.pending_faces < batch.max_faces.max(1) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = pool.wake.wait_timeout(q, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        let mut taken = std::mem::take(&mut q.spare);
        std::mem::swap(&mut taken, &mut q.pending);
        q.pending_faces = 0;
        q.collecting = false;
        drop(q);
        // Jobs arriving from now on start the next batch under a new leader, in parallel with this one.
        // A panic while serving must not leave the followers waiting for ever: it becomes every job's error.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.with(|a| serve(a, &taken))));
        if served.is_err() {
            for j in &taken {
                lock(&j.data).error = Some("the classifier panicked while serving a cross-stream batch".into());
            }
        }
        let mut q = lock(&pool.queue);
        for j in &taken {
            j.done.store(true, Ordering::Release);
        }
        pool.wake.notify_all();
        taken.clear();
        if q.spare.capacity() < taken.capacity() {
            q.spare = taken;
        }
    }

    /// How many elements hold this analyzer.
    pub fn users(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Whether two handles share the same sessions.
    pub fn same(&self, other: &SharedAnalyzer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `model-instance-id` that never shares.
pub const PRIVATE: &str = "private";

/// A live engine: instance id, configuration key, and the pool while any element holds it.
type Entry = (String, String, Weak<Pool>);

static ENGINES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The shared analyzer for `cfg` under `instance` (empty: any element with the same configuration; `private`: a
/// new one for this caller alone), loading it when no live one matches.
pub fn acquire(cfg: &AnalyzerConfig, instance: &str) -> Result<SharedAnalyzer> {
    if instance == PRIVATE {
        return Analyzer::load(cfg).map(|a| SharedAnalyzer::pooled(cfg, a));
    }
    // The configuration's debug text is its identity: same files, models, provider and threads.
    let key = format!("{cfg:?}");
    let mut engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    engines.retain(|(_, _, w)| w.strong_count() > 0);
    if let Some(p) = engines.iter().find(|(i, k, _)| i == instance && *k == key).and_then(|(_, _, w)| w.upgrade()) {
        return Ok(SharedAnalyzer(p));
    }
    // Loading under the registry lock keeps two elements starting together from loading the models twice.
    let shared = SharedAnalyzer::pooled(cfg, Analyzer::load(cfg)?);
    engines.push((instance.to_string(), key, Arc::downgrade(&shared.0)));
    Ok(shared)
}

/// Live shared analyzers per instance id (for diagnostics and tests).
pub fn live_instances() -> std::collections::HashMap<String, usize> {
    let engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = std::collections::HashMap::new();
    for (i, _, w) in engines.iter() {
        if w.strong_count() > 0 {
            *m.entry(i.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// Runs one cross-stream batch on `a`: age over every job that asked for it, then emotion (jobs with and without
/// flips in separate runs), in chunks of at most [`crate::inference::MAX_BATCH`] faces, outputs written back to
/// each job.
fn serve(a: &mut Analyzer, jobs: &[Arc<Job>]) {
    let total: usize = jobs.iter().map(|j| lock(&j.data).n).sum();
    let mut input = std::mem::take(&mut a.batch_input);
    let r = serve_model(a, jobs, &mut input, Model::Age, total)
        .and_then(|()| serve_model(a, jobs, &mut input, Model::Emotion(false), total))
        .and_then(|()| serve_model(a, jobs, &mut input, Model::Emotion(true), total));
    a.batch_input = input;
    if let Err(e) = r {
        for j in jobs {
            lock(&j.data).error = Some(e.to_string());
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Model {
    Age,
    Emotion(bool),
}

fn serve_model(a: &mut Analyzer, jobs: &[Arc<Job>], input: &mut Vec<f32>, model: Model, total: usize) -> Result<()> {
    let wants = |d: &JobData| match model {
        Model::Age => d.age,
        Model::Emotion(flip) => d.emotion && d.flip == flip,
    };
    let per = match (model, a.age_kind()) {
        (Model::Age, Some(kind)) => age::input_len(kind),
        (Model::Age, None) => return Ok(()),
        (Model::Emotion(flip), _) => emotion::input_len(flip),
    };
    let mut runs = 0;
    input.clear();
    let mut n = 0;
    for j in jobs {
        let mut d = lock(&j.data);
        if !wants(&d) {
            continue;
        }
        let src = if model == Model::Age { &d.age_in } else { &d.emotion_in };
        input.extend_from_slice(&src[..d.n * per]);
        n += d.n;
        d.batch_faces = total;
    }
    if n == 0 {
        return Ok(());
    }
    // One run over all jobs' faces (the models split it into bounded chunks), then hand each job its slice.
    let (mut age_out, mut emotion_out) = (std::mem::take(&mut a.batch_age), std::mem::take(&mut a.batch_emotion));
    age_out.clear();
    emotion_out.clear();
    let r = match model {
        Model::Age => match a.age_model() {
            Some(m) => m.run_prepared(input, n, &mut age_out).map(|_| ()),
            None => Ok(()),
        },
        Model::Emotion(flip) => match a.emotion_model() {
            Some(m) => {
                runs = m.sessions().len();
                m.run_prepared(input, n, flip, &mut emotion_out).map(|_| ())
            }
            None => Ok(()),
        },
    };
    if r.is_ok() {
        scatter(jobs, model, &wants, &age_out, &emotion_out, n.div_ceil(crate::inference::MAX_BATCH) * runs.max(1));
    }
    (a.batch_age, a.batch_emotion) = (age_out, emotion_out);
    r
}

/// Hands each job that took part its slice of the batch outputs.
fn scatter(
    jobs: &[Arc<Job>],
    model: Model,
    wants: &dyn Fn(&JobData) -> bool,
    age_out: &[AgeOutput],
    emotion_out: &[Option<EmotionEstimate>],
    runs: usize,
) {
    let mut at = 0;
    for j in jobs {
        let mut d = lock(&j.data);
        if !wants(&d) {
            continue;
        }
        let k = d.n;
        match model {
            Model::Age => {
                let mine = &age_out[at..at + k];
                d.invalid += mine.iter().filter(|o| o.age.is_none()).count();
                d.age_out.extend_from_slice(mine);
                d.age_runs = runs;
            }
            Model::Emotion(_) => {
                let mine = &emotion_out[at..at + k];
                d.invalid += mine.iter().filter(|o| o.is_none()).count();
                d.emotion_out.extend_from_slice(mine);
                d.emotion_runs = runs;
            }
        }
        at += k;
    }
}
