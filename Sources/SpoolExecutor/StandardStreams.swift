#if canImport(Glibc)
import Glibc
#endif

/// Writes to stdout and stderr that never stop the process: `FileHandle`'s `write(_:)` traps on
/// any error (found by attacking the build: `spool logs ID | head -1`, `spool serve | true` and
/// `> /dev/full` ended in a fatal error and a backtrace — the server after claiming jobs).
public enum StandardStreams {
    /// Writes all of `bytes` to `descriptor`; the error (`errno`) that stopped it, or nil.
    @discardableResult
    public static func write(_ bytes: some Collection<UInt8>, to descriptor: Int32) -> Int32? {
        var rest = Array(bytes)[...]
        while !rest.isEmpty {
            let written = rest.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {   // a non-blocking descriptor someone handed us: wait for room
                    var poller = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, 1000)
                    continue
                }
                return errno
            }
            rest = rest.dropFirst(written)
        }
        return nil
    }

    /// To stderr; what it cannot take is lost (there is nowhere else to say so).
    public static func error(_ text: String) { write(Array(text.utf8), to: STDERR_FILENO) }

    /// To stdout, for a command whose output is the point: a reader that went away (EPIPE, as
    /// `| head` does) ends the command quietly, with success; anything else (a full disk) ends
    /// it with one line on stderr and status 1.
    public static func output(_ bytes: some Collection<UInt8>) {
        guard let failure = write(bytes, to: STDOUT_FILENO) else { return }
        exitForOutput(failure)
    }

    public static func output(_ text: String) { output(Array(text.utf8)) }

    /// Flushes `print`'s buffer and checks that everything printed was written (`print` says
    /// nothing of a full disk): called as a command ends.
    public static func finishOutput() {
        // `print` writes through C's stdout stream; flushing every stream flushes it.
        if fflush(nil) != 0 { exitForOutput(errno == 0 ? EIO : errno) }
    }

    private static func exitForOutput(_ failure: Int32) -> Never {
        if failure == EPIPE { exit(0) }
        error("spool: cannot write the output: \(String(cString: strerror(failure)))\n")
        exit(1)
    }

    /// Makes sure descriptors 0, 1 and 2 are open (on /dev/null when they were closed), so that a
    /// file opened later never takes one of their numbers and gets the process's printing.
    public static func reserve() {
        for descriptor: Int32 in 0...2 where fcntl(descriptor, F_GETFD) < 0 {
            let null = open("/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY)
            if null >= 0, null != descriptor {
                dup2(null, descriptor)
                close(null)
            }
        }
    }
}
