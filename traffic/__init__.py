"""TrafficGen-style vehicle placement and trajectory generation (imports sim_bridge.scenario only)."""
