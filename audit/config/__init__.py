"""Configuration: command-line options, tiers and their settings, the scenario schema, and
the start-up checks that turn a bad option into a usage error."""
