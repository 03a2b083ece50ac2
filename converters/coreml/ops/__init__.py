"""Op converters by family; importing a module registers its converters (see ../registry.py)."""
