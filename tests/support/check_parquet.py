"""Read every Parquet file under a directory with pyarrow and with DuckDB.

Prints one JSON document: for each file, the row count and column types each reader sees.
The Rust test (tests/readers.rs) compares them with what streamseal wrote. Any read error
propagates and fails the test.
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.parquet as pq

root = pathlib.Path(sys.argv[1])
out = []
con = duckdb.connect()
for path in sorted(root.rglob("*.parquet")):
    table = pq.read_table(path)
    meta = pq.ParquetFile(path).metadata
    rel = con.execute("SELECT * FROM read_parquet(?, hive_partitioning = false)", [str(path)])
    duck_columns = [d[0] for d in rel.description]
    duck_types = [str(d[1]) for d in rel.description]
    duck_rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()[0]
    physical = []
    for i in range(meta.num_columns):
        col = meta.schema.column(i)
        physical.append({"name": col.name, "physical": col.physical_type, "logical": str(col.logical_type)})
    out.append({
        "path": str(path.relative_to(root)),
        "pyarrow_rows": table.num_rows,
        "duckdb_rows": duck_rows,
        "arrow_types": {f.name: str(f.type) for f in table.schema},
        "duckdb_columns": duck_columns,
        "duckdb_types": duck_types,
        "parquet": physical,
        "compression": meta.row_group(0).column(0).compression,
        "compressions": {
            meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
            for i in range(meta.num_columns)
        },
        "statistics": all(meta.row_group(0).column(i).is_stats_set for i in range(meta.num_columns)),
    })
print(json.dumps(out))
