// InputSchemaTests: every supported keyword accepts and rejects with a JSON Pointer to the
// offending value; unsupported keywords fail when the schema loads; annotations are ignored.

import Testing
import SpoolCore

@Suite struct InputSchemaTests {
    private func schema(_ text: String) throws -> InputSchema { try InputSchema(json(text)) }

    private func pointers(_ schemaText: String, _ valueText: String) throws -> [String] {
        try schema(schemaText).violations(of: json(valueText)).map(\.pointer)
    }

    @Test func typeAcceptsTheNamedTypeAndRejectsOthers() throws {
        #expect(try pointers(#"{"type":"string"}"#, #""x""#).isEmpty)
        #expect(try pointers(#"{"type":"string"}"#, "3") == [""])
        #expect(try pointers(#"{"type":"object"}"#, "{}").isEmpty)
        #expect(try pointers(#"{"type":"array"}"#, "{}") == [""])
        #expect(try pointers(#"{"type":"boolean"}"#, "true").isEmpty)
        #expect(try pointers(#"{"type":"null"}"#, "null").isEmpty)
        #expect(try pointers(#"{"type":"null"}"#, "false") == [""])
        let message = try schema(#"{"type":"string"}"#).violations(of: .int(3)).first?.message
        #expect(message == "must be string, not integer")
    }

    @Test func typeListAcceptsAnyOfItsNames() throws {
        #expect(try pointers(#"{"type":["string","null"]}"#, "null").isEmpty)
        #expect(try pointers(#"{"type":["string","null"]}"#, #""a""#).isEmpty)
        let violations = try schema(#"{"type":["string","null"]}"#).violations(of: .bool(true))
        #expect(violations.map(\.message) == ["must be one of string, null, not boolean"])
    }

    @Test func wholeNumbersCountAsIntegersAndEveryNumberAsNumber() throws {
        let integer = try schema(#"{"type":"integer"}"#)
        #expect(integer.violations(of: .int(3)).isEmpty)
        #expect(integer.violations(of: .double(3.0)).isEmpty, "3.0 is an integer in JSON Schema")
        #expect(integer.violations(of: .double(3.5)).count == 1)
        #expect(integer.violations(of: .string("3")).count == 1)
        let number = try schema(#"{"type":"number"}"#)
        #expect(number.violations(of: .int(3)).isEmpty)
        #expect(number.violations(of: .double(3.5)).isEmpty)
        #expect(number.violations(of: .bool(true)).count == 1)
    }

    @Test func propertiesReportNestedPointers() throws {
        let text = #"{"type":"object","properties":{"scene":{"type":"object","properties":{"size":{"type":"integer"}}}}}"#
        #expect(try pointers(text, #"{"scene":{"size":"big"}}"#) == ["/scene/size"])
        #expect(try pointers(text, #"{"scene":{"size":4}}"#).isEmpty)
    }

    @Test func pointersEscapeTildeAndSlash() throws {
        let text = #"{"properties":{"a/b":{"type":"string"},"c~d":{"type":"string"}}}"#
        #expect(try pointers(text, #"{"a/b":1,"c~d":2}"#) == ["/a~1b", "/c~0d"])
    }

    @Test func requiredNamesEachMissingProperty() throws {
        let violations = try schema(#"{"required":["a","b"]}"#).violations(of: json(#"{"a":1}"#))
        #expect(violations.map(\.pointer) == [""])
        #expect(violations.first?.message.contains("\"b\"") == true)
        #expect(try pointers(#"{"required":["a","b"]}"#, #"{"a":1,"b":null}"#).isEmpty)
    }

    @Test func additionalPropertiesFalseRejectsUnlistedNames() throws {
        let text = #"{"properties":{"a":{}},"additionalProperties":false}"#
        #expect(try pointers(text, #"{"a":1,"zz":2}"#) == ["/zz"])
        #expect(try pointers(text, #"{"a":1}"#).isEmpty)
        #expect(try pointers(#"{"properties":{"a":{}}}"#, #"{"zz":2}"#).isEmpty, "allowed by default")
    }

    @Test func itemsChecksEachElementWithItsIndex() throws {
        let text = #"{"type":"array","items":{"type":"integer","minimum":0}}"#
        #expect(try pointers(text, "[1, -1, 2, \"x\"]") == ["/1", "/3"])
        let nested = #"{"properties":{"list":{"items":{"properties":{"n":{"type":"string"}}}}}}"#
        #expect(try pointers(nested, #"{"list":[{"n":"ok"},{"n":5}]}"#) == ["/list/1/n"])
    }

    @Test func minItemsAndMaxItemsBoundTheLength() throws {
        let text = #"{"minItems":1,"maxItems":2}"#
        #expect(try pointers(text, "[]") == [""])
        #expect(try pointers(text, "[1]").isEmpty)
        #expect(try pointers(text, "[1,2]").isEmpty)
        #expect(try pointers(text, "[1,2,3]") == [""])
    }

    @Test func enumAndConstCompareValuesNumerically() throws {
        let text = #"{"enum":["low","high",3]}"#
        #expect(try pointers(text, #""low""#).isEmpty)
        #expect(try pointers(text, "3.0").isEmpty)
        #expect(try pointers(text, #""medium""#) == [""])
        #expect(try schema(text).violations(of: .string("x")).first?.message == #"must be one of "low", "high", 3"#)
        #expect(try pointers(#"{"const":{"a":[1,2]}}"#, #"{"a":[1,2]}"#).isEmpty)
        #expect(try pointers(#"{"const":{"a":[1,2]}}"#, #"{"a":[2,1]}"#) == [""])
    }

    @Test func numericBoundsAreInclusiveOrExclusiveAsNamed() throws {
        let inclusive = #"{"minimum":1,"maximum":10}"#
        #expect(try pointers(inclusive, "1").isEmpty)
        #expect(try pointers(inclusive, "10").isEmpty)
        #expect(try pointers(inclusive, "0.5") == [""])
        #expect(try pointers(inclusive, "11") == [""])
        let exclusive = #"{"exclusiveMinimum":1,"exclusiveMaximum":10}"#
        #expect(try pointers(exclusive, "1") == [""])
        #expect(try pointers(exclusive, "10") == [""])
        #expect(try pointers(exclusive, "1.5").isEmpty)
        #expect(try schema(inclusive).violations(of: .int(0)).first?.message == "must be ≥ 1")
        #expect(try pointers(inclusive, #""not a number""#).isEmpty, "bounds apply to numbers only")
    }

    @Test func stringLengthIsBounded() throws {
        let text = #"{"minLength":2,"maxLength":3}"#
        #expect(try pointers(text, #""a""#) == [""])
        #expect(try pointers(text, #""ab""#).isEmpty)
        #expect(try pointers(text, #""abc""#).isEmpty)
        #expect(try pointers(text, #""abcd""#) == [""])
    }

    @Test func everyViolationIsReportedNotJustTheFirst() throws {
        let text = #"""
        {"type":"object","required":["size"],"additionalProperties":false,
         "properties":{"name":{"type":"string","maxLength":2},"n":{"type":"integer","minimum":0}}}
        """#
        let found = try pointers(text, #"{"name":"long","n":-1,"x":true}"#)
        #expect(Set(found) == ["", "/name", "/n", "/x"])
    }

    @Test func descriptionPrefixesThePointer() throws {
        let violation = try #require(schema(#"{"properties":{"a":{"type":"string"}}}"#).violations(of: json(#"{"a":1}"#)).first)
        #expect(violation.description == "/a: must be string, not integer")
    }

    @Test func annotationsAreAcceptedAndIgnored() throws {
        let text = #"""
        {"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","$comment":"c","title":"T",
         "description":"D","default":5,"examples":[1],"type":"integer"}
        """#
        #expect(try pointers(text, "7").isEmpty)
        #expect(try pointers(text, #""x""#) == [""])
    }

    @Test(arguments: [
        #"{"pattern":"^a"}"#, #"{"oneOf":[{}]}"#, #"{"anyOf":[{}]}"#, ##"{"$ref":"#/x"}"##,
        #"{"properties":{"a":{"format":"email"}}}"#, #"{"items":{"allOf":[]}}"#,
    ])
    func unsupportedKeywordsFailWhenTheSchemaLoads(text: String) throws {
        #expect(throws: InputSchema.DefinitionError.self) { try InputSchema(json(text)) }
    }

    @Test func unsupportedKeywordErrorNamesThePathAndKeyword() throws {
        let value = try json(#"{"properties":{"name":{"pattern":"^a"}}}"#)
        #expect {
            try InputSchema(value)
        } throws: { error in
            let description = (error as? InputSchema.DefinitionError)?.description ?? ""
            return description.contains("input_schema.properties.name") && description.contains("\"pattern\"")
        }
    }

    @Test(arguments: [
        #"{"type":"float"}"#, #"{"type":[1]}"#, #"{"type":3}"#, #"{"required":"a"}"#, #"{"required":[1]}"#,
        #"{"additionalProperties":{}}"#, #"{"minimum":"1"}"#, #"{"minLength":-1}"#, #"{"maxItems":1.5}"#,
        #"{"enum":"a"}"#, #"{"properties":[]}"#, "[]", "true",
    ])
    func malformedKeywordValuesFailWhenTheSchemaLoads(text: String) throws {
        #expect(throws: InputSchema.DefinitionError.self) { try InputSchema(json(text)) }
    }

    @Test func emptySchemaAcceptsAnything() throws {
        let empty = try schema("{}")
        for text in ["null", "1", "2.5", #""s""#, "[1]", #"{"a":{}}"#, "false"] {
            #expect(try empty.violations(of: json(text)).isEmpty, "\(text)")
        }
    }
}
