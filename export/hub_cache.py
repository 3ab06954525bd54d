"""Hub ids resolved offline: the local Hugging Face cache's snapshot of a repository, or the caller's error."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def cached_snapshot(repo_id: str, missing: Callable[[], Exception]) -> Path:
    """The local cache's snapshot folder of `repo_id` (nothing is downloaded: the machine may be offline);
    raises missing(), chained to huggingface_hub's error, when the repository is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as err:  # offline and not cached: huggingface_hub raises several types
        raise missing() from err
