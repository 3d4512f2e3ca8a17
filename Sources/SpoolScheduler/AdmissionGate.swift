import Synchronization

/// Whether the server still takes new jobs. Closed at the start of a graceful shutdown, so
/// submits get `503` while running jobs finish; read on every submit, so it is lock-free.
public final class AdmissionGate: Sendable {
    private let closed = Atomic<Bool>(false)
    public init() {}
    public var isOpen: Bool { !closed.load(ordering: .acquiring) }
    public func close() { closed.store(true, ordering: .releasing) }
}
