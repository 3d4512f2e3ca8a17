import Testing
@testable import SpoolApp

/// `gpus`: auto, none, or a list of distinct device indices, one slot each. A list with a hole
/// or a device named twice stops startup with one line (found by attacking the build:
/// `--gpus 0,,2` was taken as `0,2`).
@Suite struct GPUConfigurationTests {
    @Test func aListOfDistinctIndicesIsTakenAndAnythingElseStopsStartup() throws {
        var configuration = ServerConfiguration()
        for (text, selection) in [("auto", ServerConfiguration.GPUSelection.auto), ("none", .none), ("0", .devices(["0"])),
                                  ("0,2", .devices(["0", "2"])), (" 1 , 3 ", .devices(["1", "3"]))] {
            try configuration.apply(text: text, to: "gpus", from: "--gpus")
            #expect(configuration.gpus == selection, "\(text)")
        }
        for bad in ["0,,2", "0,", ",1", "0,0", "1,01", "a", "-1", "½", "٣", "0;1"] {
            do {
                try configuration.apply(text: bad, to: "gpus", from: "--gpus")
                Issue.record("\(bad) was taken as \(configuration.gpus)")
            } catch {
                #expect(error.description.hasPrefix("--gpus: gpus must be"), "\(error.description)")
            }
        }
    }
}
