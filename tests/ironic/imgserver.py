#!/usr/bin/env python3
"""Static file server for the test image store (127.0.0.1 only).

Like `python3 -m http.server`, plus: it also answers proxy-form requests
(`GET http://127.0.0.1:PORT/img HTTP/1.1`), so a test VM reaches the images through
QEMU's user-net gateway by using this server as its HTTP proxy (the node's
`driver_info.image_http_proxy`), while the conductor checks the same URL directly.
Usage: imgserver.py PORT DIRECTORY
"""

import functools
import http.server
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
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
