"""Presets for `RefineConfig.from_yaml(name)`: this folder is installed as the package `portraitforge.presets`
(see pyproject.toml), so its YAML files are package data found through importlib.resources."""
