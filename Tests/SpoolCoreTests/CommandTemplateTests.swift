// CommandTemplateTests: placeholders fill part of one argument and never split or join
// arguments; braces that are not {input.KEY} are literal; a malformed {input.…} fails when
// parsed, input the command cannot use when rendered.

import Testing
import SpoolCore

@Suite struct CommandTemplateTests {
    @Test func placeholderFillsPartOfOneArgument() throws {
        let template = try CommandTemplate(["render", "--size={input.size}", "{input.name}.png"])
        let argv = try template.render(input: json(#"{"size":512,"name":"scene"}"#))
        #expect(argv == ["render", "--size=512", "scene.png"])
    }

    @Test func inputWithSpacesStaysOneArgument() throws {
        let template = try CommandTemplate(["echo", "{input.text}"])
        #expect(try template.render(input: .object(["text": .string("a b")])) == ["echo", "a b"])
    }

    @Test func shellSyntaxInInputStaysLiteral() throws {
        let template = try CommandTemplate(["tool", "--flag={input.x}"])
        let hostile = "--x; rm -rf / && $(reboot) `id` | cat > /etc/passwd"
        #expect(try template.render(input: .object(["x": .string(hostile)])) == ["tool", "--flag=" + hostile])
    }

    /// A string that would begin an argument with "-" is refused: the program would read it as
    /// an option (found by attacking the build: `tar -xf a.tar {input.member}` with the member
    /// `--to-command=id` ran `id`). Past a literal `--`, where options end, it is taken; so are
    /// negative numbers, and a "-" inside an argument.
    @Test func inputCannotBeginAnArgumentAsAnOption() throws {
        let template = try CommandTemplate(["tar", "-xf", "a.tar", "{input.member}"])
        #expect(try template.render(input: .object(["member": .string("m.txt")])) == ["tar", "-xf", "a.tar", "m.txt"])
        for hostile in ["--to-command=id", "-la", "-"] {
            #expect(throws: CommandTemplate.Error.self, "\(hostile)") { try template.render(input: .object(["member": .string(hostile)])) }
        }
        let refusal = #expect(throws: CommandTemplate.Error.self) { try template.render(input: .object(["member": .string("--version")])) }
        #expect(refusal?.description.hasPrefix("{input.member} may not begin with \"-\"") == true, "\(String(describing: refusal))")
        #expect(throws: CommandTemplate.Error.self) { try CommandTemplate(["tool", "{input.a}.png"]).render(input: .object(["a": .string("-x")])) }
        // Nor behind a placeholder that came out empty (found in review).
        #expect(throws: CommandTemplate.Error.self) {
            try CommandTemplate(["tar", "-xf", "a.tar", "{input.dir}{input.member}"])
                .render(input: .object(["dir": .string(""), "member": .string("--to-command=id")]))
        }
        let ended = try CommandTemplate(["grep", "-e", "x", "--", "{input.file}"])
        #expect(try ended.render(input: .object(["file": .string("-weird name")])) == ["grep", "-e", "x", "--", "-weird name"])
        #expect(try CommandTemplate(["seek", "{input.offset}"]).render(input: .object(["offset": .int(-5)])) == ["seek", "-5"])
        #expect(try CommandTemplate(["tool", "--name={input.n}", "x{input.n}"]).render(input: .object(["n": .string("-a")]))
                == ["tool", "--name=-a", "x-a"])
    }

    @Test func inputContainingBracesIsNotExpandedAgain() throws {
        let template = try CommandTemplate(["{input.a}"])
        #expect(try template.render(input: .object(["a": .string("{input.b}"), "b": .string("no")])) == ["{input.b}"])
    }

