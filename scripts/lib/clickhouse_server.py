#!/usr/bin/env python3
"""Runs a real ClickHouse server from chdb's libchdb.so, on loopback, until killed.

libchdb.so (npm package @chdb/lib-linux-x64-gnu) is the whole ClickHouse engine. Its
`chdb_query_cmdline(argc, argv)` takes clickhouse-local arguments; with listen ports set and
`SYSTEM START LISTEN`, clickhouse-local serves ClickHouse's own HTTP and native protocols. The
final query never ends, so the process keeps serving until scripts/services.sh stops it.

usage: clickhouse_server.py LIBCHDB DATA_DIR HTTP_PORT TCP_PORT
"""
import ctypes
import sys


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    lib_path, data_dir, http_port, tcp_port = sys.argv[1:]
    lib = ctypes.CDLL(lib_path)
    lib.chdb_query_cmdline.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.chdb_query_cmdline.restype = ctypes.c_void_p
    # argv[0] must look like a program name, or clickhouse-local ignores --path.
    args = [
        "clickhouse",
        f"--path={data_dir}",
        "--listen_host=127.0.0.1",
        f"--http_port={http_port}",
        f"--tcp_port={tcp_port}",
        "--function_sleep_max_microseconds_per_block=0",
        "--query",
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT sleepEachRow(1) FROM numbers(1000000000) "
        "SETTINGS max_block_size=1 FORMAT Null",
    ]
    argv = (ctypes.c_char_p * len(args))(*[a.encode() for a in args])
    print(f"clickhouse (libchdb) serving http://127.0.0.1:{http_port} tcp:{tcp_port} "
          f"data={data_dir}", flush=True)
    lib.chdb_query_cmdline(len(args), argv)
    # Only reached if the endless query stopped: that is a failure of the server.
    print("clickhouse (libchdb) stopped serving", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
