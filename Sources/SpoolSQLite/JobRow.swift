import GRDB
import Synchronization

/// A `jobs` row read by column name, at the cost of a dictionary lookup.
///
/// GRDB finds a column by name with a case-insensitive scan of all the row's columns, each read;
/// a job has 36 columns, all read, and in a profile of tiny jobs those scans were a tenth of the
/// server's CPU. Every job row is a `SELECT *` or a `RETURNING *` of `jobs` — the same columns in
/// the same order, some with more after them (a listing's `listed_bytes`) — so their positions are
/// found once, from the first row of each width.
struct JobRow {
    private let row: Row
    private let positions: [String: Int]

    private static let layouts = Mutex<[Int: [String: Int]]>([:])

    init(_ row: Row) {
        self.row = row
        if let known = Self.layouts.withLock({ $0[row.count] }) {
            positions = known
        } else {
            var found: [String: Int] = [:]
            for (index, (name, _)) in row.enumerated() where found[name.lowercased()] == nil { found[name.lowercased()] = index }
            positions = found
            Self.layouts.withLock { $0[row.count] = found }
        }
    }

    /// The value of column `name` (lower case); a name the layout lacks goes to GRDB's lookup.
    subscript<Value: DatabaseValueConvertible>(_ name: String) -> Value {
        if let index = positions[name] { return row[index] }
        return row[name]
    }
}
