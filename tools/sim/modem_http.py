"""The simulated modem's HTTP stack (tools/sim/modem.py): what the module does once the firmware
has asked for a request through its dialect's commands. The request really goes, with
http.client, to the URL's host (a local HTTP server in tests); ``https://`` needs the dialect's TLS
configuration first but is carried as plain HTTP (no TLS here). Answers come back after the
modem's `urc_ms`, as the dialect's result codes (`HTTP_ERRORS`); faults `http_5xx` and `slow`
and planned connection cuts (`cut_bodies_at`) are applied here. Runs as ModemSim methods.
"""

import http.client
import threading
import time
import urllib.parse


class HttpStack:
    def cut_bodies_at(self, points):
        """Drop the connection when the body bytes handed out reach each of these offsets."""
        self.cut_at = sorted(int(p) for p in points)
        self.body_out = 0
        self.cuts_done = 0

    def _body_cut(self, n):
        """Bytes of the next `n` to hand out before a planned cut, or None (no cut in them)."""
        while self.cut_at and self.cut_at[0] < self.body_out:
            self.cut_at.pop(0)
        if self.cut_at and self.cut_at[0] < self.body_out + n:
            k = self.cut_at.pop(0) - self.body_out
            self.body_out += k
            self.cuts_done += 1
            return k
        self.body_out += n
        return None

    def _start_http(self, method, url, headers, body, tls_ok, done):
        codes = self.d.HTTP_ERRORS
        err_net = codes["net"]
        err_tls = codes["tls"]
        delay = self.timing["urc_ms"] / 1000.0
        if not self.pdp:
            result = {"code": err_net}
        elif url.startswith("https://") and not tls_ok:
            result = {"code": err_tls}
        elif self._use("http_5xx"):
            result = {"status": 503, "body": b"service unavailable"}
        else:
            result = None
            if self._use("slow"):
                delay += self.timing["slow_ms"] / 1000.0
        gen = self.gen
        token = object()
        self.busy = token

        def worker():
            # The request runs outside the lock so the modem keeps answering AT meanwhile.
            t0 = time.monotonic()
            res = result or self._forward(method, url, headers, body)
            left = delay - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            with self.lock:
                if self.gen != gen or self.busy is not token or not self.power:
                    return  # cancelled (HTTPTERM, QHTTPSTOP) or the modem restarted
                self.busy = None
                if not self.pdp and "code" not in res:
                    res = {"code": err_net}  # the context went down while we waited
                if "error" in res:
                    done(0, b"", codes.get(res["error"], codes["other"]))
                elif "code" in res:
                    done(0, b"", res["code"])
                else:
                    done(res["status"], res["body"], 0)

        threading.Thread(target=worker, daemon=True).start()

    def _forward(self, method, url, headers, body):
        parts = urllib.parse.urlsplit(url.replace("https://", "http://", 1))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.http_log.append((method, url, dict(headers), bytes(body)))
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        except (OSError, ValueError):
            return {"error": "connect"}
        sent = conn.send

        def counted(data):
            self.wire_bytes += len(data)
            return sent(data)

        conn.send = counted  # what goes over the air: request line, headers, body
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason) + str(resp.headers)
            self.wire_bytes += len(head.encode("latin-1")) + len(data)
            return {"status": resp.status, "body": data}
        except http.client.IncompleteRead:
            return {"error": "reset"}
        except ConnectionRefusedError:
            return {"error": "connect"}
        except (OSError, http.client.HTTPException):
            return {"error": "reset"}
        finally:
            conn.close()
