"""Ships three top-level folders as one `bridge` namespace.

`converters` and `validators` are names other PyPI packages own (there is a `validators` package),
so they install as `bridge.converters` and `bridge.validators`; the package-dir mapping keeps the
source tree flat and works for editable installs too. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {"bridge": "bridge", "bridge.converters": "converters", "bridge.validators": "validators"}

packages = [
    name
    for package, folder in FOLDERS.items()
    for name in [package, *(f"{package}.{sub}" for sub in find_packages(folder))]
]

setup(packages=packages, package_dir=FOLDERS)
