"""RL in MetaDrive: PPO training (stable-baselines3), evaluation, the TrafficGen experiment."""
