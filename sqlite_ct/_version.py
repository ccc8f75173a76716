"""The package version; the C extension's sqlite_ct_version() must return the same string."""

__version__ = "0.1.0"
