import Hummingbird
import NIOCore

/// The v1 API as an OpenAPI 3.1 document, served at `GET /openapi.json`. The document is one
/// file, `Resources/openapi.json`, embedded in the binary at build time (nothing to deploy
/// beside it). Kept by hand next to the routes it describes: `OpenAPITests` checks it lists
/// exactly the router's paths and methods, and `Tests/contract/run.sh` runs schemathesis
/// against a live server with it.
extension SpoolAPI {
    static let openAPIDocument = ByteBuffer(bytes: PackageResources.openapi_json)

    @Sendable func openAPI(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: Self.openAPIDocument))
    }
}
