"""Every preset in configs/ loads and validates; bad presets give one-line parameter errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from portraitforge.config import CONFIGS_DIR, RefineConfig
from portraitforge.errors import BadInputError, ParameterError

PRESETS = sorted(
    p.name.removesuffix(".yaml")
    for p in CONFIGS_DIR.iterdir()
    if p.name.endswith(".yaml") and p.name != "batch_example.yaml"
)


def test_presets_exist() -> None:
    assert {"default", "natural", "hires", "inswapper", "group"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_by_name(name: str) -> None:
    cfg = RefineConfig.from_yaml(name)
    assert isinstance(cfg, RefineConfig)


def test_default_preset_equals_the_built_in_defaults() -> None:
    assert RefineConfig.from_yaml("default") == RefineConfig()


def test_overrides_win_over_the_preset() -> None:
    assert RefineConfig.from_yaml("natural", strength=0.3).strength == 0.3


def test_bad_presets_fail_in_one_line(tmp_path: Path) -> None:
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("strength: 2\n")
    with pytest.raises(ParameterError, match="strength") as info:
        RefineConfig.from_yaml(bad_value)
    assert "\n" not in info.value.message
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("strenght: 0.5\n")
    with pytest.raises(ParameterError, match="strenght"):
        RefineConfig.from_yaml(unknown)
    broken = tmp_path / "broken.yaml"
    broken.write_text("strength: [0.5\n")
    with pytest.raises(BadInputError, match="invalid YAML"):
        RefineConfig.from_yaml(broken)
    with pytest.raises(BadInputError, match="not found"):
        RefineConfig.from_yaml(tmp_path / "missing.yaml")
