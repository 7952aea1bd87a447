#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Sets everything up (scripts/setup.sh) and runs the main job: analyse a video (default:
# ../shared/data/videos/street_1080p.mp4) or a photo, writing the annotated result and per-face JSON Lines under
# out/. All arguments go to the `faceanalyze` command (see `target/release/faceanalyze --help`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
exec "$repo/target/release/faceanalyze" "$@"
