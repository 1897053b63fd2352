#!/usr/bin/env python3
"""Static file server for the test image store (127.0.0.1 only).

Like `python3 -m http.server`, plus: it also answers proxy-form requests
(`GET http://127.0.0.1:PORT/img HTTP/1.1`), so a test VM reaches the images through
QEMU's user-net gateway by using this server as its HTTP proxy (the node's
`driver_info.image_http_proxy`), while the conductor checks the same URL directly.
With CERT and KEY it serves HTTPS instead (the TLS tests' image server).
Usage: imgserver.py PORT DIRECTORY [CERT KEY]
"""

import functools
import http.server
import ssl
import sys
import urllib.parse


class Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        if "://" in path:
            path = urllib.parse.urlsplit(path).path or "/"
        return super().translate_path(path)


def main(argv):
    port, root = int(argv[1]), argv[2]
    handler = functools.partial(Handler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if len(argv) == 5:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(argv[3], argv[4])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
