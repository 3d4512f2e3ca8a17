@testable import SpoolApp
import Testing

struct CodePagesTests {
    @Test func onlyCleanExecutableFileMappingsAreTrimmed() {
        let smaps = """
            55d0c0000000-55d0c0400000 r-xp 00002000 08:01 123 /usr/bin/spool
            Rss:                1024 kB
            Private_Dirty:         0 kB
            55d0c0400000-55d0c0500000 r--p 00402000 08:01 123 /usr/bin/spool
            Private_Dirty:         8 kB
            7f0000000000-7f0000100000 r-xp 00001000 08:01 456 /usr/lib/libpatched.so
            Private_Dirty:         4 kB
            7f0000200000-7f0000300000 rw-p 00000000 00:00 0
            Private_Dirty:        16 kB
            7f0000400000-7f0000500000 r-xp 00000000 00:00 0 [vdso]
            Private_Dirty:         0 kB
            7f0000600000-7f0000700000 r-xp 00003000 08:01 789 /usr/lib/libswiftCore.so
            Private_Dirty:         0 kB
            """
        #expect(CodePages.codeMappings(in: smaps) == [
            .init(start: 0x55d0_c000_0000, end: 0x55d0_c040_0000),
            .init(start: 0x7f00_0060_0000, end: 0x7f00_0070_0000),
        ])
    }

    // `trim` itself runs in every `spool serve` the end-to-end tests start (once it listens),
    // not here: unmapping code under a test process with hundreds of tests in flight changes
    // their timing for the rest of the run and proves no more than those servers do.
}
