"""bevgen simulation bridge: ScenarioNet scenarios, sources and simulator adapters."""
