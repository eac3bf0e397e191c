"""Kernel-side peers for the intercept end-to-end tests (run inside the test's namespace).

    kernel_peer.py echo ADDR PORT         TCP echo: echoes until EOF, then closes (half-close aware)
    kernel_peer.py udpecho ADDR PORT      UDP echo to the sender's address
    kernel_peer.py stream ADDR PORT       TCP: sends an endless byte pattern to each client
    kernel_peer.py callback ADDR PORT     TCP: reads "IP PORT\\n", connects there, sends
                                          "hello from kernel", echoes one reply back, closes
    kernel_peer.py put ADDR PORT DIR      HTTP/1.1 server storing PUT bodies in DIR
    kernel_peer.py stall ADDR PORT        TCP: accepts and never reads (the window closes)
    kernel_peer.py rst ADDR PORT          TCP: sends 1 MiB, then resets (SO_LINGER {1, 0})
    kernel_peer.py count ADDR PORT        TCP: reads with SO_OOBINLINE (urgent bytes in the stream)
                                          until EOF, replies "got N", closes

Prints "READY" on stdout once listening. Runs until killed (the test stops it by PID).
"""
import http.server
import os
import socket
import socketserver
import sys
import threading


def ready():
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def tcp_server(addr, port, handler):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1024)
    ready()
    while True:
        c, peer = s.accept()
        threading.Thread(target=handler, args=(c, peer), daemon=True).start()


def echo(c, _peer):
    with c:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
        except OSError:
            pass


def stream(c, _peer):
    block = bytes(range(256)) * 256
    with c:
        try:
            while True:
                c.sendall(block)
        except OSError:
            pass


def callback(c, _peer):
    with c:
        line = b""
        while not line.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                return
            line += chunk
        ip, port = line.decode().split()
        with socket.create_connection((ip, int(port)), timeout=10) as back:
            back.sendall(b"hello from kernel")
            reply = back.recv(100)
            back.sendall(reply)
        c.sendall(b"done\n")


def stall(c, _peer):
    threading.Event().wait()    # keep the socket open and unread forever


def rst(c, _peer):
    import struct
    try:
        c.sendall(bytes(1 << 20))
    except OSError:
        pass
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def count(c, _peer):
    with c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        n = 0
        try:
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                n += len(b)
            c.sendall(b"got %d\n" % n)
        except OSError:
            pass


def udp_echo(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    ready()
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


def put_server(addr, port, directory):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self):
            length = int(self.headers.get("Content-Length", "0"))
            path = os.path.join(directory, os.path.basename(self.path))
            with open(path, "wb") as f:
                left = length
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    f.write(chunk)
                    left -= len(chunk)
            self.send_response(201 if left == 0 else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server((addr, port), Handler)
    ready()
    srv.serve_forever()


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "echo":
        tcp_server(addr, port, echo)
    elif mode == "stream":
        tcp_server(addr, port, stream)
    elif mode == "callback":
        tcp_server(addr, port, callback)
    elif mode == "stall":
        tcp_server(addr, port, stall)
    elif mode == "rst":
        tcp_server(addr, port, rst)
    elif mode == "count":
        tcp_server(addr, port, count)
    elif mode == "udpecho":
        udp_echo(addr, port)
    elif mode == "put":
        put_server(addr, port, sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
