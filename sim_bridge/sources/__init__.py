"""Converters from driving datasets into ScenarioNet scenario dicts."""
