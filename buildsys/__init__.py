"""buildsys: a content-addressed, reproducible build system for 3D assets."""

__version__ = "0.1.0"
