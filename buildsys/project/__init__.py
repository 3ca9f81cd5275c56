"""The build model: what a project declares (Buildfile.toml) and what a user configures."""