    @Test func nestedKeysReachIntoObjects() throws {
        let template = try CommandTemplate(["run", "{input.camera.fov}x{input.camera.lens.mm}"])
        let input = try json(#"{"camera":{"fov":60,"lens":{"mm":35}}}"#)
        #expect(try template.render(input: input) == ["run", "60x35"])
        #expect(template.referencedKeys == ["camera.fov", "camera.lens.mm"])
    }

    @Test func scalarsRenderAsJSONWouldWriteThem() throws {
        let template = try CommandTemplate(["x", "{input.i}", "{input.d}", "{input.w}", "{input.t}", "{input.f}", "{input.s}"])
        let input: JSONValue = .object([
            "i": .int(-7), "d": .double(2.5), "w": .double(4.0), "t": .bool(true), "f": .bool(false), "s": .string(""),
        ])
        #expect(try template.render(input: input) == ["x", "-7", "2.5", "4", "true", "false", ""])
    }

    @Test func doubledBracesAroundAPlaceholderAreItsLiteralText() throws {
        let template = try CommandTemplate(["echo", "{{input.v}}", "a{{input.v}}b", "{input.v}"])
        #expect(try template.render(input: .object(["v": .int(1)])) == ["echo", "{input.v}", "a{input.v}b", "1"])
        #expect(template.referencedKeys == ["v"])
    }

    @Test func bracesThatAreNotInputPlaceholdersStayLiteral() throws {
        let template = try CommandTemplate(["sh-free", "${HOME}", "{job.id}", "{}", "{input}", "}{", #"{"size": {input.size}}"#])
        let argv = try template.render(input: .object(["size": .int(64)]))
        #expect(argv == ["sh-free", "${HOME}", "{job.id}", "{}", "{input}", "}{", #"{"size": 64}"#])
        #expect(template.referencedKeys == ["size"])
    }

    @Test func emptyArgumentsSurvive() throws {
        let template = try CommandTemplate(["prog", "", "--"])
        #expect(try template.render(input: .object([:])) == ["prog", "", "--"])
        #expect(template.referencedKeys.isEmpty)
    }

    @Test func missingOrNullValueFailsAtRender() throws {
        let template = try CommandTemplate(["x", "{input.a.b}"])
        for input in [#"{}"#, #"{"a":{}}"#, #"{"a":{"b":null}}"#, #"{"a":"flat"}"#] {
            #expect {
                try template.render(input: json(input))
            } throws: { error in
                (error as? CommandTemplate.Error)?.description.contains("{input.a.b}") == true
            }
        }
    }

    @Test func aNULInAValueIsRefusedRatherThanCuttingTheArgument() throws {
        let template = try CommandTemplate(["x", "--name={input.name}"])
        #expect {
            try template.render(input: .object(["name": .string("safe\u{0}--evil")]))
        } throws: { error in
            (error as? CommandTemplate.Error)?.description.contains("NUL") == true
        }
    }

    @Test func objectOrArrayValueFailsAtRender() throws {
        let template = try CommandTemplate(["x", "{input.a}"])
        #expect(throws: CommandTemplate.Error.self) { try template.render(input: json(#"{"a":{"b":1}}"#)) }
        #expect(throws: CommandTemplate.Error.self) { try template.render(input: json(#"{"a":[1]}"#)) }
    }

    @Test(arguments: [
        ["x", "{input."], ["x", "--a={input.a"], ["x", "{input.}"], ["x", "{input..a}"], ["x", "{input.a.}"],
        ["x", "{input.a b}"], ["x", "{input.a/b}"], ["x", "{input.$x}"], ["x", "{{input.a}"], ["x", "ok", "{input.{input.a}}"],
    ])
    func badInputPlaceholdersFailWhenParsed(argv: [String]) {
        #expect(throws: CommandTemplate.Error.self) { try CommandTemplate(argv) }
    }

    @Test func badPlaceholderErrorNamesTheArgument() {
        #expect {
            try CommandTemplate(["x", "--id={input.a b}"])
        } throws: { error in
            (error as? CommandTemplate.Error)?.description.contains("--id={input.a b}") == true
        }
    }

    @Test func keysMayUseLettersDigitsUnderscoreAndDash() throws {
        let template = try CommandTemplate(["x", "{input.a_1.b-2.Ünï}"])
        #expect(template.referencedKeys == ["a_1.b-2.Ünï"])
    }

    @Test func emptyCommandIsRefused() {
        #expect(throws: CommandTemplate.Error.self) { try CommandTemplate([]) }
        #expect(throws: CommandTemplate.Error.self) { try CommandTemplate(["", "x"]) }
    }

    @Test func referencedKeysListEveryPlaceholderInOrder() throws {
        let template = try CommandTemplate(["{input.prog}", "-a", "{input.x}/{input.y.z}", "{input.x}"])
        #expect(template.referencedKeys == ["prog", "x", "y.z", "x"])
    }

    @Test func placeholderMayBeTheExecutable() throws {
        let template = try CommandTemplate(["{input.prog}", "-v"])
        #expect(try template.render(input: .object(["prog": .string("/bin/echo")])) == ["/bin/echo", "-v"])
    }
}
