"""Storage: one ``Database`` interface over SQLite and PostgreSQL, migrations, repositories.

SQL is written once, in PostgreSQL's ``$1`` placeholder style; the SQLite backend rewrites
placeholders to ``?1``. Timestamps, booleans and JSON cross the boundary as Python
``datetime``, ``bool`` and ``dict``/``list`` on both backends. Nothing above the repositories
knows which database it talks to.
"""
