"""TrafficGen-style models (Feng et al., ICRA 2023) in pure PyTorch: a shared scene encoder, vehicle
placement on the lane graph, and kinematically bounded multi-modal trajectories.

Importing this package imports torch; ``import traffic`` alone does not.
"""

from traffic.model.encoder import PAPER, PRESETS, TINY, ModelConfig, SceneEncoder
from traffic.model.placement import ATTRIBUTES, PlacementModel, obb_overlap
from traffic.model.trajectory import TrajectoryModel, integrate_unicycle

__all__ = ["ModelConfig", "TINY", "PAPER", "PRESETS", "SceneEncoder", "PlacementModel", "TrajectoryModel",
           "obb_overlap", "integrate_unicycle", "ATTRIBUTES"]
