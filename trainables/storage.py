"""What a trial keeps in Ray's storage besides Tune's own files: its per-sentence hits (inside the last
checkpoint), a divergence marker, and the pruning of its older checkpoints.

Ray's storage is a local path or a bucket (s3://...), seen through the pyarrow filesystem of the trial's
`ray.train` StorageContext, so every node and every retry reads the same files. No torch here: the driver's
benchmark trials use this module too.
"""

from __future__ import annotations

import json
import os

HITS_FILE = "hits.json"
# a checkpoint's trainable parameters (study.analysis.exporting reads it)
WEIGHTS_FILE = "trainable_weights.safetensors"


def read_hits(checkpoint) -> dict:
    """What a trial's last evaluation put into its checkpoint: {"hits": per-sentence Tatoeba hits, {lang: {figure:
    [0/1, ...]}}, "pairs": per-pair cross-lingual measurements
    (`study.evaluation.crosslingual.evaluate_pairs`) or None}."""
    with checkpoint.as_directory() as directory:
        with open(os.path.join(directory, HITS_FILE)) as f:
            return json.load(f)


class DivergenceMarker:
    """A file `DIVERGED` (holding the reason) in the trial's folder of Ray's storage (`ray.train`'s
    StorageContext: a local path or a bucket), so every node and every retry sees it."""

    def __init__(self, storage):
        self.filesystem = storage.storage_filesystem
        self.path = f"{storage.trial_fs_path}/DIVERGED"

    def read(self) -> str | None:
        import pyarrow.fs

        if self.filesystem.get_file_info(self.path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.filesystem.open_input_stream(self.path) as f:
            return f.read().decode()

    def write(self, reason: str) -> None:
        self.filesystem.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(self.path) as f:
            f.write(reason.encode())


class CheckpointRetention:
    """Keeps the trial's newest `keep` checkpoints in Ray's storage and deletes the older ones.

    Tune's own retention (`CheckpointConfig(num_to_keep)`) forces a full experiment snapshot (every trial's
    state and the searcher: work that grows with the number of trials) at each checkpoint, to stay consistent
    with what it deleted. The study leaves Tune's retention off, so snapshots follow Tune's adaptive period,
    and prunes here instead. Two are kept: the newest, and the one before it, to which a snapshot taken before
    the newest arrived may still point. `make_room()` runs before each report, not after: a report that ends
    the trial (its last epoch, or ASHA's stop) does not return."""

    def __init__(self, storage, keep: int = 2):
        self.filesystem, self.folder, self.keep = storage.storage_filesystem, storage.trial_fs_path, keep

    def checkpoints(self) -> list[str]:
        """The trial's checkpoint folders, oldest first (Ray numbers them checkpoint_000000, ...)."""
        import pyarrow.fs

        entries = self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.folder, allow_not_found=True))
        return sorted(e.path for e in entries
                      if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith("checkpoint_"))

    def make_room(self) -> None:
        """Delete all but the newest `keep - 1` checkpoints, before the next one is reported."""
        existing = self.checkpoints()
        for path in existing[: max(0, len(existing) - (self.keep - 1))]:
            self.filesystem.delete_dir(path)
