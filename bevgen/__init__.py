"""bevgen: autonomous-driving toolkit around the bird's-eye view."""
