"""``tomllib`` (Python 3.11 and later), or its backport ``tomli`` on Python 3.10: the one place
that chooses (pyproject.toml requires ``tomli`` where ``tomllib`` is missing)."""
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
