/// One method per API route, so callers never spell paths.
extension SnapshotterClient {
    public func prepare(key: String, parent: String? = nil, labels: [String: String]? = nil, image: String? = nil) throws -> [MountSpec] {
        let response: MountsResponse = try call(
            "POST", "/v1/snapshots/prepare", body: PrepareRequest(key: key, parent: parent, labels: labels, image: image))
        return response.mounts
    }

    public func view(key: String, parent: String? = nil, labels: [String: String]? = nil, image: String? = nil) throws -> [MountSpec] {
        let response: MountsResponse = try call(
            "POST", "/v1/snapshots/view", body: PrepareRequest(key: key, parent: parent, labels: labels, image: image))
        return response.mounts
    }

    public func mounts(key: String) throws -> [MountSpec] {
        let response: MountsResponse = try call("GET", "/v1/snapshots/\(encodePathSegment(key))/mounts")
        return response.mounts
    }

    public func commit(name: String, key: String, labels: [String: String]? = nil) throws {
        let _: EmptyResponse = try call("POST", "/v1/snapshots/commit", body: CommitRequest(name: name, key: key, labels: labels))
    }

    public func remove(key: String) throws {
        let _: EmptyResponse = try call("DELETE", "/v1/snapshots/\(encodePathSegment(key))")
    }

    public func stat(key: String) throws -> SnapshotInfo {
        let response: InfoResponse = try call("GET", "/v1/snapshots/\(encodePathSegment(key))")
        return response.info
    }

    public func update(key: String, labels: [String: String], fieldpaths: [String]? = nil) throws -> SnapshotInfo {
        let response: InfoResponse = try call(
            "PATCH", "/v1/snapshots/\(encodePathSegment(key))", body: UpdateRequest(labels: labels, fieldpaths: fieldpaths))
        return response.info
    }

    public func list(filters: [String] = []) throws -> [SnapshotInfo] {
        var path = "/v1/snapshots"
        if !filters.isEmpty {
            path += "?" + filters.map { "filter=" + encodePathSegment($0) }.joined(separator: "&")
        }
        let response: ListResponse = try call("GET", path)
        return response.snapshots
    }

    public func usage(key: String) throws -> SnapshotUsage {
        try call("GET", "/v1/snapshots/\(encodePathSegment(key))/usage")
    }

    public func cleanup() throws -> [String] {
        let response: CleanupResponse = try call("POST", "/v1/cleanup")
        return response.removed
    }

    public func mount(key: String, target: String) throws -> MountedResponse {
        try call("POST", "/v1/snapshots/\(encodePathSegment(key))/mount", body: MountRequest(target: target))
    }

    public func unmount(target: String) throws {
        let _: EmptyResponse = try call("POST", "/v1/unmount", body: UnmountRequest(target: target))
    }

    public func status() throws -> StatusResponse {
        try call("GET", "/v1/status")
    }

    /// Pulls an image through the daemon (blocks until the pull is done; poll `pulls()` for progress).
    public func pull(reference: String) throws -> PullResponse {
        try call("POST", "/v1/images/pull", body: PullRequest(reference: reference))
    }

    public func index(reference: String, spanBytes: UInt64? = nil, prefetch: [String]? = nil) throws -> IndexResponse {
        try call("POST", "/v1/images/index", body: IndexRequest(reference: reference, spanBytes: spanBytes, prefetch: prefetch))
    }

    public func images() throws -> [ImageInfo] {
        let response: ImagesResponse = try call("GET", "/v1/images")
        return response.images
    }

    public func pulls() throws -> [PullStatus] {
        let response: PullsResponse = try call("GET", "/v1/pulls")
        return response.pulls
    }

    public func removeImage(reference: String) throws {
        let _: EmptyResponse = try call("POST", "/v1/images/remove", body: PullRequest(reference: reference))
    }

    /// The Prometheus text of `/metrics`.
    public func metrics() throws -> String {
        let response = try send(method: "GET", path: "/metrics")
        return String(decoding: response.body, as: UTF8.self)
    }

    public func convert(_ request: ConvertRequest) throws -> ConvertResponse {
        try call("POST", "/v1/convert", body: request)
    }

    public func inspect(_ request: InspectRequest) throws -> InspectResponse {
        try call("POST", "/v1/inspect", body: request)
    }

    /// Pins (or unpins) an image: its chunks are never evicted while pinned.
    public func pin(reference: String, pinned: Bool = true) throws -> ImageUsage {
        try call("POST", "/v1/images/pin", body: PinRequest(reference: reference, pinned: pinned))
    }

    /// The cache per image and in total, with the budget.
    public func usage() throws -> UsageResponse {
        try call("GET", "/v1/usage")
    }

    public func prefetch(reference: String, paths: [String]? = nil) throws -> PrefetchResponse {
        try call("POST", "/v1/images/prefetch", body: PrefetchRequest(reference: reference, paths: paths))
    }
}
