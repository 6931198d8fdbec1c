/// Header values and media types arrive padded with whitespace.
extension String {
    package var trimmedWhitespace: String {
        var s = Substring(self)
        // "\r\n" is one Character: test whitespace-ness, not single characters.
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
