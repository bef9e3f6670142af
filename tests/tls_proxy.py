"""A front for a Docker engine's socket. With CERT_DIR, a TLS front as `dockerd --tlsverify`
would be: it verifies the client's certificate against a CA and forwards the bytes to the
engine's unix socket; with ``-``, plain TCP. With ARM_FILE and BUDGET, it drops a connection
once more than BUDGET bytes went up it while ARM_FILE exists (a connection lost mid-transfer).
The second engine's fixtures run it inside the engine's network namespace (tests/second_engine.py),
so the test reaches that engine on its own address, with certificates it made.

Usage: python tests/tls_proxy.py HOST PORT UNIX_SOCKET CERT_DIR|- [ARM_FILE BUDGET]
       (CERT_DIR holds ca.pem, server-cert.pem, server-key.pem)
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket, cut=None) -> None:
    went = 0
    try:
        while data := src.recv(1 << 16):
            went += len(data)
            if cut is not None and cut(went):
                break  # dropped: both ends see the connection end mid-request
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(client: socket.socket, context: ssl.SSLContext | None, target: str, cut) -> None:
    if context is not None:
        try:
            client = context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()  # a client without a certificate the CA signed: refused
            return
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
    _pump(client, upstream, cut)


def main(host: str, port: str, target: str, certs: str, arm: str = "", budget: str = "0") -> None:
    context = None
    if certs != "-":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{certs}/server-cert.pem", f"{certs}/server-key.pem")
        context.load_verify_locations(f"{certs}/ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED

    def cut(went: int) -> bool:
        return bool(arm) and went > int(budget) and os.path.exists(arm)

    listener = socket.create_server((host, int(port)))
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, context, target, cut), daemon=True).start()


if __name__ == "__main__":
    main(*sys.argv[1:7])
