import Digests
import Foundation

/// An attacker's registry on loopback: it answers the distribution API's read side from files the test
/// writes, and checks nothing. A blob is served under whatever digest the test names (its bytes need not
/// match), with Range requests honoured, so tests can play a registry that lies about blob bytes, blob meta
/// and manifests. One line per request goes to its log.
public final class HostileRegistry {
    private let helper: PythonHelper
    public let root: String
    public var port: Int { helper.port }
    /// `127.0.0.1:<port>`, the registry part of a reference.
    public var host: String { "127.0.0.1:\(helper.port)" }
    public var requests: [String] { helper.requests }

    public init() throws {
        helper = try PythonHelper(script: Self.script, name: "hostile-registry") { port, log in
            ["\(port)", (log as NSString).deletingLastPathComponent + "/root", log]
        }
        root = helper.directory + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    public func stop() { helper.stop() }

    /// Serves `bytes` as blob `digest` (`sha256:<hex>`) of `repository`, whatever their real digest.
    public func putBlob(repository: String, digest: String, bytes: [UInt8]) throws {
        let directory = root + "/" + repository + "/blobs"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + digest))
    }

    /// Serves `bytes` as the manifest of `repository` under `tag` and under its own digest.
    public func putManifest(repository: String, tag: String, bytes: [UInt8], mediaType: String) throws {
        let directory = root + "/" + repository + "/manifests"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in [tag, "sha256:" + SHA256.hash(bytes).hexString] {
            try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name))
            try Data(mediaType.utf8).write(to: URL(fileURLWithPath: directory + "/" + name + ".type"))
        }
    }

    /// A read-only distribution API over `<root>/<repository>/{manifests,blobs}/<name>`.
    static let script = #"""
        import hashlib, http.server, os, re, sys, threading
        port, root, logpath = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        lock = threading.Lock()
        ROUTE = re.compile(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            def handle_any(self):
                with lock:
                    with open(logpath, "a") as log:
                        log.write("%s %s range=%s\n" % (self.command, self.path, self.headers.get("Range")))
                path = self.path.split("?", 1)[0]
                if path in ("/v2/", "/v2"):
                    return self.reply(200, b"{}", [("Content-Type", "application/json")])
                m = ROUTE.match(path)
                if not m or ".." in path:
                    return self.reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
                repo, kind, name = m.groups()
                file = os.path.join(root, repo, kind, name)
                if not os.path.isfile(file):
                    return self.reply(404, b'{"errors":[{"code":"%s_UNKNOWN"}]}' % (b"MANIFEST" if kind == "manifests" else b"BLOB"))
                data = open(file, "rb").read()
                if kind == "manifests":
                    media = open(file + ".type").read().strip()
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    return self.reply(200, data, [("Content-Type", media), ("Docker-Content-Digest", digest)])
                headers = [("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", name), ("Accept-Ranges", "bytes")]
                rng = self.headers.get("Range")
                if rng:
                    start, _, end = rng.replace("bytes=", "").partition("-")
                    start = int(start); end = int(end) if end else len(data) - 1
                    end = min(end, len(data) - 1)
                    if start > end:
                        return self.reply(416)
                    headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, len(data))))
                    return self.reply(206, data[start:end + 1], headers)
                return self.reply(200, data, headers)
            do_GET = do_HEAD = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
        Server(("127.0.0.1", port), Handler).serve_forever()
        """#
}
