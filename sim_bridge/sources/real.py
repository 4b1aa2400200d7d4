"""Where a source checkout finds the real scenarios: ``../shared/data/real-scenarios`` beside the repository.

They are nuScenes and Waymo scenes already converted to the scenario contract (one pickle each, with the
``dataset_summary.pkl`` and ``dataset_mapping.pkl`` of ScenarioNet). Tests skip without them, benchmarks and
``make checkpoints`` say so and go on; nothing in the package copies them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REAL_DIR"]

REAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-scenarios"
"""The real scenarios beside a source checkout (absent in a wheel install and on machines without ../shared)."""
