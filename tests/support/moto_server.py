"""Start moto's S3/DynamoDB emulator on 127.0.0.1 for one test process.

Prints the port it bound (an ephemeral one, so parallel test binaries never collide), then
serves until its stdin closes, which happens when the test process that started it exits,
even if that process is killed. No server outlives its tests.

A *gate* in front of the emulator lets a test stop a client between two of its writes, to
kill it there (tests/completeness.rs): `POST /__gate/arm?bucket=B&allow=N` lets the next N
writes (PUT, POST, DELETE) to bucket B through and holds every later one; `GET /__gate`
answers {"writes": n, "held": n} for the armed bucket; `POST /__gate/reset` fails every held
write (it never reaches the emulator) and disarms. Unarmed, the gate only forwards.
"""
import json
import sys
import threading
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

moto = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
state = {"bucket": None, "allow": None, "writes": 0, "held": 0, "release": threading.Event()}


def respond(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def gate(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "")
    if path.startswith("/__gate"):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        with lock:
            if path == "/__gate/arm":
                state["release"].set()
                state.update(
                    bucket=query["bucket"][0],
                    allow=int(query["allow"][0]),
                    writes=0,
                    held=0,
                    release=threading.Event(),
                )
            elif path == "/__gate/reset":
                state["release"].set()
                state.update(bucket=None, allow=None, held=0)
            return respond(start_response, "200 OK", {"writes": state["writes"], "held": state["held"]})
    hold = None
    if method in ("PUT", "POST", "DELETE"):
        with lock:
            bucket = state["bucket"]
            if bucket is not None and (path == f"/{bucket}" or path.startswith(f"/{bucket}/")):
                if state["writes"] >= state["allow"]:
                    state["held"] += 1
                    hold = state["release"]
                else:
                    state["writes"] += 1
    if hold is not None:
        hold.wait()
        return respond(start_response, "503 Service Unavailable", {"error": "held by the test gate"})
    return moto(environ, start_response)


server = make_server("127.0.0.1", 0, gate, True, request_handler=MotoRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
