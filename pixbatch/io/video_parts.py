"""The finished segments of a video's outputs, kept beside the destination until the video is whole: what a
killed or interrupted run resumes from.

Each output of a video is encoded in segments of ``--segment-frames`` input frames, each segment a file of
its own (so it starts on a keyframe). A segment's files are renamed into ``.NAME.pixbatch-parts/`` (beside
the destination ``NAME``) once complete, and the manifest there is rewritten atomically to list it, with
the frames and timestamps it covers. The folder is not a temporary file: the stale-temp cleanup never
removes it. A run that finds it with the same source (size and modification time) and the same settings
resumes after its last segment; otherwise it starts again (and clears it). The folder is removed when the
video is committed, or when it fails."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pixbatch.io.atomic import write_bytes

MANIFEST = "manifest.json"


class Parts:
    def __init__(self, dst: Path, source: Path, settings: dict) -> None:
        self.folder = dst.parent / f".{dst.name}.pixbatch-parts"
        st = os.stat(source)
        self.key = {"source": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}, "settings": settings}
        self.segments: list[dict] = []

    def resume(self) -> int:
        """Load the segments an earlier run finished for the same source and settings; the frames they
        cover (0 when there is nothing to resume, and then anything left there is removed)."""
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key or not all(
                (self.folder / f).is_file() for s in manifest.get("segments", []) for f in s["files"].values()):
            self.remove()
            return 0
        self.segments = manifest["segments"]
        listed = {f for s in self.segments for f in s["files"].values()} | {MANIFEST}
        for path in self.folder.iterdir():  # a segment the killed run had not finished
            if path.name not in listed:
                path.unlink(missing_ok=True)
        return self.frames

    @property
    def frames(self) -> int:
        return sum(s["frames"] for s in self.segments)

    def path(self, name: str, index: int, suffix: str) -> Path:
        """Where segment ``index`` of output ``name`` is kept once complete."""
        return self.folder / f"{name}.{index:05d}{suffix}"

    def add(self, files: dict[str, Path], frames: int, first_pts: int, last_pts: int) -> None:
        """Record a complete segment whose files are already in the folder."""
        self.segments.append({"frames": frames, "first_pts": first_pts, "last_pts": last_pts,
                              "files": {name: p.name for name, p in files.items()}})
        data = json.dumps({"key": self.key, "segments": self.segments}, indent=1).encode()
        write_bytes(data, self.folder / MANIFEST, overwrite=True)

    def files(self, name: str) -> list[Path]:
        return [self.folder / s["files"][name] for s in self.segments if name in s["files"]]

    @property
    def last_pts(self) -> int | None:
        return self.segments[-1]["last_pts"] if self.segments else None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.segments = []
