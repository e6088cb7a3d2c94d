"""Shared fixtures: tiny random-weight models built in code, small images, and one loopback-only Ray per session."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Ray must send nothing beyond loopback. These are set before any test can import ray (conftest is imported
# first): usage stats off, and HOME holding ray_bootstrap_config.yaml so that Ray's usage module does not
# probe the cloud metadata address at start-up.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
_RAY_HOME = tempfile.mkdtemp(prefix="rayhome-")
Path(_RAY_HOME, "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
os.environ["HOME"] = _RAY_HOME
atexit.register(shutil.rmtree, _RAY_HOME, True)

TINY_CONFIG = {
    "categories": ["hate", "offensive"],
    "text_encoder": {"name": "tiny-random-bert", "pooling": "mean", "max_length": 16},
    "image_encoder": {"name": "tiny-random-cnn"},
    "fusion": "gated",
    "fusion_dim": 16,
    "dropout": 0.0,
}


def png_bytes(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    """Encoded bytes of a solid-colour image."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def tiny_config():
    from moderation.model import ModelConfig
    return ModelConfig.from_dict({k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()})


@pytest.fixture()
def tiny_model(tiny_config):
    import torch
    from moderation.model import ModerationModel
    torch.manual_seed(0)
    return ModerationModel(tiny_config).eval()


@pytest.fixture()
def tiny_model_dir(tiny_model, tmp_path) -> Path:
    """A saved model directory of the tiny model (marked trained so results are not flagged as untrained)."""
    from moderation.model_dir import save_model
    path = tmp_path / "tiny-model"
    save_model(tiny_model, path, trained=True, name="tiny")
    return path


@pytest.fixture()
def tiny_scorer(tiny_model_dir):
    from moderation.scorer import Scorer
    scorer = Scorer.from_dir(tiny_model_dir, batch_size=4, num_workers=2)
    yield scorer
    scorer.close()


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    """A folder with a good PNG, a good JPEG, a truncated JPEG and a non-image file."""
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "red.png").write_bytes(png_bytes())
    jpeg = png_bytes((64, 48), (10, 120, 240), "JPEG")
    (d / "blue.jpg").write_bytes(jpeg)
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="session")
def ray_local() -> Iterator[object]:
    """One local Ray for the whole test session: loopback only, no dashboard, usage stats off.

    The same start-up as `moderation serve` (serving.local_ray), so what the tests check is what runs.
    """
    pytest.importorskip("ray")
    from serving.local_ray import local_ray
    with local_ray(num_cpus=2) as ray:
        yield ray
