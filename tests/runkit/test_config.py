"""Strict configs: unknown keys, wrong types and bad values are errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from bevgen.layout import BevConfig
from runkit.config import ConfigError, load_config, save_config, to_dict
from sim_bridge.sources.procedural import ProceduralConfig


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("num_scenarios: 3\ntraffic_density: 0\n")
    cfg = load_config(ProceduralConfig, p, ["workers=1", "start_seed=7"])
    assert (cfg.num_scenarios, cfg.traffic_density, cfg.workers, cfg.start_seed) == (3, 0.0, 1, 7)
    assert isinstance(cfg.traffic_density, float)


def test_misspelled_key_names_file_key_and_suggestion(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("num_scenario: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'num_scenario' \(did you mean 'num_scenarios'\?\)"):
        load_config(ProceduralConfig, p)


def test_misspelled_override():
    with pytest.raises(ConfigError, match=r"unknown key 'resolution' \(did you mean 'resolution_m'\?\)"):
        load_config(BevConfig, None, ["resolution=0.25"])


def test_wrong_type():
    with pytest.raises(ConfigError, match=r"config\.workers: expected int, got str 'two'"):
        load_config(ProceduralConfig, None, ["workers=two"])


def test_cross_field_check_says_how_to_fix():
    with pytest.raises(ConfigError, match=r"unknown BEV channel\(s\) \['lanes'\]"):
        load_config(BevConfig, None, ["channels=[lanes, vehicle]"])
    with pytest.raises(ConfigError, match="whole number of resolution_m pixels"):
        load_config(BevConfig, None, ["resolution_m=0.3"])


def test_shipped_configs_load_and_round_trip(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    assert load_config(ProceduralConfig, root / "scenarios" / "procedural.yaml").num_scenarios == 8
    assert load_config(ProceduralConfig, root / "scenarios" / "tiny.yaml").steps == 80
    bev = load_config(BevConfig, root / "bev" / "default.yaml")
    assert bev.size == 200
    assert load_config(BevConfig, root / "bev" / "hires.yaml").size == 400
    out = save_config(bev, tmp_path / "resolved.yaml")
    assert load_config(BevConfig, out) == bev
    assert yaml.safe_load(out.read_text()) == to_dict(bev)


def test_every_shipped_config_loads_strictly():
    """configs/<area>/*.yaml each map onto one dataclass; a stale key anywhere fails here."""
    from pathlib import Path

    from bevgen.render.scene import SynthConfig
    from bevgen.scene3d.train import Scene3DTrainConfig
    from bevgen.views.config import ViewsConfig
    from sim_bridge.rl.train import PPOTrainConfig
    from traffic.train import TrafficTrainConfig

    areas = {"scenarios": ProceduralConfig, "bev": BevConfig, "traffic": TrafficTrainConfig, "sim": PPOTrainConfig,
             "render": SynthConfig, "views": ViewsConfig, "scene3d": Scene3DTrainConfig}
    root = Path(__file__).resolve().parents[2] / "configs"
    seen = 0
    for area, cls in areas.items():
        for path in sorted((root / area).glob("*.yaml")):
            load_config(cls, path)
            seen += 1
    assert seen >= 13 and {p.name for p in root.iterdir()} <= set(areas)
