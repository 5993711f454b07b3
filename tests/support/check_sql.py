"""Parses every statement `streamseal athena-ddl` emits with sqlglot's Athena (Trino/Hive)
dialect, as Athena would: a statement sqlglot can only keep as an opaque command, or cannot
parse at all, fails; so does a view whose columns are not uniquely named (Athena refuses such
a view; some engines silently return nothing).

Usage: check_sql.py < statements.json   (a JSON list of statements)
Prints one line per statement; exits 1 if any fails.
"""

import json
import sys

import sqlglot
from sqlglot import exp


def problems(statement):
    try:
        tree = sqlglot.parse_one(
            statement.strip().rstrip(";"), read="athena", error_level=sqlglot.ErrorLevel.RAISE
        )
    except sqlglot.errors.SqlglotError as e:
        return [f"does not parse: {e}"]
    if isinstance(tree, exp.Command):
        return ["parsed only as an opaque command"]
    out = []
    if isinstance(tree, exp.Create) and (tree.args.get("kind") or "").upper() == "VIEW":
        select = tree.expression
        names = [p.alias_or_name.lower() for p in select.expressions]
        if "*" in names:
            out.append("the view selects *: its columns depend on the tables'")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            out.append(f"the view has duplicate columns {dupes}")
    return out


def main():
    statements = json.load(sys.stdin)
    failed = 0
    for s in statements:
        found = problems(s)
        head = " ".join(s.split())[:80]
        if found:
            failed += 1
            print(f"FAIL {head}: {'; '.join(found)}")
        else:
            print(f"ok   {head}")
    print(f"{len(statements)} statements, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
