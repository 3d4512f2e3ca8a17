import Foundation

/// Runs `body` — a HummingbirdTesting `Application.test` — and then gives SIGTERM and SIGINT
/// their default action back. HummingbirdTesting runs each application in a `ServiceGroup` that
/// listens for both through a Dispatch signal source, and the handler that source installs stays
/// after the group has ended: from the first such test on, the test process let both signals
/// pass unnoticed, and `timeout` (or CI) could not stop a run that hung.
public func restoringTerminationSignals<T>(_ body: () async throws -> T) async rethrows -> T {
    defer {
        signal(SIGTERM, SIG_DFL)
        signal(SIGINT, SIG_DFL)
    }
    return try await body()
}
