import Foundation
import HTTPTypes

/// RFC 9110's validators, conditional requests and single byte ranges, for downloads (a job's
/// outputs): enough for a client to resume a download with `Range` + `If-Range`, and to
/// revalidate a cached copy with `If-None-Match` / `If-Modified-Since`.
struct Download: Equatable {
    /// A strong entity tag (quoted).
    let etag: String
    /// Seconds since 1970, whole (HTTP dates have a one-second resolution); nil when unknown.
    let lastModified: Int?
    let size: Int

    enum Answer: Equatable {
        /// 304 Not Modified.
        /// 304 Not Modified; `gzip`: the tag that held was the gzip representation's (its 304 names it).
        case notModified(gzip: Bool = false)
        /// 200 with the whole content.
        case whole
        /// 206 Partial Content with these bytes.
        case partial(ClosedRange<Int>)
        /// 416 Range Not Satisfiable.
        case unsatisfiable
    }

    /// What to answer a GET or HEAD with these request headers.
    func answer(to headers: HTTPFields) -> Answer {
        // §13.2.2: If-None-Match first; If-Modified-Since only without it.
        if let tags = headers[.ifNoneMatch] {
            if Self.matches(tags, etag, weak: true) { return .notModified() }
            // The tag `CompressionMiddleware` gave the gzip representation (found by attacking
            // the build: revalidating with the tag the server sent never got a 304).
            if Self.matches(tags, gzipETag, weak: true) { return .notModified(gzip: true) }
        } else if let since = headers[.ifModifiedSince].flatMap(HTTPDate.parse), let lastModified, lastModified <= since {
            return .notModified()
        }
        guard let range = headers[.range] else { return .whole }
        // §13.1.5: a Range with an If-Range that no longer holds gets the whole (new) content.
        if let condition = headers[.ifRange] {
            let holds = condition.hasPrefix("\"") ? condition == etag
                : (lastModified.map { HTTPDate.format($0) == condition } ?? false)
            guard holds else { return .whole }
        }
        return ByteRange.parse(range, size: size)
    }

    /// The entity tag of the gzip-encoded representation, as `CompressionMiddleware` names it
    /// (RFC 9110 §8.8.3: another representation, another tag).
    var gzipETag: String { Self.gzipTag(etag) }

    static func gzipTag(_ tag: String) -> String { tag.hasSuffix("\"") ? String(tag.dropLast()) + "-gzip\"" : tag }

    /// `If-None-Match` holds `tag` (or is `*`); weak comparison ignores `W/`.
    static func matches(_ list: String, _ tag: String, weak: Bool) -> Bool {
        let bare = tag.hasPrefix("W/") ? String(tag.dropFirst(2)) : tag
        return list.split(separator: ",").contains { item in
            let candidate = item.trimmingCharacters(in: .whitespaces)
            if candidate == "*" { return true }
            let stripped = weak && candidate.hasPrefix("W/") ? String(candidate.dropFirst(2)) : candidate
            return stripped == bare
        }
    }

    /// The validator headers every answer carries.
    var headers: HTTPFields {
        var fields: HTTPFields = [.eTag: etag, .acceptRanges: "bytes"]
        if let lastModified { fields[.lastModified] = HTTPDate.format(lastModified) }
        return fields
    }
}

/// One byte range of a `Range: bytes=…` header.
enum ByteRange {
    /// `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX` against a representation of `size`
    /// bytes. A header that is not one well-formed byte range is ignored (the whole content, as
    /// §14.2 allows, several ranges included); a well-formed one that lies past the end is 416.
    static func parse(_ header: String, size: Int) -> Download.Answer {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.lowercased().hasPrefix("bytes="), !text.contains(",") else { return .whole }
        let spec = text.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func number(_ digits: Substring) -> Int? {
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
            return Int(digits) ?? Int.max   // more digits than an Int holds: past any end
        }
        if first.isEmpty {
            guard let suffix = number(last) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            return .partial(max(0, size - suffix)...(size - 1))
        }
        guard let start = number(first) else { return .whole }
        let end: Int
        if last.isEmpty {
            end = size - 1
        } else {
            guard let value = number(last), value >= start else { return .whole }
            end = min(value, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .partial(start...end)
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form a server sends (§5.6.7).
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func format(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }

    /// Seconds since 1970 of an IMF-fixdate; nil for anything else (the condition is then ignored).
    static func parse(_ text: String) -> Int? {
        let fields = text.split(separator: " ")
        guard fields.count == 6, fields[5] == "GMT", days.contains(String(fields[0].dropLast())),
              let day = Int32(fields[1]), let month = months.firstIndex(of: String(fields[2])), let year = Int32(fields[3]) else { return nil }
        let clock = fields[4].split(separator: ":").compactMap { Int32($0) }
        guard clock.count == 3 else { return nil }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = Int32(month)
        parts.tm_mday = day
        parts.tm_hour = clock[0]
        parts.tm_min = clock[1]
        parts.tm_sec = clock[2]
        let seconds = timegm(&parts)
        return seconds == -1 ? nil : Int(seconds)
    }
}
