/// Python helpers the registry tests write to their temp dir and run with python3 (loopback only).
public enum RegistryTestScripts {
    /// An HTTP/1.1 proxy in front of a registry that can inject faults into blob GETs:
    /// `pass`, `flip` (one byte of the body inverted), `drop` (first blob GET cut at half its body),
    /// `503` (every blob GET refused, Retry-After 1), `stall` (the first blob GET in this mode sends half its body, then stays silent for a minute), `429` (first two blob GETs refused), `busy` (the first two blob GETs made in this mode answered 429 with Retry-After 1), `redirect` (blob GETs answered 307 to the registry itself), `slow` (blob GETs delayed 3 s), `hold` (blob GETs held until the mode is switched away from `hold`, for at most 2 minutes: a fetch that cannot finish before the test lets it), `slowtag` (manifest GETs by tag delayed 1 s), `throttled` (every blob GET answered 429 with Retry-After 30).
    /// Absolute-form requests (`GET http://host:port/...`) make it a forward proxy. Logs one line per request
    /// and a `SENT <bytes> <method> <path>` line per answered body; a `<log>.mode` file switches the mode live.
    public static let faultProxy = #"""
        import http.server, http.client, socket, sys, threading, time
        port, upstream, mode, logpath = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
        lock = threading.Lock()
        state = {"blob_gets": 0}
        HOP = {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "te", "upgrade"}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def handle_any(self):
                path, target = self.path, upstream
                if path.startswith("http://"):
                    hostport, _, rest = path[len("http://"):].partition("/")
                    target, path = int(hostport.rsplit(":", 1)[1]), "/" + rest
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                is_blob = self.command == "GET" and "/blobs/sha256:" in path
                active = mode
                try:
                    with open(logpath + ".mode") as override:
                        active = override.read().strip() or mode
                except OSError:
                    pass
                with lock:
                    if is_blob:
                        state["blob_gets"] += 1
                        if active == "busy":
                            state["busy_gets"] = state.get("busy_gets", 0) + 1
                    count = state["blob_gets"]
                    busy = state.get("busy_gets", 0)
                    with open(logpath, "a") as log:
                        log.write("%s %s range=%s auth=%s\n" % (self.command, self.path, self.headers.get("Range"), "Authorization" in self.headers))
                if active == "slow" and is_blob:
                    time.sleep(3)
                if active == "hold" and is_blob:
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        try:
                            with open(logpath + ".mode") as override:
                                if (override.read().strip() or mode) != "hold":
                                    break
                        except OSError:
                            break
                        time.sleep(0.02)
                if active == "slowtag" and self.command == "GET" and "/manifests/" in path and "sha256:" not in path:
                    time.sleep(1)
                if active == "503" and is_blob:
                    self.send_response(503); self.send_header("Retry-After", "1"); self.send_header("Content-Length", "0"); self.end_headers(); return
                if active == "429" and is_blob and count <= 2:
                    self.send_response(429); self.send_header("Retry-After", "0"); self.send_header("Content-Length", "0"); self.end_headers(); return
                if active == "throttled" and is_blob:
                    self.send_response(429); self.send_header("Retry-After", "30"); self.send_header("Content-Length", "0"); self.end_headers(); return
                if active == "busy" and is_blob and busy <= 2:
                    self.send_response(429); self.send_header("Retry-After", "1"); self.send_header("Content-Length", "0"); self.end_headers(); return
                if active == "redirect" and is_blob:
                    self.send_response(307); self.send_header("Location", "http://127.0.0.1:%d%s" % (upstream, path))
                    self.send_header("Content-Length", "0"); self.end_headers(); return
                conn = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, path, body=body, headers=headers)
                resp = conn.getresponse()
                data_length = resp.getheader("Content-Length")
                buffered = None
                if data_length is None and self.command != "HEAD":
                    buffered = resp.read(); data_length = str(len(buffered))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                if data_length is not None:
                    self.send_header("Content-Length", data_length)
                self.end_headers()
                if self.command == "HEAD":
                    return
                total, sent, flipped = int(data_length or 0), 0, False
                while True:
                    chunk = buffered if buffered is not None else resp.read(65536)
                    buffered = b"" if buffered is not None else None
                    if not chunk:
                        break
                    if active == "flipall" and is_blob and resp.status in (200, 206):
                        b = bytearray(chunk); b[len(b) // 2] ^= 0xFF; chunk = bytes(b)
                    if active == "flip" and is_blob and resp.status in (200, 206) and not flipped:
                        b = bytearray(chunk); b[len(b) // 2] ^= 0xFF; chunk = bytes(b); flipped = True
                    if active == "stall" and is_blob and resp.status in (200, 206) and not state.get("stalled") and sent + len(chunk) >= total // 2:
                        # Half of the first blob body sent in this mode, then nothing: the connection stays open,
                        # silent, for a minute.
                        with lock:
                            state["stalled"] = True
                        self.wfile.write(chunk[: total // 2 - sent]); self.wfile.flush()
                        time.sleep(60)
                        self.close_connection = True
                        return
                    if active == "drop" and is_blob and count == 1 and sent + len(chunk) >= total // 2:
                        self.wfile.write(chunk[: total // 2 - sent]); self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR); self.close_connection = True
                        return
                    self.wfile.write(chunk); sent += len(chunk)
                conn.close()
                with lock:
                    with open(logpath, "a") as log:
                        log.write("SENT %d %s %s\n" % (sent, self.command, path))
            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
        Server(("127.0.0.1", port), Handler).serve_forever()
        """#

    /// A distribution token issuer: `GET /token?service=&scope=` → RS256 JWT signed with openssl, `kid` = the
    /// libtrust fingerprint of the key. Optional basic credentials (user, password) are required when given; then
    /// optionally the tokens' lifetime in seconds (300) and a delay before each answer in seconds (0).
    public static let tokenServer = #"""
        import base64, hashlib, http.server, json, os, subprocess, sys, time, urllib.parse
        port, key, issuer, logpath = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        user, password = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else (None, None)
        lifetime = int(sys.argv[7]) if len(sys.argv) > 7 else 300
        delay = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
        kid = ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))
        def b64(data):
            return base64.urlsafe_b64encode(data).rstrip(b"=")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status); self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                with open(logpath, "a") as log:
                    log.write("token %s auth=%s\n" % (query.get("scope"), "Authorization" in self.headers))
                if user is not None:
                    expected = "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self.reply(401, {"details": "bad credentials"})
                access = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                if delay > 0:
                    time.sleep(delay)
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "kid": kid}
                claims = {"iss": issuer, "sub": user or "anonymous", "aud": query.get("service", [""])[0], "exp": now + lifetime,
                          "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
                signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
                signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input, check=True, capture_output=True).stdout
                token = (signing_input + b"." + b64(signature)).decode()
                self.reply(200, {"token": token, "expires_in": lifetime, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#

    /// A TCP relay with a delay line: `LISTEN_HOST LISTEN_PORT UP_HOST UP_PORT DELAY_MS`. Every piece read
    /// from either side is written to the other `DELAY_MS` after it arrived (in order), so a round trip through
    /// it costs twice the delay while throughput is unchanged; at most 4 MiB per direction wait in the line
    /// (beyond that the reader stops reading and TCP's flow control pushes back). `LinkEmulator` runs it.
    public static let delayRelay = #"""
        import asyncio, sys, time
        listen_host, listen_port, up_host, up_port, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]) / 1000.0

        async def pump(reader, writer):
            queue = asyncio.Queue(maxsize=64)
            async def feed():
                try:
                    while True:
                        data = await reader.read(65536)
                        await queue.put((time.monotonic() + delay, data))
                        if not data:
                            return
                except Exception:
                    await queue.put((time.monotonic(), b""))
            async def drain():
                try:
                    while True:
                        due, data = await queue.get()
                        wait = due - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        if not data:
                            if writer.can_write_eof():
                                writer.write_eof()
                            return
                        writer.write(data)
                        await writer.drain()
                except Exception:
                    pass
            await asyncio.gather(feed(), drain())

        async def handle(client_reader, client_writer):
            try:
                up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
            except Exception as error:
                print(f"upstream {up_host}:{up_port} refused a connection: {error}", file=sys.stderr, flush=True)
                client_writer.close()
                return
            await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))
            for w in (client_writer, up_writer):
                try:
                    w.close()
                except Exception:
                    pass

        async def main():
            server = await asyncio.start_server(handle, listen_host, listen_port, backlog=512)
            async with server:
                await server.serve_forever()

        asyncio.run(main())
        """#
}
