import TestThreads
import Testing

@testable import BlobStore

@Suite("Cachefiles naming: the kernel's cache tree layout", .ownThread)
struct CachefilesNamingTests {
    /// Paths a real kernel's cachefiles created (published in the styx project's daemon tests, observed on a
    /// live system): volume key `erofs,<domain>`, printable cookie keys, fan-out bytes below and above 0x10.
    static let observedOnKernel: [(domain: String, key: String, path: String)] = [
        ("styxtest9dbeb96981e633e3", "_slab_0", "Ierofs,styxtest9dbeb96981e633e3/@0e/D_slab_0"),
        ("styxtestbf4a1ed3c4d64dd8", "_slab_0", "Ierofs,styxtestbf4a1ed3c4d64dd8/@1d/D_slab_0"),
        ("styxtest9dbeb96981e633e3", "_slabimg_0", "Ierofs,styxtest9dbeb96981e633e3/@fb/D_slabimg_0"),
        // Made by the 6.12 test kernel in CachefilesKernelTests (fsid=vmboot1, domain_id=vmdomain, nydus fixture).
        ("vmdomain", "vmboot1", "Ierofs,vmdomain/@24/Dvmboot1"),
        (
            "vmdomain", "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef",
            "Ierofs,vmdomain/@2b/Dbe7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
        ),
    ]

    @Test("names a real kernel produced", arguments: observedOnKernel)
    func observedNames(domain: String, key: String, path: String) {
        #expect(CachefilesNaming.relativePath(domain: domain, blobID: key) == path)
    }

    /// Expected values computed by a separate transliteration of fs/cachefiles/key.c and fscache_hash
    /// (C, built from the 6.12 source's description; agrees with the observed names above).
    static let computed: [(volume: String, key: [UInt8], path: String)] = [
        ("erofs,bootstrap1", Array("bootstrap1".utf8), "Ierofs,bootstrap1/@db/Dbootstrap1"),
        (
            "erofs,domain1", Array("be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef".utf8),
            "Ierofs,domain1/@11/Dbe7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
        ),
        // Big-endian hex words win: the second word prints as 5.
        ("erofs,x", [1, 2, 3, 4, 0, 0, 0, 5], "Ierofs,x/@32/S1020304,5"),
        // Little-endian hex words win.
        ("erofs,x", [0x10, 0, 0, 0], "Ierofs,x/@ad/T10"),
        // Base64 with one pad byte.
        ("erofs,x", [0xff, 0xfe, 0x80, 0x81, 0x82, 0x90, 0x91, 0xa0, 0xa1, 0xb2, 0xc3], "Ierofs,x/@5a/E1-Xfw1a8Ah2qEOec0"),
        // A space is not rendered directly.
        ("erofs,x", Array("a b".utf8), "Ierofs,x/@42/E0x1yo"),
        // Nor is a slash.
        ("erofs,x", Array("a/bcd".utf8), "Ierofs,x/@dc/E1xZyozh60"),
        ("erofs,x", [], "Ierofs,x/@30/D"),
    ]

    @Test("encodings of printable, hex and base64 keys", arguments: computed)
    func computedNames(volume: String, key: [UInt8], path: String) {
        #expect(CachefilesNaming.relativePath(volumeKey: volume, cookieKey: key) == path)
    }

    @Test func hashes() {
        #expect(CachefilesNaming.volumeHash(volumeKey: "erofs,styxtest9dbeb96981e633e3") == 0x506b_aa3f)
        #expect(CachefilesNaming.cookieHash(volumeKey: "erofs,styxtest9dbeb96981e633e3", cookieKey: Array("_slab_0".utf8)) == 0x6141_1c0e)
        #expect(CachefilesNaming.volumeHash(volumeKey: "erofs,x") == 0x71a1_3550)
    }

    @Test func volumeKeyAndValidation() throws {
        #expect(CachefilesNaming.volumeKey(domain: "d1") == "erofs,d1")
        try CachefilesNaming.validate(volumeKey: "erofs,d1", cookieKey: Array(repeating: 0x41, count: 252))
        #expect(throws: BlobStoreError.self) {
            try CachefilesNaming.validate(volumeKey: "erofs,d1", cookieKey: Array(repeating: 0x41, count: 253))
        }
        #expect(throws: BlobStoreError.self) {
            try CachefilesNaming.validate(volumeKey: String(repeating: "v", count: 256), cookieKey: [])
        }
    }
}
