#!/usr/bin/env python3
"""Oracle: would a Python IdP read this raw HTTP/1.1 request as a refresh grant?

Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
{"id", "refresh", "token", "note"}. Standard library only:
  - the request line and headers through http.server's own BaseHTTPRequestHandler.parse_request
    (http.client.parse_headers underneath), pipelined requests one after another;
  - the body de-chunked (Transfer-Encoding: chunked) or cut at Content-Length, whatever the
    method or media type, decoded three ways: with the Content-Type charset (else UTF-8,
    errors="replace"); as UTF-8 (werkzeug 3); and as Django's QueryDict does (strictly in the
    charset, else Latin-1, with the percent-escapes in the charset);
  - urllib.parse.parse_qsl(keep_blank_values=True) of each and of the query string, read
    first-wins (werkzeug), last-wins (Django, dict()), and merged with the query.
Refresh if any reading has grant_type == "refresh_token" (exactly, or after .strip()) and a
non-empty refresh_token.
"""
import base64
import codecs
import http.server
import io
import json
import sys
import urllib.parse

MAX_REQUESTS = 8  # pipelined requests read from one input


class Request(http.server.BaseHTTPRequestHandler):
    """http.server's request parsing on bytes in memory instead of a socket."""

    protocol_version = "HTTP/1.1"  # keep-alive: pipelined requests are read too

    def __init__(self, rfile):  # pylint: disable=super-init-not-called
        self.rfile, self.wfile = rfile, io.BytesIO()
        self.client_address, self.server = ("127.0.0.1", 0), None
        self.close_connection = True
        self.error = "empty request line"  # parse_request refuses that without send_error

    def send_error(self, code, message=None, explain=None):
        self.error = f"{code} {message or ''}".strip()

    def log_message(self, *args):
        pass

    def parse(self):
        """The request line and headers; False (with self.error) when http.server refuses."""
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.error = "no request"
            return False
        if len(self.raw_requestline) > 65536:
            self.error = "414 request line too long"
            return False
        return self.parse_request()


def read_chunked(rfile):
    """The body of a chunked message (chunk extensions and trailers ignored)."""
    out = bytearray()
    while True:
        line = rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise ValueError("incomplete chunk size")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size < 0:
            raise ValueError("negative chunk size")
        if size == 0:
            while rfile.readline(65537).strip():
                pass
            return bytes(out)
        data = rfile.read(size)
        if len(data) != size:
            raise ValueError("incomplete chunk")
        out += data
        rfile.readline(65537)


def read_body(req):
    te = req.headers.get("Transfer-Encoding")
    if te is not None:
        if te.strip().lower() != "chunked":
            raise ValueError(f"transfer-encoding {te!r}")
        return read_chunked(req.rfile)
    length = req.headers.get("Content-Length")
    if length is None:
        return b""
    n = int(length)
    if n < 0:
        raise ValueError("negative content-length")
    data = req.rfile.read(n)
    if len(data) != n:
        raise ValueError("incomplete body")
    return data


def readings(req, body):
    """(label, dict) for each way a Python framework reads the parameters."""
    charset = req.headers.get_content_charset() or "utf-8"
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"
    forms = {  # label -> (text, encoding of the percent-escapes)
        "body": (body.decode(charset, errors="replace"), "utf-8"),
        "body/utf-8": (body.decode("utf-8", errors="replace"), "utf-8"),  # werkzeug 3
    }
    if charset != "utf-8":  # Django's QueryDict: strict decode, else Latin-1; escapes in charset
        try:
            forms["django/" + charset] = (body.decode(charset), charset)
        except UnicodeDecodeError:
            forms["django/" + charset + "/latin-1"] = (body.decode("iso-8859-1"), charset)
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(req.path).query, keep_blank_values=True)
    for name, (text, encoding) in forms.items():
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=encoding, errors="replace")
        yield name + " first", dict(reversed(pairs))
        yield name + " last", dict(pairs)
        yield name + "+query", dict(reversed(query + pairs))
    yield "query", dict(reversed(query))


def judge_one(req, body):
    for label, params in readings(req, body):
        grant, token = params.get("grant_type"), params.get("refresh_token")
        if not token or grant is None:
            continue
        if grant == "refresh_token":
            return True, token, f"{req.command} {label}"
        if grant.strip() == "refresh_token":
            return True, token, f"{req.command} {label} strip"
    return False, None, f"{req.command} grant_type not refresh_token"


def judge(raw):
    rfile = io.BytesIO(raw)
    notes = []
    for _ in range(MAX_REQUESTS):
        if rfile.tell() >= len(raw):
            break
        req = Request(rfile)
        if not req.parse():
            notes.append(f"refused {req.error}")
            break
        try:
            body = read_body(req)
        except (ValueError, OverflowError) as e:
            notes.append(f"{req.command} body error {e}")
            break
        refresh, token, note = judge_one(req, body)
        if refresh:
            return True, token, "; ".join(notes + [note])
        notes.append(note)
        if req.close_connection:
            break
    return False, None, "; ".join(notes) or "nothing parsed"


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        ident = None
        try:
            item = json.loads(line)
            ident = item["id"]
            refresh, token, note = judge(base64.b64decode(item["raw"]))
        except Exception as e:  # pylint: disable=broad-except
            refresh, token, note = False, None, f"error {type(e).__name__}: {e}"
        print(json.dumps({"id": ident, "refresh": refresh, "token": token, "note": note}), flush=True)


if __name__ == "__main__":
    main()
