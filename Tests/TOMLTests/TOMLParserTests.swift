import TOML
import TestThreads
import Testing

@Suite("TOML parsing (toml++ through TOMLKit) into TOMLValue", .ownThread)
struct TOMLParserTests {
    @Test("tables, dotted and quoted keys, arrays, inline tables, all scalar kinds")
    func document() throws {
        let text = """
            # comment
            root = "/var/lib/x"   # trailing comment
            literal = 'C:\\path'
            escaped = "tab\\there \\u00e9"
            count = 1_000
            hex = 0xff
            negative = -17
            ratio = 0.5
            exp = 1e3
            on = true
            when = 1979-05-27T07:32:00Z
            list = [1, 2,
              3, # inside
            ]
            inline = { a = 1, b.c = "d" }
            multi = \"\"\"
            line one
            line two\"\"\"

            [api]
            socket = "/run/x.sock"
            allowed_uids = [0, 1000]

            [host."http://127.0.0.1:5000"]
            capabilities = ["pull", "resolve"]
            skip_verify = true

            [[mirror]]
            name = "a"
            [[mirror]]
            name = "b"
            """
        let doc = try TOMLParser.parse(text)
        #expect(doc["root"] == .string("/var/lib/x"))
        #expect(doc["literal"] == .string("C:\\path"))
        #expect(doc["escaped"] == .string("tab\there é"))
        #expect(doc["count"] == .integer(1000))
        #expect(doc["hex"] == .integer(255))
        #expect(doc["negative"] == .integer(-17))
        #expect(doc["ratio"] == .float(0.5))
        #expect(doc["exp"] == .float(1000))
        #expect(doc["on"] == .boolean(true))
        #expect(doc["when"] == .datetime("1979-05-27T07:32:00Z"))
        #expect(doc["list"] == .array([.integer(1), .integer(2), .integer(3)]))
        #expect(doc["inline", "b", "c"] == .string("d"))
        #expect(doc["multi"] == .string("line one\nline two"))
        #expect(doc["api", "allowed_uids"] == .array([.integer(0), .integer(1000)]))
        #expect(doc["host", "http://127.0.0.1:5000", "skip_verify"] == .boolean(true))
        #expect(doc["mirror"]?.array?.count == 2)
        #expect(doc["mirror"]?.array?.last?["name"] == .string("b"))
    }

    @Test(
        "syntax errors name their line",
        arguments: [
            ("a = ", 1, "end-of-file"),
            ("a = 1\na = 2", 2, "cannot redefine"),
            ("[t]\n[t]", 2, "cannot redefine"),
            ("a = \"unterminated", 1, "parsing string"),
            ("a = [1, 2", 1, "parsing array"),
            ("a = 1 b = 2", 1, "saw 'b'"),
            ("a = 01", 1, "leading zeroes"),
            ("= 1", 1, "expected keys"),
            ("a = 1\n[a]", 2, "as table"),
            ("a = \"\\q\"", 1, "unknown escape"),
        ])
    func errors(_ text: String, _ line: Int, _ message: String) {
        #expect {
            try TOMLParser.parse(text)
        } throws: { error in
            guard let error = error as? TOMLError else { return false }
            return error.line == line && error.message.contains(message)
        }
    }
}
