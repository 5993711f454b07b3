"""Run SQL statements in DuckDB and print the last one's rows as JSON (a list of lists).

Usage: duckdb_query.py FILE  (statements separated by a line holding only ';;')
Any error propagates and fails the calling test.
"""
import json
import sys

import duckdb

statements = [s for s in open(sys.argv[1]).read().split("\n;;\n") if s.strip()]
con = duckdb.connect()
rows = None
for s in statements:
    rows = con.execute(s).fetchall()
print(json.dumps([[None if v is None else str(v) for v in r] for r in (rows or [])]))
