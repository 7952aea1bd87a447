// SPDX-License-Identifier: MIT OR Apache-2.0
//! The model manifest (`models/manifest.json`, compiled in): which files the element knows by name, their sha256,
//! and the input/output contract each must satisfy. Also where the model directory is found.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One tensor of a model contract. `-1` in `shape` means "any size".
#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub element_type: String,
    pub shape: Vec<i64>,
}

/// One model entry of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub licence: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    models: Vec<ModelSpec>,
}

static MANIFEST: LazyLock<Vec<ModelSpec>> = LazyLock::new(|| {
    // The manifest is part of the source tree; a unit test proves it parses.
    serde_json::from_str::<Manifest>(include_str!("../models/manifest.json")).map(|m| m.models).unwrap_or_default()
});

/// All models the manifest lists.
pub fn known_models() -> &'static [ModelSpec] {
    &MANIFEST
}

/// The manifest entry called `name` (e.g. `"yunet"`, `"dlib"`, `"hse"`, `"mini"`, `"big"`).
pub fn spec(name: &str) -> Option<&'static ModelSpec> {
    MANIFEST.iter().find(|m| m.name == name)
}

/// Environment variable that overrides the default model directory.
pub const MODEL_DIR_ENV: &str = "FACEANALYZE_MODEL_DIR";

/// The model directory used when the `model-dir` property is empty: `$FACEANALYZE_MODEL_DIR`, else the
/// project's own `models/onnx` (where `scripts/setup.sh` puts the files).
pub fn default_model_dir() -> PathBuf {
    match std::env::var_os(MODEL_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("onnx"),
    }
}

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error(
        "model file {path} does not exist (run scripts/setup.sh to fetch the models, or set the model-dir property)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read model file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "model file {path} is damaged or not the expected model: sha256 {actual}, expected {expected} \
         (run scripts/setup.sh again to re-fetch it)"
    )]
    Checksum { path: PathBuf, expected: String, actual: String },
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks that `path` exists and, when `expected` is given, that its sha256 matches.
pub fn verify_file(path: &Path, expected: Option<&str>) -> Result<(), ModelFileError> {
    if !path.is_file() {
        return Err(ModelFileError::Missing { path: path.to_owned() });
    }
    if let Some(expected) = expected {
        let actual = sha256_file(path).map_err(|source| ModelFileError::Read { path: path.to_owned(), source })?;
        if !actual.eq_ignore_ascii_case(expected) && !parity_stamp_matches(path, &actual) {
            return Err(ModelFileError::Checksum { path: path.to_owned(), expected: expected.to_owned(), actual });
        }
    }
    Ok(())
}

/// A model converted locally from its upstream format (Keras, TF.js) cannot match the published sha256; the fetch
/// script then checks it numerically against reference outputs and records its own sha256 in `FILE.parity.json`.
fn parity_stamp_matches(path: &Path, actual: &str) -> bool {
    let mut stamp = path.as_os_str().to_owned();
    stamp.push(".parity.json");
    let Ok(text) = std::fs::read_to_string(&stamp) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v.get("verified_by").and_then(|x| x.as_str()) == Some("parity")
        && v.get("sha256").and_then(|x| x.as_str()).is_some_and(|s| s.eq_ignore_ascii_case(actual))
}

/// A model chosen by a property: a manifest name, resolved in the model directory, or a path to a file.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// The manifest entry when the model was named; `None` for a user-supplied path.
    pub known: Option<&'static ModelSpec>,
}

