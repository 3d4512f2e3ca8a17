import Testing
@testable import SpoolApp

/// `gpus`: auto, none, or a list of distinct devices (indices, `GPU-…` UUIDs, `MIG-…` ids), one slot each. A list with a hole
/// or a device named twice stops startup with one line (found by attacking the build:
/// `--gpus 0,,2` was taken as `0,2`).
@Suite struct GPUConfigurationTests {
    @Test func aListOfDistinctIndicesIsTakenAndAnythingElseStopsStartup() throws {
        var configuration = ServerConfiguration()
        for (text, selection) in [("auto", ServerConfiguration.GPUSelection.auto), ("none", .none), ("0", .devices(["0"])),
                                  ("0,2", .devices(["0", "2"])), (" 1 , 3 ", .devices(["1", "3"])),
                                  // By UUID, or a MIG device (found by attacking the build: README named them, the parser refused them).
                                  ("GPU-5e8c2a1d-3f4b-11ee-9c1d-0242ac120002", .devices(["GPU-5e8c2a1d-3f4b-11ee-9c1d-0242ac120002"])),
                                  ("0, MIG-GPU-5e8c2a1d/1/0", .devices(["0", "MIG-GPU-5e8c2a1d/1/0"])),
                                  ("MIG-4b2d2f36-9f5e-5f8c-a2c1-9b3b6f5c1e07", .devices(["MIG-4b2d2f36-9f5e-5f8c-a2c1-9b3b6f5c1e07"]))] {
            try configuration.apply(text: text, to: "gpus", from: "--gpus")
            #expect(configuration.gpus == selection, "\(text)")
        }
        // Blank too (found by attacking the build: `SPOOL_GPUS=` from a blank template variable
        // meant none, and on a GPU machine every job saw every GPU).
        for bad in ["", " ", "0,,2", "0,", ",1", "0,0", "1,01", "a", "-1", "½", "٣", "0;1", "GPU-", "GPU-a b", "GPU-x,gpu-X", "uuid-1", "MIG-é"] {
            do {
                try configuration.apply(text: bad, to: "gpus", from: "--gpus")
                Issue.record("\(bad) was taken as \(configuration.gpus)")
            } catch {
                #expect(error.description.hasPrefix("--gpus: gpus must be"), "\(error.description)")
            }
        }
    }
}
