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


def not_cached(what: str, repo_id: str, fix: str) -> str:
    """The one-line refusal for a hub id missing from the cache: what was looked for, where, and `fix`."""
    from huggingface_hub import constants

    return (f"{what} {repo_id} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}; nothing is "
            f"downloaded, the machine may be offline); {fix}")


def model_folder(source: str | Path, what: str, fix: str, error: Callable[[str], Exception]) -> Path:
    """A Hugging Face model folder: `source` itself when it is a folder with config.json, else the local cache's
    snapshot of the hub id owner/name. Anything else raises error(message), the message naming `what` (e.g.
    "CLIP model") and ending with `fix`."""
    path, text = Path(source).expanduser(), str(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise error(f"{what} folder {path} has no config.json; {fix}")
        return path
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")) or " " in text:
        raise error(f"{what} {text!r} not found: not a folder, nor a hub id (owner/name); {fix}")
    return cached_snapshot(text, lambda: error(not_cached(what, text, fix)))
