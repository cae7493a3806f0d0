"""Shared fixtures: a session-wide folder of small synthetic videos, generated once on demand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from maxsim.synthetic import cut_times, write_video


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """``make_video(name, scenes, fps=10, size=(96, 64))`` -> path of an MP4 written once per session."""
    root = tmp_path_factory.mktemp("videos")
    made: dict[str, Path] = {}

    def make(name: str, scenes, fps: float = 10.0, size: tuple[int, int] = (96, 64), **kw) -> Path:
        if name not in made:
            made[name] = write_video(root / name, scenes, fps=fps, size=size, **kw)
        return made[name]

    return make


@dataclass(frozen=True)
class SceneVideo:
    path: Path
    scenes: list
    cuts: list[float]  # true cut times (s)
    duration: float
    fps: float


@pytest.fixture(scope="session")
def scenes_video(make_video) -> SceneVideo:
    """Five colour scenes, cuts at 2.0, 3.5, 6.5 and 7.7 s, 10 s at 10 fps, 96x64."""
    scenes = [(2.0, "red"), (1.5, "blue"), (3.0, "green"), (1.2, "yellow"), (2.3, "white")]
    path = make_video("scenes.mp4", scenes)
    return SceneVideo(path, scenes, cut_times(scenes, 10.0), 10.0, 10.0)
