"""pgvector in SQLAlchemy's terms: its column types known to reflection, its binary wire form
(`vector_send`), and a type by name for a CAST."""

from __future__ import annotations

import numpy as np

PGVECTOR_TYPES = ("vector", "halfvec", "sparsevec")


def from_vector_send(value) -> np.ndarray:
    """pgvector's binary form: int16 dimension, int16 unused, then big-endian float32 values."""
    return np.frombuffer(value, dtype=">f4", offset=4).astype(np.float32)


def register_pgvector_types() -> None:
    """Let SQLAlchemy's reflection know pgvector's column types (else it warns "Did not recognize type
    'vector'" for every table it reads). Values are read in pgvector's binary form, not through them."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql.base import ischema_names

    class PgVector(sa.types.UserDefinedType):
        cache_ok = True
        type_name = "vector"

        def __init__(self, dimension: int | str | None = None) -> None:   # reflection passes '384'
            self.dimension = int(dimension) if dimension is not None else None

        def get_col_spec(self, **kw) -> str:
            return self.type_name if self.dimension is None else f"{self.type_name}({self.dimension})"

    for name in PGVECTOR_TYPES:
        ischema_names.setdefault(name, type(f"PgVector_{name}", (PgVector,), {"type_name": name, "cache_ok": True}))


def pg_type(schema: str, name: str, conn):
    """A PostgreSQL type by schema and name, for a CAST."""
    import sqlalchemy as sa

    class NamedType(sa.types.UserDefinedType):
        cache_ok = True

        def __init__(self, spec: str) -> None:
            self.spec = spec

        def get_col_spec(self, **kw) -> str:
            return self.spec

    preparer = conn.dialect.identifier_preparer
    return NamedType(f"{preparer.quote_schema(schema)}.{preparer.quote(name)}")
