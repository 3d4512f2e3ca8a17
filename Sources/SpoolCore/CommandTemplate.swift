/// A job type's argv with `{input.KEY}` placeholders.
///
/// A placeholder fills *part of one argument* with a scalar from the job's input
/// (`--size={input.size}` → `--size=512`); arguments are never split or joined, and no shell
/// is involved, so input cannot inject flags or commands. `{input.a.b}` reaches into nested
/// objects. `{{` and `}}` are literal braces.
public struct CommandTemplate: Sendable, Hashable {
    enum Piece: Sendable, Hashable {
        case literal(String)
        case input([String])
    }

    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    let arguments: [[Piece]]

    public init(_ argv: [String]) throws {
        guard let first = argv.first, !first.isEmpty else {
            throw Error(description: "command must be a non-empty list of strings (an argv, run without a shell)")
        }
        arguments = try argv.map(Self.parse)
    }

    /// The input keys the command reads (dotted paths), so submits can be checked up front.
    public var referencedKeys: [String] {
        arguments.flatMap { $0 }.compactMap { if case .input(let path) = $0 { path.joined(separator: ".") } else { nil } }
    }

    /// The argv for a job with this input, or an error naming the placeholder that cannot be filled.
    public func render(input: JSONValue) throws(Error) -> [String] {
        var argv: [String] = []
        for pieces in arguments {
            var argument = ""
            for piece in pieces {
                switch piece {
                case .literal(let text): argument += text
                case .input(let path):
                    var value: JSONValue? = input
                    for key in path { value = value?[key] }
                    let placeholder = "{input.\(path.joined(separator: "."))}"
                    switch value {
                    case .string(let text)?: argument += text
                    case .int(let number)?: argument += String(number)
                    case .double(let number)?: argument += InputSchema.format(number)
                    case .bool(let flag)?: argument += flag ? "true" : "false"
                    case nil, .null?: throw Error(description: "the command needs \(placeholder) but the input has no such value")
                    default: throw Error(description: "\(placeholder) must be a string, number or boolean to be put in the command")
                    }
                }
            }
            argv.append(argument)
        }
        return argv
    }

    static func parse(_ argument: String) throws -> [Piece] {
        var pieces: [Piece] = []
        var literal = ""
        var index = argument.startIndex
        while index < argument.endIndex {
            let character = argument[index]
            let next = argument.index(after: index)
            if character == "{" && next < argument.endIndex && argument[next] == "{" {
                literal.append("{"); index = argument.index(after: next); continue
            }
            if character == "}" && next < argument.endIndex && argument[next] == "}" {
                literal.append("}"); index = argument.index(after: next); continue
            }
            if character == "{" {
                guard let close = argument[next...].firstIndex(of: "}") else {
                    throw Error(description: "unclosed \"{\" in command argument \"\(argument)\" (write {{ for a literal brace)")
                }
                let name = String(argument[next..<close])
                let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 2, parts[0] == "input", parts.dropFirst().allSatisfy({ !$0.isEmpty }) else {
                    throw Error(description: "unknown placeholder {\(name)} in command argument \"\(argument)\" (only {input.KEY} is supported)")
                }
                if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
                pieces.append(.input(Array(parts.dropFirst())))
                index = argument.index(after: close)
                continue
            }
            if character == "}" {
                throw Error(description: "stray \"}\" in command argument \"\(argument)\" (write }} for a literal brace)")
            }
            literal.append(character)
            index = next
        }
        if !literal.isEmpty || pieces.isEmpty { pieces.append(.literal(literal)) }
        return pieces
    }
}
