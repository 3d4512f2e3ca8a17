/// The JSON Schema subset that job types use to check input before a job is accepted.
///
/// Supported keywords: `type` (a name or a list), `properties`, `required`,
/// `additionalProperties` (boolean), `items`, `minItems`, `maxItems`, `enum`, `const`,
/// `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`;
/// annotations (`title`, `description`, `default`, `examples`, `$schema`, `$id`, `$comment`)
/// are accepted and ignored. Any other keyword is refused when the configuration loads, so a
/// schema never silently checks less than its author thinks.
public indirect enum InputSchema: Sendable {
    case schema(Rules)

    public struct Rules: Sendable {
        public var types: [String]?
        public var properties: [String: InputSchema] = [:]
        public var required: [String] = []
        public var additionalProperties: Bool = true
        public var items: InputSchema?
        public var minItems: Int?
        public var maxItems: Int?
        public var allowed: [JSONValue]?
        public var minimum: Double?
        public var maximum: Double?
        public var exclusiveMinimum: Double?
        public var exclusiveMaximum: Double?
        public var minLength: Int?
        public var maxLength: Int?
    }

    public struct Violation: Sendable, Hashable, CustomStringConvertible {
        /// A JSON Pointer to the offending value (`""` is the whole input).
        public var pointer: String
        public var message: String
        public var description: String { pointer.isEmpty ? message : "\(pointer): \(message)" }
    }

    public struct DefinitionError: Error, CustomStringConvertible {
        public var description: String
    }

    static let knownTypes: Set<String> = ["object", "array", "string", "integer", "number", "boolean", "null"]
    static let annotations: Set<String> = ["title", "description", "default", "examples", "$schema", "$id", "$comment"]

    /// Reads a schema, refusing what this subset cannot check.
    public init(_ value: JSONValue, at path: String = "input_schema") throws {
        guard case .object(let object) = value else {
            throw DefinitionError(description: "\(path) must be an object")
        }
        var rules = Rules()
        for (key, keyword) in object {
            switch key {
            case "type":
                let names: [String]
                switch keyword {
                case .string(let name): names = [name]
                case .array(let list): names = list.compactMap(\.stringValue)
                    guard names.count == list.count else { fallthrough }
                default: throw DefinitionError(description: "\(path).type must be a type name or a list of them")
                }
                for name in names where !Self.knownTypes.contains(name) {
                    throw DefinitionError(description: "\(path).type: unknown type \"\(name)\"")
                }
                rules.types = names
            case "properties":
                guard case .object(let properties) = keyword else {
                    throw DefinitionError(description: "\(path).properties must be an object")
                }
                for (name, schema) in properties {
                    rules.properties[name] = try InputSchema(schema, at: "\(path).properties.\(name)")
                }
            case "required":
                guard case .array(let list) = keyword, list.allSatisfy({ $0.stringValue != nil }) else {
                    throw DefinitionError(description: "\(path).required must be a list of property names")
                }
                rules.required = list.compactMap(\.stringValue)
            case "additionalProperties":
                guard case .bool(let flag) = keyword else {
                    throw DefinitionError(description: "\(path).additionalProperties must be true or false")
                }
                rules.additionalProperties = flag
            case "items": rules.items = try InputSchema(keyword, at: "\(path).items")
            case "enum":
                guard case .array(let list) = keyword else { throw DefinitionError(description: "\(path).enum must be a list") }
                rules.allowed = list
            case "const": rules.allowed = [keyword]
            case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
                guard let number = keyword.doubleValue else { throw DefinitionError(description: "\(path).\(key) must be a number") }
                switch key {
                case "minimum": rules.minimum = number
                case "maximum": rules.maximum = number
                case "exclusiveMinimum": rules.exclusiveMinimum = number
                default: rules.exclusiveMaximum = number
                }
            case "minLength", "maxLength", "minItems", "maxItems":
                guard let number = keyword.intValue, number >= 0 else {
                    throw DefinitionError(description: "\(path).\(key) must be a non-negative integer")
                }
                switch key {
                case "minLength": rules.minLength = Int(number)
                case "maxLength": rules.maxLength = Int(number)
                case "minItems": rules.minItems = Int(number)
                default: rules.maxItems = Int(number)
                }
            case _ where Self.annotations.contains(key): continue
            default:
                throw DefinitionError(description: "\(path): the keyword \"\(key)\" is not supported (see the README's config reference)")
            }
        }
        self = .schema(rules)
    }

    /// Every way `value` breaks the schema; empty when it conforms.
    public func violations(of value: JSONValue, at pointer: String = "") -> [Violation] {
        guard case .schema(let rules) = self else { return [] }
        var found: [Violation] = []
        if let types = rules.types, !types.contains(where: { Self.matches(value, type: $0) }) {
            let expected = types.count == 1 ? types[0] : "one of " + types.joined(separator: ", ")
            return [Violation(pointer: pointer, message: "must be \(expected), not \(value.typeName)")]
        }
        if let allowed = rules.allowed, !allowed.contains(where: { Self.equal($0, value) }) {
            found.append(Violation(pointer: pointer, message: "must be one of " + allowed.map(\.canonicalText).joined(separator: ", ")))
        }
        switch value {
        case .object(let object):
            for name in rules.required where object[name] == nil {
                found.append(Violation(pointer: pointer, message: "is missing the required property \"\(name)\""))
            }
            for (name, member) in object.sorted(by: { $0.key < $1.key }) {
                let memberPointer = pointer + "/" + Self.escape(name)
                if let schema = rules.properties[name] {
                    found += schema.violations(of: member, at: memberPointer)
                } else if !rules.additionalProperties {
                    found.append(Violation(pointer: memberPointer, message: "is not an allowed property"))
                }
            }
        case .array(let list):
            if let min = rules.minItems, list.count < min { found.append(Violation(pointer: pointer, message: "must have at least \(min) items")) }
            if let max = rules.maxItems, list.count > max { found.append(Violation(pointer: pointer, message: "must have at most \(max) items")) }
            if let items = rules.items {
                for (index, element) in list.enumerated() { found += items.violations(of: element, at: "\(pointer)/\(index)") }
            }
        case .string(let text):
            let length = text.count
            if let min = rules.minLength, length < min { found.append(Violation(pointer: pointer, message: "must be at least \(min) characters long")) }
            if let max = rules.maxLength, length > max { found.append(Violation(pointer: pointer, message: "must be at most \(max) characters long")) }
        case .int, .double:
            let number = value.doubleValue!
            if let min = rules.minimum, number < min { found.append(Violation(pointer: pointer, message: "must be ≥ \(Self.format(min))")) }
            if let max = rules.maximum, number > max { found.append(Violation(pointer: pointer, message: "must be ≤ \(Self.format(max))")) }
            if let min = rules.exclusiveMinimum, number <= min { found.append(Violation(pointer: pointer, message: "must be > \(Self.format(min))")) }
            if let max = rules.exclusiveMaximum, number >= max { found.append(Violation(pointer: pointer, message: "must be < \(Self.format(max))")) }
        case .null, .bool: break
        }
        return found
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch type {
        case "number": value.doubleValue != nil
        default: value.typeName == type
        }
    }

    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if let x = a.doubleValue, let y = b.doubleValue { return x == y }
        return a == b
    }

    static func escape(_ name: String) -> String {
        name.replacingAll("~", with: "~0").replacingAll("/", with: "~1")
    }

    public static func format(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }
}

extension String {
    /// `replacingOccurrences` without Foundation.
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for character in self { if character == target { out += replacement } else { out.append(character) } }
        return out
    }
}
