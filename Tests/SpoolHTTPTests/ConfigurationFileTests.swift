import Foundation
import SpoolCore
import SpoolTestSupport
import Testing
@testable import SpoolApp

/// A config file that is not what it should be stops the start with one line that says where
/// and why (found by attacking the build: "The given data was not valid JSON." for a missing
/// comma, a raw NSError for a directory, and a key given twice passing with one of its values).
@Suite struct ConfigurationFileTests {
    let directory: ScratchDirectory
    init() throws { directory = try ScratchDirectory("spool-config") }

    func load(_ text: String) -> String? {
        let path = directory.path + "/spool.json"
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
        var configuration = ServerConfiguration()
        do {
            try configuration.load(file: path)
            return nil
        } catch {
            return error.description.replacingOccurrences(of: path, with: "spool.json")
        }
    }

    /// A `SPOOL_*` variable that is no setting is named at start, with the one it likely meant
    /// (found by attacking the build: `SPOOL_RETENTION_DAY=1` was ignored without a word).
    @Test func unknownVariablesAreNamedWithTheSettingTheyLikelyMeant() {
        let environment = ["SPOOL_RETENTION_DAY": "1", "SPOOL_SLOTS": "2", "SPOOL_URL": "http://x", "SPOOL_JOB_ID": "job_x",
                           "SPOOL_KILLGRACE_S": "3", "SPOOL_SOMETHING_ELSE_ENTIRELY": "1", "PATH": "/bin", "SPOOL_": ""]
        let unknown = ServerConfiguration.unknownVariables(in: environment)
        #expect(unknown.map(\.name) == ["SPOOL_", "SPOOL_KILLGRACE_S", "SPOOL_RETENTION_DAY", "SPOOL_SOMETHING_ELSE_ENTIRELY"])
        #expect(unknown.map(\.meant) == [nil, "SPOOL_KILL_GRACE_S", "SPOOL_RETENTION_DAYS", nil])
        #expect(ServerConfiguration.editDistance("", "ab") == 2 && ServerConfiguration.editDistance("kitten", "sitting") == 3)
    }

    @Test func aFileThatIsNotJSONSaysWhere() {
        #expect(load("{\n  \"slots\": 2\n  \"port\": 9000\n}") == "spool.json is not valid JSON: expected ',' or '}' at line 3, column 3")
        #expect(load("") == "spool.json is not valid JSON: unexpected end of input at line 1, column 1")
    }

    @Test func aKeyGivenTwiceIsAnError() {
        #expect(load(#"{"slots": 3, "slots": 2}"#) == #"spool.json is not valid JSON: the key "slots" appears twice in one object at line 1, column 14"#)
        let types = #"{"job_types": {"a": {"command": ["/bin/true"]}, "a": {"command": ["/bin/false"]}}}"#
        #expect(load(types)?.contains(#"the key "a" appears twice"#) == true)
        #expect(load(#"{"slots": 3, "port": 9000}"#) == nil)
    }

    /// A config from a pipe (`--config <(envsubst < tmpl.json)`, `/dev/stdin`) is read, and its
    /// relative paths are read from the current directory, not the pipe's folder (found by
    /// attacking the build: "You don't have permission", and tls_cert under /dev).
    @Test func aConfigFromAPipeIsRead() async throws {
        let fifo = directory.path + "/config.fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let writer = Thread {
            let descriptor = open(fifo, O_WRONLY)
            let text = Array(#"{"slots": 3, "tls_cert": "certs/server.pem"}"#.utf8)
            _ = text.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            close(descriptor)
        }
        writer.start()
        var configuration = ServerConfiguration()
        try configuration.load(file: fifo)
        #expect(configuration.slots == 3)
        #expect(configuration.tlsCertificate == FileManager.default.currentDirectoryPath + "/certs/server.pem", "\(String(describing: configuration.tlsCertificate))")
        // A file given by its descriptor (`--config /dev/stdin < t.json` is one): a regular file,
        // but its paths are not under /dev (found in review).
        let file = directory.path + "/by-descriptor.json"
        try #"{"tls_cert": "certs/server.pem"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        defer { close(descriptor) }
        var byDescriptor = ServerConfiguration()
        try byDescriptor.load(file: "/dev/fd/\(descriptor)")
        #expect(byDescriptor.tlsCertificate == FileManager.default.currentDirectoryPath + "/certs/server.pem")
    }

    @Test func aDirectoryIsNotAConfigFile() {
        var configuration = ServerConfiguration()
        do {
            try configuration.load(file: directory.path)
            Issue.record("a directory was read as a config file")
        } catch {
            #expect(error.description == "the config file \(directory.path) is a directory")
        }
    }
}
