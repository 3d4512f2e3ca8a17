/// A strict JSON (RFC 8259) parser straight to `JSONValue`. It exists because decoding
/// `JSONValue` through `JSONDecoder` tries each case in turn and throws on every miss, which
/// made parsing the hot path's bodies (every submit, every stored input) the server's largest
/// CPU cost.
public struct JSONParser {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var offset: Int
        public var reason: String
        public var description: String { "\(reason) at byte \(offset)" }
        /// The reason of an integer `exactIntegers` refuses.
        public static let inexactInteger = "an integer beyond 64 bits"
    }

    /// Deepest nesting accepted, so hostile input cannot exhaust the stack.
    public static let maxDepth = 256

    /// `uniqueKeys`: an object that names a key twice is an error (where a later value silently
    /// replacing an earlier one would hide a mistake: a configuration file).
    /// `exactIntegers`: an integer beyond 64 bits is an error, where it would otherwise be read as
    /// the nearest double (where that would silently change it: a job's input, a seed or a hash
    /// that a dedup or an idempotency check then compares; found by attacking the build).
    /// `replacingLoneSurrogates`: a `\u` escape of half a surrogate pair reads as U+FFFD instead
    /// of failing the whole text (where a sender may not know better: Python's `json.dumps` of a
    /// file name `os.listdir` gave, say, writes `"\udce9"`).
    public static func parse(_ bytes: some Collection<UInt8>, uniqueKeys: Bool = false, exactIntegers: Bool = false,
                             replacingLoneSurrogates: Bool = false) throws(Error) -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws(Error) in
            var parser = Parser(bytes: buffer, uniqueKeys: uniqueKeys, exactIntegers: exactIntegers,
                                replacingLoneSurrogates: replacingLoneSurrogates)
            parser.skipWhitespace()
            let value = try parser.value(depth: 0)
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.error("unexpected text after the JSON value") }
            return value
        }
    }

    struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var uniqueKeys = false
        var exactIntegers = false
        var replacingLoneSurrogates = false
        var index = 0

        func error(_ reason: String) -> Error { Error(offset: index, reason: reason) }

        mutating func skipWhitespace() {
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
                index += 1
            }
        }

        mutating func value(depth: Int) throws(Error) -> JSONValue {
            guard depth < JSONParser.maxDepth else { throw error("nested too deeply") }
            guard index < bytes.count else { throw error("unexpected end of input") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character")
            }
        }

        mutating func literal(_ word: StaticString) throws(Error) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw error("unexpected end of input") }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { throw error("invalid literal") }
            index += count
        }

        mutating func object(depth: Int) throws(Error) -> JSONValue {
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                let start = index
                let key = try string()
                if uniqueKeys, members[key] != nil {
                    index = start
                    throw error("the key \"\(key)\" appears twice in one object")
                }
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
                index += 1
                skipWhitespace()
                members[key] = try value(depth: depth + 1)
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(Error) -> JSONValue {
            index += 1
            var elements: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func string() throws(Error) -> String {
            index += 1
            let start = index
            // Fast path: no escapes.
            while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\"), bytes[index] >= 0x20 {
                index += 1
            }
            guard index < bytes.count else { throw error("unterminated string") }
            if bytes[index] == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                index += 1
                guard let text = String(validating: slice, as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
                return text
            }
            var scalars = Array(bytes[start..<index])
            while true {
                guard index < bytes.count else { throw error("unterminated string") }
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") { index += 1; break }
                guard byte >= 0x20 else { throw error("control character in a string") }
                if byte != UInt8(ascii: "\\") { scalars.append(byte); index += 1; continue }
                index += 1
                guard index < bytes.count else { throw error("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append(0x22)
                case UInt8(ascii: "\\"): scalars.append(0x5C)
                case UInt8(ascii: "/"): scalars.append(0x2F)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        let pairs = index + 1 < bytes.count && bytes[index] == UInt8(ascii: "\\") && bytes[index + 1] == UInt8(ascii: "u")
                        let low: UInt32? = if pairs { try lowSurrogate() } else { nil }
                        if let low {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else if replacingLoneSurrogates {
                            code = 0xFFFD
                        } else {
                            throw error("unpaired surrogate")
                        }
                    } else if (0xDC00...0xDFFF).contains(code) {
                        guard replacingLoneSurrogates else { throw error("unpaired surrogate") }
                        code = 0xFFFD
                    }
                    scalars.append(contentsOf: String(Character(Unicode.Scalar(code)!)).utf8)
                default: throw error("invalid escape")
                }
            }
            guard let text = String(validating: scalars, as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
            return text
        }

        mutating func hex4() throws(Error) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("short \\u escape") }
            var code: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - 48)
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - 87)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - 55)
                default: throw error("invalid \\u escape")
                }
                code = code << 4 | digit
                index += 1
            }
            return code
        }

        /// After a high surrogate, with `\u` next: the low one it pairs with (read), or nil — with
        /// `replacingLoneSurrogates`, the escape is left to be read on its own.
        mutating func lowSurrogate() throws(Error) -> UInt32? {
            let mark = index
            index += 2
            let low = try hex4()
            if (0xDC00...0xDFFF).contains(low) { return low }
            guard replacingLoneSurrogates else { throw error("unpaired surrogate") }
            index = mark
            return nil
        }

        mutating func number() throws(Error) -> JSONValue {
            let start = index
            var isInteger = true
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, (48...57).contains(bytes[index]) else { throw error("invalid number") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                isInteger = false
                index += 1
                guard index < bytes.count, (48...57).contains(bytes[index]) else { throw error("invalid number") }
                while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                isInteger = false
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, (48...57).contains(bytes[index]) else { throw error("invalid number") }
                while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let integer = Int64(text) { return .int(integer) }
            if isInteger, exactIntegers {
                index = start
                throw error(Error.inexactInteger)
            }
            guard let double = Double(text), double.isFinite else { throw error("number out of range") }
            return .double(double)
        }
    }
}
