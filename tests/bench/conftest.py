"""The benchmarks' configs: their roots in `benchmarks/conf/`, composed with the project's `conf/` groups."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig

from benchmarks import CONF_DIR
from tests.conftest import compose_cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(config_name: str = "bench", overrides=(), fake: bool = True) -> DictConfig:
        return compose_cfg(config_name, tmp_path, overrides, fake, config_dir=CONF_DIR)

    return make
