/// A job type's argv with `{input.KEY}` placeholders.
///
/// A placeholder fills *part of one argument* with a scalar from the job's input
/// (`--size={input.size}` → `--size=512`); arguments are never split or joined, and no shell
/// is involved, so input cannot inject commands. Nor options: a string that would begin an
/// argument with `-` is refused (the program would read it as an option: found by attacking
/// the build, `tar -xf a.tar {input.member}` ran `--to-command=id`), unless a literal `--`
/// argument comes before it in the command, the usual end of options. `{input.a.b}` reaches into nested
/// objects. Every other brace is literal (`${HOME}`, JSON in a script); `{{input.x}}` is the
/// literal text `{input.x}`.
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
    /// The executable, when the command names it without a placeholder.
    public var fixedExecutable: String? {
        guard let first = arguments.first else { return nil }
        var text = ""
        for piece in first {
            guard case .literal(let part) = piece else { return nil }
            text += part
        }
        return text
    }

    public func render(input: JSONValue) throws(Error) -> [String] {
        var argv: [String] = []
        var optionsEnded = false
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
                    case .string(let text)?:
                        // A NUL would end the argument early in the kernel's argv: refuse, never cut.
                        guard !text.utf8.contains(0) else {
                            throw Error(description: "\(placeholder) contains a NUL character, which cannot be put in a command argument")
                        }
                        // Whatever came before it in the argument may have been empty too.
                        guard !argument.isEmpty || optionsEnded || !text.hasPrefix("-") else {
                            throw Error(description: "\(placeholder) may not begin with \"-\": it begins an argument of the command, which "
                                + "would read it as an option (a type whose command takes such values puts a \"--\" argument before them)")
                        }
                        argument += text
                    case .int(let number)?: argument += String(number)
                    case .double(let number)?: argument += InputSchema.format(number)
                    case .bool(let flag)?: argument += flag ? "true" : "false"
                    case nil, .null?: throw Error(description: "the command needs \(placeholder) but the input has no such value")
                    default: throw Error(description: "\(placeholder) must be a string, number or boolean to be put in the command")
                    }
                }
            }
            if pieces == [.literal("--")] { optionsEnded = true }
            argv.append(argument)
        }
        return argv
    }

    static func parse(_ argument: String) throws(Error) -> [Piece] {
        var pieces: [Piece] = []
        var literal = ""
        var rest = Substring(argument)
        while let open = rest.firstRange(of: "{input.") {
            let escaped = open.lowerBound > rest.startIndex && rest[rest.index(before: open.lowerBound)] == "{"
            literal += rest[..<(escaped ? rest.index(before: open.lowerBound) : open.lowerBound)]
            let afterName = rest[open.upperBound...]
            guard let close = afterName.firstIndex(of: "}") else {
                throw Error(description: "unclosed placeholder in command argument \"\(argument)\" (write {input.KEY})")
            }
            let name = afterName[..<close]
            if escaped {
                // `{{input.x}}` is the literal text `{input.x}`.
                guard afterName[afterName.index(after: close)...].hasPrefix("}") else {
                    throw Error(description: "unbalanced {{ in command argument \"\(argument)\" (write {{input.KEY}} for the literal text)")
                }
                literal += "{input." + name + "}"
                rest = afterName[afterName.index(close, offsetBy: 2)...]
                continue
            }
            let path = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard path.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } }) else {
                throw Error(description: "bad placeholder {input.\(name)} in command argument \"\(argument)\" (keys use letters, digits, _ and -, joined by dots)")
            }
            if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
            pieces.append(.input(path))
            rest = afterName[afterName.index(after: close)...]
        }
        literal += rest
        if !literal.isEmpty || pieces.isEmpty { pieces.append(.literal(literal)) }
        return pieces
    }
}
