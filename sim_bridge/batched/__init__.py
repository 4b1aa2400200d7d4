"""A batched, tensor-native driving simulator over scenario directories (pure PyTorch, cpu or cuda).

    state.py     BatchedScenarios (a scenario set as padded tensors, loaded once), SimState
    dynamics.py  bicycle for the ego (fitted to MetaDrive's DefaultVehicle), log replay
    events.py    SAT collisions, road-edge contact through a per-map grid, route progress
    env.py       functional reset / step / observe and an SB3 VecEnv with auto-reset
    idm.py       IDM traffic: logged vehicles that yield to the ego
    gym_vector.py  the same as a Gymnasium VectorEnv

See docs/batched_sim.md for the agreement with MetaDrive and the throughput figures.
"""
