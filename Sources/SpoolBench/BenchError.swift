/// A benchmark step that could not be carried out. The message names what was being waited for
/// or which request failed, so a report row can say why it is empty.
struct BenchError: Error, CustomStringConvertible, Sendable {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
