// JSONValueTests: canonical text (sorted, compact, escaped) and decoding that keeps
// integers apart from doubles; JobMessageTests: the worker protocol's message lines.

import Foundation
import Testing
import SpoolCore

@Suite struct JSONValueTests {
    @Test func canonicalTextSortsKeysAtEveryLevelAndIsCompact() throws {
        let value = try json(#" { "b" : [ 1 , { "z" : null , "a" : true } ] , "a" : "x" } "#)
        #expect(value.canonicalText == #"{"a":"x","b":[1,{"a":true,"z":null}]}"#)
    }

    /// Half a surrogate pair is an error, unless the caller asks for U+FFFD (a worker's message:
    /// Python's `json.dumps` of a file name from `os.listdir` writes one; found by attacking the
    /// build, the whole `succeeded` was dropped). A pair is one character either way.
    @Test func loneSurrogatesFailOrReadAsReplacementCharacters() throws {
        for text in [#""\udce9""#, #""caf\ud800""#, #""\ud800\u0041""#, #""\ud800\ud800""#] {
            #expect(throws: JSONParser.Error.self, "\(text)") { try JSONParser.parse(Array(text.utf8)) }
        }
        func lenient(_ text: String) throws -> String? { try JSONParser.parse(Array(text.utf8), replacingLoneSurrogates: true).stringValue }
        #expect(try lenient(#""caf\udce9.png""#) == "caf\u{FFFD}.png")
        #expect(try lenient(#""\ud800""#) == "\u{FFFD}")
        #expect(try lenient(#""\ud800\u0041""#) == "\u{FFFD}A")
        #expect(try lenient(#""\ud800\ud83d\ude00""#) == "\u{FFFD}😀")
        #expect(try lenient(#""\ud83d\ude00""#) == "😀")
        #expect(try JSONParser.parse(Array(#""\ud83d\ude00""#.utf8)).stringValue == "😀")
        let message = try WorkerMessage(line: Array(#"{"type":"succeeded","job":"j","result":{"file":"caf\udce9"}}"#.utf8))
        #expect(message == .succeeded(job: "j", result: .object(["file": .string("caf\u{FFFD}")])))
        #expect(throws: JobMessage.Malformed.self) { try WorkerMessage(line: Array(#"{"type":"succ"#.utf8)) }
    }

    @Test func equalValuesHaveEqualCanonicalText() throws {
        let one = try json(#"{"x":1,"y":{"q":[1,2],"p":false}}"#)
        let two = try json(#"{"y":{"p":false,"q":[1,2]},"x":1}"#)
        #expect(one.canonicalText == two.canonicalText)
    }

    @Test func stringsEscapeQuotesBackslashesAndControlCharacters() {
        let text = JSONValue.string("q\"b\\n\nr\rt\t\u{01}\u{1f} é😀").canonicalText
        #expect(text == #""q\"b\\n\nr\rt\t\u0001\u001f é😀""#)
        #expect(JSONValue.object(["k\n": .null]).canonicalText == #"{"k\n":null}"#)
    }

    @Test func canonicalTextIsValidJSONThatDecodesToTheSameValue() throws {
        let value: JSONValue = .object([
            "s": .string("line\u{0}\u{7}"), "i": .int(-42), "d": .double(0.1), "big": .int(Int64.max),
            "a": .array([.bool(false), .null, .double(-2.5e-8)]), "o": .object([:]),
        ])
        #expect(try json(value.canonicalText) == value)
    }

    @Test func wholeDoublesAreWrittenAsIntegers() {
        #expect(JSONValue.double(3.0).canonicalText == "3")
        #expect(JSONValue.double(-0.0).canonicalText == "0")
        #expect(JSONValue.double(2.5).canonicalText == "2.5")
    }

    @Test func decodingKeepsIntegersAsInts() throws {
        #expect(try json("3") == .int(3))
        #expect(try json("-9007199254740993") == .int(-9_007_199_254_740_993))
        #expect(try json("3.5") == .double(3.5))
        #expect(try json("true") == .bool(true))
        #expect(try json("0") == .int(0), "0 is a number, not false")
        #expect(try json("1") == .int(1), "1 is a number, not true")
        #expect(try json(#"{"size":3}"#)["size"] == .int(3))
        #expect(try json("[null]") == .array([.null]))
    }

    @Test func encodingRoundTripsThroughJSONEncoder() throws {
        let value: JSONValue = .object(["n": .int(7), "f": .double(1.25), "t": .string("x"), "l": .array([.bool(true), .null])])
        let data = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: data) == value)
    }

    @Test func accessorsAndTypeNames() {
        #expect(JSONValue.int(3).intValue == 3)
        #expect(JSONValue.double(3.0).intValue == 3)
        #expect(JSONValue.double(3.5).intValue == nil)
        #expect(JSONValue.int(3).doubleValue == 3)
        #expect(JSONValue.string("3").doubleValue == nil)
        #expect(JSONValue.double(3.0).typeName == "integer")
        #expect(JSONValue.double(3.5).typeName == "number")
        #expect(JSONValue.double(.infinity).typeName == "number")
        #expect(JSONValue.object(["a": .int(1)])["a"] == .int(1))
        #expect(JSONValue.array([])["a"] == nil)
    }
}

@Suite struct JobMessageTests {
    func message(_ text: String) throws -> JobMessage { try JobMessage(line: Array(text.utf8)) }

    @Test func progressLineIsParsed() throws {
        let parsed = try message(#"{"type":"progress","fraction":0.25,"message":"row 60 of 240"}"#)
        #expect(parsed == .progress(JobProgress(fraction: 0.25, message: "row 60 of 240")))
        #expect(try message(#"{"type":"progress","fraction":1}"#) == .progress(JobProgress(fraction: 1)))
    }

    @Test func progressFractionIsClamped() throws {
        #expect(try message(#"{"type":"progress","fraction":1.7}"#) == .progress(JobProgress(fraction: 1)))
        #expect(try message(#"{"type":"progress","fraction":-3}"#) == .progress(JobProgress(fraction: 0)))
    }

    /// A fraction outside 0…1 is clamped and said once, so a job that sends a percentage (25 for
    /// 25 %) learns why its bar jumped to the end (it was clamped without a word).
    @Test func aFractionOutsideTheRangeIsSaid() throws {
        var notes: [String] = []
        let parsed = try JobMessage(line: Array(#"{"type":"progress","fraction":25}"#.utf8)) { notes.append($0) }
        #expect(parsed == .progress(JobProgress(fraction: 1)))
        #expect(notes == [#"a progress "fraction" of 25 is outside 0…1 and reads as 1 (send 0.25 for 25 %)"#])
        notes = []
        _ = try JobMessage(line: Array(#"{"type":"progress","fraction":-0.5}"#.utf8)) { notes.append($0) }
        #expect(notes == [#"a progress "fraction" of -0.5 is outside 0…1 and reads as 0"#])
        notes = []
        for fraction in ["0", "0.5", "1", "1.0000000001", "-0.0000000001"] {
            _ = try JobMessage(line: Array(#"{"type":"progress","fraction":\#(fraction)}"#.utf8)) { notes.append($0) }
        }
        #expect(notes.isEmpty, "rounding at the ends is no mistake")
        notes = []
        _ = try WorkerMessage(line: Array(#"{"type":"progress","job":"job_1","fraction":50}"#.utf8)) { notes.append($0) }
        #expect(notes == [#"a progress "fraction" of 50 is outside 0…1 and reads as 1 (send 0.5 for 50 %)"#])
    }

    /// A refused line is quoted in its note (the start of it, control characters escaped), so the
    /// job's author sees what was sent, not only what was wrong with it.
    @Test func aRefusedLineIsQuoted() {
        #expect(JobMessage.quoted(Array("not json".utf8)) == #""not json""#)
        #expect(JobMessage.quoted(Array("a\tb\u{1}\"c".utf8)) == #""a\tb\u{01}\"c""#)
        #expect(JobMessage.quoted(Array(repeating: UInt8(ascii: "x"), count: 300)) == "\"" + String(repeating: "x", count: 120) + "\"… (300 bytes)")
        #expect(JobMessage.quoted(Array(repeating: UInt8(ascii: "x"), count: 4097)) == "\"" + String(repeating: "x", count: 120) + "\"… (over 4096 bytes)",
                "a line past the limit reaches here cut one byte past it")
        // A character the cut at 120 bytes went through is left out, not shown as U+FFFD.
        let accents = Array(String(repeating: "é", count: 100).utf8)   // 2 bytes each: the cut falls after a whole one
        #expect(JobMessage.quoted(Array(("x" + String(repeating: "é", count: 100)).utf8))
                == "\"x" + String(repeating: "é", count: 59) + "\"… (201 bytes)")
        #expect(JobMessage.quoted(accents) == "\"" + String(repeating: "é", count: 60) + "\"… (200 bytes)")
        #expect(JobMessage.quoted(Array("a\u{85}b".utf8)) == #""a\u{85}b""#, "C1 controls are escaped too")
    }

    @Test func progressMessageIsCutTo500Characters() throws {
        let long = String(repeating: "é", count: 600)
        guard case .progress(let progress) = try message(#"{"type":"progress","fraction":0.5,"message":"\#(long)"}"#) else {
            Issue.record("expected progress")
            return
        }
        #expect(progress.message?.count == 500)
    }

    @Test func unknownTypeIsKeptAsUnknown() throws {
        #expect(try message(#"{"type":"ready","worker":3}"#) == .unknown(type: "ready"))
    }

    @Test(arguments: [
        "", "not json", "[1,2]", #"{"fraction":0.5}"#, #"{"type":3}"#, #"{"type":"progress"}"#,
        #"{"type":"progress","fraction":"half"}"#, #"{"type":"progress","fraction":null}"#, #"{"type":"progress""#,
    ])
    func malformedLinesThrow(line: String) {
        #expect(throws: JobMessage.Malformed.self) { try message(line) }
    }

    /// A progress message with a field of the wrong kind says which field (found by attacking the
    /// build: `"message": 42` read as "not a JSON object with a \"type\"", although it had one).
    @Test(arguments: [
        (#"{"type":"progress","fraction":0.5,"message":42}"#, #"a progress message's "message" must be a string"#),
        (#"{"type":"progress","fraction":"half"}"#, #"a progress message needs a numeric "fraction" between 0 and 1"#),
        (#"{"type":"progress","fraction":0.5,"message":null}"#, nil),
        (#"{"type":7}"#, #"not a JSON object with a "type""#),
    ])
    func aWrongFieldIsNamed(line: String, said: String?) {
        do throws(JobMessage.Malformed) {
            _ = try JobMessage(line: Array(line.utf8))
            #expect(said == nil, "accepted")
        } catch {
            #expect(error.description == said, "\(line)")
        }
    }
}
