"""Synthetic multi-camera renderer (pybullet TinyRenderer) and paired image/BEV datasets.

Heavy dependencies (pybullet, torch, shapely, nuscenes-devkit) are imported inside the functions that
need them; importing this package is cheap.
"""
