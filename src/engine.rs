// SPDX-License-Identifier: MIT OR Apache-2.0
//! Sharing one set of ONNX Runtime sessions between elements of a process (the `model-instance-id` property):
//! elements whose configuration and instance id are equal get the same [`SharedAnalyzer`], so sixteen cameras
//! load the models once and share their memory and thread pools. Each frame locks the shared analyzer only while it
//! runs a model; a single stream never waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::inference::Result;

/// An analyzer that several streams may use in turn.
#[derive(Debug, Clone)]
pub struct SharedAnalyzer(Arc<Mutex<Analyzer>>);

impl SharedAnalyzer {
    /// An analyzer of one's own.
    pub fn private(a: Analyzer) -> Self {
        Self(Arc::new(Mutex::new(a)))
    }

    /// Exclusive use for one model call or a few.
    pub fn lock(&self) -> MutexGuard<'_, Analyzer> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
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

/// A live engine: instance id, configuration key, and the analyzer while any element holds it.
type Entry = (String, String, Weak<Mutex<Analyzer>>);

static ENGINES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The shared analyzer for `cfg` under `instance` (empty: any element with the same configuration; `private`: a
/// new one for this caller alone), loading it when no live one matches.
pub fn acquire(cfg: &AnalyzerConfig, instance: &str) -> Result<SharedAnalyzer> {
    if instance == PRIVATE {
        return Analyzer::load(cfg).map(SharedAnalyzer::private);
    }
    // The configuration's debug text is its identity: same files, models, provider and threads.
    let key = format!("{cfg:?}");
    let mut engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    engines.retain(|(_, _, w)| w.strong_count() > 0);
    if let Some(a) = engines.iter().find(|(i, k, _)| i == instance && *k == key).and_then(|(_, _, w)| w.upgrade()) {
        return Ok(SharedAnalyzer(a));
    }
    // Loading under the registry lock keeps two elements starting together from loading the models twice.
    let shared = SharedAnalyzer::private(Analyzer::load(cfg)?);
    engines.push((instance.to_string(), key, Arc::downgrade(&shared.0)));
    Ok(shared)
}

/// Live shared analyzers per instance id (for diagnostics and tests).
pub fn live_instances() -> HashMap<String, usize> {
    let engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = HashMap::new();
    for (i, _, w) in engines.iter() {
        if w.strong_count() > 0 {
            *m.entry(i.clone()).or_insert(0) += 1;
        }
    }
    m
}
