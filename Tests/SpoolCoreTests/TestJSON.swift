// TestJSON: JSON text → JSONValue for test fixtures, through the same Codable path the
// server decodes request bodies with.

import Foundation
import SpoolCore

func json(_ text: String) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}
