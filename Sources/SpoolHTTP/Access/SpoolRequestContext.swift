import Hummingbird
import SpoolCore

/// The request context of every route: Hummingbird's basics plus who is asking.
public struct SpoolRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AccessMiddleware`: a token's tenant, or `Principal.anonymous` when
    /// authentication is off.
    public var principal: Principal = .anonymous
    /// Authenticated by the dashboard's session cookie rather than a bearer token (unsafe
    /// methods are then checked against `Origin`).
    public var viaCookie = false

    public init(source: Source) {
        coreContext = .init(source: source)
    }
}
