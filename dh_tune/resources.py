"""The packaged pipelines and search spaces, found from any working directory.

A checkout keeps them at the repository root and an install carries them as dh_tune.pipelines and
dh_tune.search_spaces, so a command run from any folder reads the same defaults.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

Kind = Literal["pipelines", "search_spaces"]

DEFAULT_PIPELINE = "quickstart.yaml"
DEFAULT_SEARCH_SPACE = "gate_loss.yaml"
_CHECKOUT = Path(__file__).resolve().parents[1]


def packaged_file(kind: Kind, name: str) -> Path | None:
    """The packaged file `name` of `kind` (".yaml" may be left off), or None when there is none.

    Installed packages are read through importlib.resources; a plain checkout from the repository root.
    """
    names = [name] if name.endswith((".yaml", ".yml")) else [name, f"{name}.yaml"]
    try:
        folders: list[object] = [resources.files(f"dh_tune.{kind}")]
    except ModuleNotFoundError:
        folders = []
    folders.append(_CHECKOUT / kind)
    for folder in folders:
        for candidate in names:
            found = folder.joinpath(candidate)  # type: ignore[attr-defined]
            if isinstance(found, Path) and found.is_file():
                return found.resolve()
    return None


def find_file(path: str | Path, kind: Kind, base: str | Path | None = None) -> Path:
    """A user's path as given when it exists, else relative to `base`, else the packaged file by that name.

    Only a bare name or `<kind>/<name>` falls back to the packaged file; anything else that does not exist
    is returned as given, so the error that follows names what the user wrote.
    """
    given = Path(path).expanduser()
    if given.exists():
        return given
    if base is not None and not given.is_absolute() and (Path(base) / given).exists():
        return (Path(base) / given).resolve()
    if not given.is_absolute() and given.parent in (Path("."), Path(kind)):
        packaged = packaged_file(kind, given.name)
        if packaged is not None:
            return packaged
    return given


def default_pipeline() -> Path | None:
    """The pipeline the commands use without --pipeline: ./pipelines/quickstart.yaml, else the packaged one."""
    found = find_file(Path("pipelines") / DEFAULT_PIPELINE, "pipelines")
    return found if found.is_file() else None


def default_search_space() -> str:
    """The search space a pipeline uses unless it names its own (./search_spaces/gate_loss.yaml, else packaged)."""
    found = find_file(Path("search_spaces") / DEFAULT_SEARCH_SPACE, "search_spaces")
    return str(found.resolve() if found.exists() else found)
