#!/usr/bin/env python3
"""Asks a Kafka broker for cluster metadata and prints its brokers; exit 0 only on a real answer.

scripts/services.sh uses it to know the broker is ready: a Metadata request (API key 3,
version 4, not flexible) over the plain Kafka protocol, so no client library is needed.

usage: kafka_probe.py HOST:PORT [TIMEOUT_SECONDS]
"""
import socket
import struct
import sys


def metadata_request(correlation_id: int) -> bytes:
    client_id = b"tally-services-probe"
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body = struct.pack(">i?", -1, False)  # all topics, no auto-creation
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def parse_brokers(body: bytes) -> list:
    # correlation_id, throttle_time_ms, then the brokers array.
    offset = 8
    (count,) = struct.unpack_from(">i", body, offset)
    offset += 4
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", body, offset)
        offset += 6
        host = body[offset:offset + host_len].decode()
        offset += host_len
        (port, rack_len) = struct.unpack_from(">ih", body, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, host, port))
    return brokers


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(metadata_request(1))
            (size,) = struct.unpack(">i", read_exact(sock, 4))
            brokers = parse_brokers(read_exact(sock, size))
    except (OSError, ConnectionError, struct.error) as err:
        print(f"no metadata from {sys.argv[1]}: {err}", file=sys.stderr)
        return 1
    if not brokers:
        print(f"{sys.argv[1]} answered with no brokers", file=sys.stderr)
        return 1
    print(" ".join(f"broker {n} at {h}:{p}" for n, h, p in brokers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
