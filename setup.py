"""Only what pyproject.toml cannot say: the package list is every `portraitforge*` package found on disk plus
`portraitforge.presets`, whose folder is configs/ at the repo root (mapped in pyproject's package-dir)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["portraitforge", "portraitforge.*"]), "portraitforge.presets"])
