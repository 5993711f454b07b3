"""Start moto's S3/DynamoDB emulator on 127.0.0.1 for one test process.

Prints the port it bound (an ephemeral one, so parallel test binaries never collide), then
serves until its stdin closes, which happens when the test process that started it exits,
even if that process is killed. No server outlives its tests.
"""
import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
