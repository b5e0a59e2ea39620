"""Make ``pytest --protection=...`` work from a checkout that is not pip-installed.

When the package is installed, its ``pytest11`` entry point already registers the plugin and
loading it here too would register it twice; so only load it when no entry point provides it.
"""

from importlib.metadata import entry_points

if not any(ep.value == "audit.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["audit.plugin"]
