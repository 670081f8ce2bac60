"""aiocoap's OSCORE implementation on one side of an exchange with Tern's, over stdin/stdout.

    python aiocoap_bridge.py client FOLDER   # aiocoap protects a request, unprotects the reply
    python aiocoap_bridge.py server FOLDER   # aiocoap unprotects a request, protects the reply

Each message is one line of hex (the CoAP-over-UDP encoding). The client writes a protected
GET /oscore/hello with payload "ping", reads the protected response and prints
"response CODE PAYLOAD". The server reads a protected request, prints "request CODE PATH
PAYLOAD", and answers 2.05 with payload "pong:" + the request payload, protected.
Nothing goes over the network.
"""

import sys

from aiocoap import ACK, CON, CONTENT, GET, Message
from aiocoap.message import Direction
from aiocoap.oscore import FilesystemSecurityContext


def read_message():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("bridge: no message on stdin")
    message = Message.decode(bytes.fromhex(line.strip()))
    message.direction = Direction.INCOMING
    return message


def write_message(message):
    print(message.encode().hex(), flush=True)


def main():
    mode, folder = sys.argv[1], sys.argv[2]
    context = FilesystemSecurityContext(folder)
    if mode == "client":
        request = Message(code=GET, uri_path=["oscore", "hello"], payload=b"ping")
        request.direction = Direction.OUTGOING
        protected, request_id = context.protect(request)
        # The header is the transport's business; sent as a CON.
        protected.mid, protected.token, protected.mtype = 0x1234, b"\x01\x02", CON
        write_message(protected)
        response, _ = context.unprotect(read_message(), request_id)
        print(f"response {response.code.dotted} {response.payload.decode()}", flush=True)
    elif mode == "server":
        outer = read_message()
        request, request_id = context.unprotect(outer)
        path = "/".join(request.opt.uri_path)
        print(f"request {request.code.dotted} {path} {request.payload.decode()}", flush=True)
        response = Message(code=CONTENT, payload=b"pong:" + request.payload)
        response.direction = Direction.OUTGOING
        protected, _ = context.protect(response, request_id)
        # The header is the transport's business; answered as a piggybacked ACK.
        protected.mid, protected.token, protected.mtype = outer.mid, outer.token, ACK
        write_message(protected)
    else:
        raise SystemExit(f"bridge: unknown mode {mode}")


if __name__ == "__main__":
    main()
