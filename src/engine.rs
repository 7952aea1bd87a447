// SPDX-License-Identifier: MIT OR Apache-2.0
//! Sharing inference sessions between elements of a process (the `model-instance-id` property): elements whose
//! configuration and instance id are equal get the same [`SharedAnalyzer`], so sixteen cameras do not load sixteen
//! copies of the models. A shared analyzer is a small pool: it grows only while every copy is busy, up to as many
//! copies as the CPU has room for (cores / intra-op threads), so streams still run in parallel on a CPU while
//! memory stays bounded by the core count instead of the stream count. A single stream always uses one copy and
//! never waits.

use std::sync::{Arc, Mutex, Weak};

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::inference::Result;

#[derive(Debug)]
struct Pool {
    cfg: AnalyzerConfig,
    slots: Mutex<Vec<Arc<Mutex<Analyzer>>>>,
    max: usize,
    /// Set when loading another copy failed; the pool then stops trying to grow.
    grow_failed: std::sync::atomic::AtomicBool,
}

/// An analyzer that several streams may use in turn.
#[derive(Debug, Clone)]
pub struct SharedAnalyzer(Arc<Pool>);

impl SharedAnalyzer {
    /// An analyzer of one's own (a pool of one).
    pub fn private(a: Analyzer) -> Self {
        Self(Arc::new(Pool {
            cfg: AnalyzerConfig::default(),
            slots: Mutex::new(vec![Arc::new(Mutex::new(a))]),
            max: 1,
            grow_failed: Default::default(),
        }))
    }

    fn pooled(cfg: &AnalyzerConfig, first: Analyzer) -> Self {
        // threads=0 lets ONNX Runtime use every core per copy: one copy is all the CPU has room for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = cores.checked_div(cfg.session.threads).map_or(1, |m| m.max(1));
        Self(Arc::new(Pool {
            cfg: cfg.clone(),
            slots: Mutex::new(vec![Arc::new(Mutex::new(first))]),
            max,
            grow_failed: Default::default(),
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