/// Resolves `choice` (a known name such as `hse`, or a path) for `role`, looking in `model_dir` for names.
pub fn resolve(choice: &str, role: &str, model_dir: &Path) -> Result<ResolvedModel, String> {
    if let Some(spec) = spec(choice) {
        if spec.role != role {
            return Err(format!("model '{choice}' is a {} model, not a {role} model", spec.role));
        }
        return Ok(ResolvedModel { path: model_dir.join(&spec.file), known: Some(spec) });
    }
    let looks_like_path = choice.contains('/') || choice.ends_with(".onnx");
    if !looks_like_path {
        let names: Vec<&str> = MANIFEST.iter().filter(|m| m.role == role).map(|m| m.name.as_str()).collect();
        return Err(format!("unknown {role} model '{choice}': give a path to an .onnx file or one of {names:?}"));
    }
    let path = PathBuf::from(choice);
    // A path naming a known file still gets its checksum verified.
    let known =
        path.file_name().and_then(|f| f.to_str()).and_then(|f| MANIFEST.iter().find(|m| m.file == f && m.role == role));
    Ok(ResolvedModel { path, known })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_lists_every_role() {
        assert!(known_models().len() >= 5, "manifest must parse");
        for name in ["yunet", "dlib", "hse", "mini", "big"] {
            let s = spec(name).unwrap();
            assert_eq!(s.sha256.len(), 64);
            assert!(!s.inputs.is_empty() && !s.outputs.is_empty());
        }
    }

    #[test]
    fn defaults_are_manifest_models_and_committed_files_match_their_sha256() {
        use crate::analyzer::{DEFAULT_AGE_MODEL, DEFAULT_DETECTOR_MODEL, DEFAULT_EMOTION_MODEL, ENSEMBLE_MODELS};
        for (name, role) in
            [(DEFAULT_DETECTOR_MODEL, "detector"), (DEFAULT_AGE_MODEL, "age"), (DEFAULT_EMOTION_MODEL, "emotion")]
                .into_iter()
                .chain(ENSEMBLE_MODELS.map(|n| (n, "emotion")))
        {
            assert_eq!(spec(name).unwrap_or_else(|| panic!("{name} not in the manifest")).role, role, "{name}");
        }
        // Entries installed from a file of this repository must name that very file.
        let manifest: serde_json::Value = serde_json::from_str(include_str!("../models/manifest.json")).unwrap();
        let mut repo_files = 0;
        for m in manifest["models"].as_array().unwrap() {
            if m["source"]["kind"] == "repo" {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(m["source"]["path"].as_str().unwrap());
                verify_file(&path, m["sha256"].as_str()).unwrap_or_else(|e| panic!("{}: {e}", m["name"]));
                repo_files += 1;
            }
        }
        assert!(repo_files >= 6, "{repo_files} repository files in the manifest");
    }

    #[test]
    fn resolve_names_and_paths() {
        let dir = Path::new("/m");
        let r = resolve("hse", "age", dir).unwrap();
        assert_eq!(r.path, Path::new("/m/age_gender_hse_faceres.onnx"));
        assert!(resolve("hse", "emotion", dir).is_err());
        assert!(resolve("nonsense", "age", dir).unwrap_err().contains("unknown age model"));
        let p = resolve("/x/age_dlib_v1.onnx", "age", dir).unwrap();
        assert_eq!(p.known.unwrap().name, "dlib");
        assert!(resolve("/x/custom.onnx", "age", dir).unwrap().known.is_none());
    }

    #[test]
    fn verify_reports_missing_and_checksum() {
        let dir = std::env::temp_dir().join(format!("fa-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.onnx");
        assert!(matches!(verify_file(&f, None), Err(ModelFileError::Missing { .. })));
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc")
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_file(&f, Some(good)).unwrap();
        let err = verify_file(&f, Some(&"0".repeat(64))).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("x.onnx"), "{err}");
        // A parity-verified local conversion is accepted by its recorded sha256, and only by that.
        let stamp = dir.join("x.onnx.parity.json");
        std::fs::write(&stamp, format!(r#"{{"verified_by": "parity", "sha256": "{good}"}}"#)).unwrap();
        verify_file(&f, Some(&"0".repeat(64))).unwrap();
        std::fs::write(&f, b"abd").unwrap();
        assert!(verify_file(&f, Some(&"0".repeat(64))).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
