"""Postgres access: connection pool, versioned migrations, repositories."""
