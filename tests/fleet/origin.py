#!/usr/bin/env python3
"""Image origin of the fleet tests: an object store's two kinds of signed URL, 127.0.0.1 only.

  GET|HEAD /swift/v1/AUTH_fleet/images/NAME?temp_url_sig=SIG&temp_url_expires=EXP
      a Swift temporary URL: GET answers 302 to the presigned S3-style URL below, HEAD
      answers for the object itself (so the conductor, which checks the URL with HEAD and
      would otherwise hand the agent the redirect's target, passes this URL on and the
      agent follows the redirect itself)
  GET|HEAD /s3/images/NAME?X-Amz-Algorithm=...&X-Amz-Signature=SIG2&...
      the object, with Range (206), Last-Modified and ETag, as an object store serves it

A missing or wrong signature is 403, so a client that drops the query string fails.
`--cut NAME BYTES` makes the first GET of object NAME stop after BYTES (the connection is
closed mid-body), for the Range-resume check. Every request is one JSON line in the log
(method, path without its query, status, bytes sent, Range): the log never holds a
signature. Usage: origin.py PORT DIRECTORY LOG SECRET [--cut NAME BYTES]
"""

import email.utils
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

SWIFT = "/swift/v1/AUTH_fleet/images/"
S3 = "/s3/images/"


def signature(secret, kind, name):
    """The signature the store expects for NAME: a keyed hash, long as real ones."""
    return hashlib.sha256(f"{secret}:{kind}:{name}".encode()).hexdigest()


def s3_query(secret, name):
    """A presigned URL's query string (AWS SigV4 query authentication, long)."""
    return urllib.parse.urlencode({
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": "FLEETACCESSKEY0000000/20261206/us-east-1/s3/aws4_request",
        "X-Amz-Date": "20261206T000000Z",
        "X-Amz-Expires": "86400",
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": signature(secret, "s3", name),
    })


def swift_url(base, secret, name):
    """The Swift temporary URL of NAME, the URL a node's instance_info gets."""
    return (f"{base}{SWIFT}{name}?temp_url_sig={signature(secret, 'swift', name)}"
            f"&temp_url_expires=4102444800")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = secret = log_path = None
    cut_name, cut_bytes = None, 0
    lock = threading.Lock()
    cut_done = False

    def log_message(self, *args):
        pass

    def record(self, status, sent, rng=None):
        line = {"t": round(time.time(), 3), "method": self.command,
                "path": urllib.parse.urlsplit(self.path).path, "status": status,
                "bytes": sent, "range": rng}
        with Handler.lock, open(Handler.log_path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def refuse(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.record(status, 0)

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.startswith(SWIFT):
            name = url.path[len(SWIFT):]
            if query.get("temp_url_sig") != [signature(self.secret, "swift", name)]:
                return self.refuse(403, "bad temp_url_sig\n")
            if self.command == "HEAD":
                return self.serve(name)
            self.send_response(302)
            self.send_header("Location", f"{S3}{name}?{s3_query(self.secret, name)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.record(302, 0)
        if not url.path.startswith(S3):
            return self.refuse(404, "no such object\n")
        name = url.path[len(S3):]
        if query.get("X-Amz-Signature") != [signature(self.secret, "s3", name)]:
            return self.refuse(403, "SignatureDoesNotMatch\n")
        self.serve(name)

    def serve(self, name):
        path = os.path.join(self.root, os.path.basename(name))
        try:
            st = os.stat(path)
        except OSError:
            return self.refuse(404, "no such object\n")
        size, start, end = st.st_size, 0, st.st_size - 1
        etag = f'"{int(st.st_mtime)}-{size}"'
        # Revalidation (a cache checking its copy): unchanged means 304, no body.
        if self.headers.get("If-None-Match") == etag or (
                self.headers.get("If-Modified-Since") and not self.headers.get("If-None-Match")
                and email.utils.parsedate_to_datetime(self.headers["If-Modified-Since"]).timestamp()
                >= int(st.st_mtime)):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return self.record(304, 0)
        rng = self.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            try:
                start = int(a) if a else size - int(b)
                end = min(int(b), size - 1) if a and b else size - 1
            except ValueError:
                return self.refuse(416, "bad range\n")
            if start >= size or start > end:
                return self.refuse(416, "range not satisfiable\n")
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return self.record(status, 0, rng)
        limit = length
        if name == Handler.cut_name:
            with Handler.lock:
                first, Handler.cut_done = not Handler.cut_done, True
            if first:
                limit = min(length, Handler.cut_bytes)
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < limit:
                chunk = f.read(min(1 << 20, limit - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        self.record(status, sent, rng)
        if sent < length:
            self.close_connection = True


def main(argv):
    port, root, log_path, secret = int(argv[1]), argv[2], argv[3], argv[4]
    if len(argv) > 7 and argv[5] == "--cut":
        Handler.cut_name, Handler.cut_bytes = argv[6], int(argv[7])
    Handler.root, Handler.log_path, Handler.secret = root, log_path, secret
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
