"""The async edges: thin uvloop transports around the sans-I/O core."""
