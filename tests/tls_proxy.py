"""A TLS front for a Docker engine's socket, as `dockerd --tlsverify` would be: it verifies the
client's certificate against a CA and forwards the bytes to the engine's unix socket. The
second engine's fixture runs it inside the engine's network namespace (tests/second_engine.py),
so the test reaches that engine as ``tcp://ADDRESS:2376`` with TLS, with certificates it made.

Usage: python tests/tls_proxy.py HOST PORT UNIX_SOCKET CERT_DIR   (ca.pem, server-cert.pem, server-key.pem)
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(client: socket.socket, context: ssl.SSLContext, target: str) -> None:
    try:
        tls = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError):
        client.close()  # a client without a certificate the CA signed: refused
        return
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
    _pump(tls, upstream)


def main(host: str, port: str, target: str, certs: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{certs}/server-cert.pem", f"{certs}/server-key.pem")
    context.load_verify_locations(f"{certs}/ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server((host, int(port)))
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, context, target), daemon=True).start()


if __name__ == "__main__":
    main(*sys.argv[1:5])
